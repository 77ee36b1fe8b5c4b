"""Run this example against local stand-ins for Azure, then stop them.

    python examples/azure_pandas/run_with_emulators.py          # run the pipeline
    python examples/azure_pandas/run_with_emulators.py --ui     # ...then serve the web UI

Starts Azurite (storage accounts ``odibiraw`` and ``odibicurated``, each with a fresh
random key) and an HTTPS Key Vault with a managed-identity endpoint, so the real
``DefaultAzureCredential`` and ``SecretClient`` fetch the raw account's key. Uploads
``data/`` to the raw account, runs ``odibi-dagster run`` on this project with the
environment the emulators need, and lists what landed in the curated account.
Azurite comes from npm (``make services`` installs it).
"""

from __future__ import annotations

import argparse
import base64
import os
import secrets
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO))

from odibi_dagster_tests.emulators.azurite import start_azurite  # noqa: E402
from odibi_dagster_tests.emulators.keyvault import start_keyvault  # noqa: E402

RAW, CURATED = "odibiraw", "odibicurated"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ui", action="store_true", help="serve the web UI after the run")
    args = parser.parse_args()
    # a TERM (not only Ctrl-C) still runs the clean-up below: the emulators are stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    bin_dir = Path(sys.executable).parent
    keys = {a: base64.b64encode(secrets.token_bytes(64)).decode() for a in (RAW, CURATED)}
    with tempfile.TemporaryDirectory(prefix="odibi-azure-") as tmp:
        work = Path(tmp)
        azurite = start_azurite(work / "azurite", keys)
        vault = start_keyvault(work / "vault")
        try:
            vault.set_secret("odibiraw-key", keys[RAW])
            azurite.create_container(RAW, "landing")
            azurite.create_container(CURATED, "lake")
            for f in sorted((HERE / "data").iterdir()):
                azurite.upload_blob(RAW, "landing", f"retail/{f.name}", f.read_bytes())
            env = {
                **os.environ,
                **vault.env(),
                "ODIBI_KEY_VAULT_URL": vault.url,
                "AZURITE_BLOB_ENDPOINT_ODIBIRAW": azurite.blob_endpoint(RAW),
                "AZURITE_BLOB_ENDPOINT_ODIBICURATED": azurite.blob_endpoint(CURATED),
                # auth_mode direct_key: the key arrives in an environment variable
                "AZURITE_KEY_ODIBICURATED": keys[CURATED],
                "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            }
            print(f"Azurite on {azurite.blob_endpoint(RAW)[: -len(RAW)]}, Key Vault on {vault.url}")
            run = subprocess.run([str(bin_dir / "odibi-dagster"), "run", str(HERE)], env=env)
            print(f"\nin account {CURATED}, container lake:")
            for name in azurite.list_blobs(CURATED, "lake"):
                print(f"  {name}")
            print(f"Key Vault: {vault.secret_gets} secret read(s), {vault.token_requests} token(s)")
            if args.ui and run.returncode == 0:
                home = work / "dagster_home"
                home.mkdir()
                (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
                print("web UI on http://127.0.0.1:3000 (Ctrl-C stops it and the emulators)")
                ui = subprocess.Popen(
                    [str(bin_dir / "dagster"), "dev", "-f", str(HERE / "definitions.py")],
                    env={**env, "DAGSTER_HOME": str(home)},
                    # answer the SIGINT sent below even when started where SIGINT is ignored
                    preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
                )
                try:
                    ui.wait()
                except (KeyboardInterrupt, SystemExit):
                    # dagster dev stops its webserver, daemon and code server on SIGINT
                    ui.send_signal(signal.SIGINT)
                    try:
                        ui.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        ui.kill()
            return run.returncode
        finally:
            vault.stop()
            azurite.stop()


if __name__ == "__main__":
    sys.exit(main())
