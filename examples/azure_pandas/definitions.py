"""Dagster entry point. Start the emulators first (see README.md in this folder)."""

from pathlib import Path

import odibi_dagster

defs = odibi_dagster.load_definitions(Path(__file__).parent)
