"""Where the repository, its examples and the Odibi reference configs are; writable copies."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
REFERENCE = REPO.parent / "shared" / "odibi_reference"


def reference_dir() -> Path:
    """The Odibi reference configs (shipped beside the repository, read-only)."""
    env = os.environ.get("ODIBI_REFERENCE_DIR")
    path = Path(env) if env else REFERENCE
    if not path.is_dir():
        pytest.skip(f"Odibi reference configs not found at {path} (set ODIBI_REFERENCE_DIR)")
    return path


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(
        src,
        dst,
        ignore=shutil.ignore_patterns("__pycache__", "outputs", "output", "silver", "gold"),
    )
    for p in dst.rglob("*"):
        p.chmod(p.stat().st_mode | 0o200)
    dst.chmod(dst.stat().st_mode | 0o200)
    return dst
