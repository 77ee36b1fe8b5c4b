"""Key Vault traffic of a 20-node run over three ADLS connections sharing two secrets.

Starts the local emulators (Azurite with two accounts, the HTTPS Key Vault stand-in),
then runs the same 20-node pandas chain with the in_process and the multiprocess
executor, and counts the requests the vault served. Beside them, for scale: the count
a lookup per read or write would make (computed, not run).

    .venv/bin/python benchmarks/keyvault_requests.py
"""

from __future__ import annotations

import base64
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from odibi_dagster_tests.emulators.azurite import start_azurite  # noqa: E402
from odibi_dagster_tests.emulators.keyvault import start_keyvault  # noqa: E402

RAW, CUR = "odibiraw", "odibicurated"
NODES = 20


def project(root: Path, vault_url: str, endpoints: dict[str, str], executor: str) -> Path:
    def conn(account: str, container: str, secret: str, prefix: str) -> dict[str, str]:
        return {
            "type": "azure_adls",
            "account": account,
            "container": container,
            "path_prefix": prefix,
            "key_vault_name": "bench",
            "key_vault_url": vault_url,
            "secret_name": secret,
            "blob_endpoint": endpoints[account],
        }

    nodes: list[dict] = [
        {"name": "n0", "read": {"connection": "raw", "path": "in.csv", "format": "csv"}}
    ]
    for i in range(1, NODES):
        nodes.append(
            {
                "name": f"n{i}",
                "depends_on": [f"n{i - 1}"],
                "transform": {"steps": [f"SELECT id, amount + 1 AS amount FROM n{i - 1}"]},
                "write": {
                    "connection": "silver" if i % 2 else "gold",
                    "path": f"n{i}.parquet",
                    "format": "parquet",
                },
            }
        )
    doc = {
        "project": "kv_bench",
        "executor": executor,
        "connections": {
            "raw": conn(RAW, "landing", "raw-key", ""),
            "silver": conn(CUR, "lake", "curated-key", "silver"),
            "gold": conn(CUR, "lake", "curated-key", "gold"),
        },
        "pipelines": [{"pipeline": "chain", "nodes": nodes}],
    }
    path = root / f"project_{executor}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def run(path: Path, home: Path) -> float:
    import subprocess

    t0 = time.perf_counter()
    result = subprocess.run(
        [str(Path(sys.executable).parent / "odibi-dagster"), "run", str(path)],
        env={**os.environ, "DAGSTER_HOME": str(home)},
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise SystemExit(result.stdout + result.stderr)
    return time.perf_counter() - t0


def main() -> None:
    keys = {a: base64.b64encode(secrets.token_bytes(64)).decode() for a in (RAW, CUR)}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        azurite = start_azurite(work / "azurite", keys)
        vault = start_keyvault(work / "vault")
        os.environ.update(vault.env())
        try:
            vault.set_secret("raw-key", keys[RAW])
            vault.set_secret("curated-key", keys[CUR])
            azurite.create_container(RAW, "landing")
            azurite.create_container(CUR, "lake")
            azurite.upload_blob(
                RAW,
                "landing",
                "in.csv",
                ("id,amount\n" + "".join(f"{i},{i % 97}\n" for i in range(1000))).encode(),
            )
            endpoints = {a: azurite.blob_endpoint(a) for a in (RAW, CUR)}
            home = work / "home"
            home.mkdir()
            (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
            print(f"{NODES}-node chain, 3 connections (raw, silver, gold), 2 secrets")
            print(f"{'executor':<14}{'secret GETs':>12}{'challenges':>12}{'tokens':>8}{'time':>9}")
            for executor in ("in_process", "multiprocess"):
                path = project(work, vault.url, endpoints, executor)
                vault.reset_counts()
                seconds = run(path, home)
                challenges = sum(1 for r in vault.requests if r[2] == 401)
                print(
                    f"{executor:<14}{vault.secret_gets:>12}{challenges:>12}"
                    f"{vault.token_requests:>8}{seconds:>8.1f}s"
                )
            io_ops = 1 + (NODES - 1)  # one read, and one write per computed node
            print(f"one fetch per read/write (no cache): {io_ops} secret GETs")
        finally:
            vault.stop()
            azurite.stop()


if __name__ == "__main__":
    main()
