"""Run the emulators until SIGTERM/SIGINT.

    python -m odibi_dagster_tests.emulators up --dir DIR --account NAME=KEY [--account NAME=]
        [--secret NAME=VALUE] [--container ACCOUNT/NAME] --env-file FILE

Writes FILE as ``export VAR=value`` lines (source it), prints "emulators ready" and blocks.
An empty key (``NAME=``) is generated and exported as ``AZURITE_KEY_<NAME>``.
"""

from __future__ import annotations

import argparse
import base64
import secrets
import shlex
import signal
import sys
import threading
from pathlib import Path

from .azurite import start_azurite
from .keyvault import start_keyvault


def _pair(text: str, sep: str = "=") -> tuple[str, str]:
    name, found, value = text.partition(sep)
    if not found or not name:
        raise argparse.ArgumentTypeError(f"expected NAME{sep}VALUE, got {text!r}")
    return name, value


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, start both services, write the env file and wait."""
    parser = argparse.ArgumentParser(prog="python -m odibi_dagster_tests.emulators")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start Azurite + the Key Vault stand-in")
    up.add_argument("--dir", type=Path, required=True, help="working directory (data, certs)")
    up.add_argument("--account", type=_pair, action="append", required=True, metavar="NAME=KEY")
    up.add_argument("--secret", type=_pair, action="append", default=[], metavar="NAME=VALUE")
    up.add_argument(
        "--container",
        type=lambda t: _pair(t, "/"),
        action="append",
        default=[],
        metavar="ACCOUNT/NAME",
    )
    up.add_argument("--env-file", type=Path, required=True)
    args = parser.parse_args(argv)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    env: dict[str, str] = {}
    accounts: dict[str, str] = {}
    for name, key in args.account:
        if not key:
            key = base64.b64encode(secrets.token_bytes(64)).decode("ascii")
            env[f"AZURITE_KEY_{name.upper()}"] = key
        accounts[name] = key

    args.dir.mkdir(parents=True, exist_ok=True)
    azurite = start_azurite(args.dir, accounts)
    try:
        kv = start_keyvault(args.dir)
        try:
            for account, container in args.container:
                azurite.create_container(account, container)
            for name, value in args.secret:
                kv.set_secret(name, value)
            env.update(kv.env())
            env["ODIBI_KEY_VAULT_URL"] = kv.url
            env["AZURITE_BLOB_PORT"] = str(azurite.port)
            for name in accounts:
                env[f"AZURITE_BLOB_ENDPOINT_{name.upper()}"] = azurite.blob_endpoint(name)
            lines = [f"export {k}={shlex.quote(v)}\n" for k, v in sorted(env.items())]
            args.env_file.write_text("".join(lines), encoding="utf-8")
            print("emulators ready", flush=True)
            while not stop.wait(0.5):
                pass
        finally:
            kv.stop()
    finally:
        azurite.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
