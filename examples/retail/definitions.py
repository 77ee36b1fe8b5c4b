"""Dagster entry point: `dagster job execute -f examples/retail/definitions.py -j ingest`."""

from pathlib import Path

import odibi_dagster

defs = odibi_dagster.load_definitions(Path(__file__).parent)
