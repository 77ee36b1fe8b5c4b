"""Dagster entry point: `dagster job execute -f examples/quickstart/definitions.py -j bronze_to_silver`."""

from pathlib import Path

import odibi_dagster

defs = odibi_dagster.load_definitions(Path(__file__).parent / "pipeline.yaml")
