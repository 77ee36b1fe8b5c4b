"""The venv's console scripts (odibi-dagster, dagster, dg), run in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(extra)
    return env


def run_cli(
    *args: str | os.PathLike[str], cwd: Path | None = None, timeout: float = 300, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run a console script of the venv (odibi-dagster, dagster, dg) and capture its output."""
    cmd = [str(BIN / str(args[0])), *map(str, args[1:])]
    return subprocess.run(
        cmd,
        cwd=cwd,
        env=cli_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
