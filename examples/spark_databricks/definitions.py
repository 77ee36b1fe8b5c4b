"""Dagster entry point: `dagster job execute -f definitions.py -j orders` (see README.md)."""

from pathlib import Path

import odibi_dagster

defs = odibi_dagster.load_definitions(Path(__file__).parent)
