"""The documentation names what the code accepts."""

from __future__ import annotations

import re

from pydantic import BaseModel

from odibi_dagster.config import models, simulation
from odibi_dagster.vocabulary import FORMATS, WRITE_MODES
from odibi_dagster_tests.support.paths import REPO


def all_models() -> list[type[BaseModel]]:
    return [
        m
        for module, base in ((models, models.StrictModel), (simulation, simulation.StrictModel))
        for m in vars(module).values()
        if isinstance(m, type) and issubclass(m, base) and m is not base
    ]


def test_every_yaml_key_is_documented_in_the_configuration_reference():
    doc = (REPO / "docs" / "configuration.md").read_text()
    missing = [
        f"{m.__name__}.{f.alias or name}"
        for m in all_models()
        for name, f in m.model_fields.items()
        if f"`{f.alias or name}`" not in doc
    ]
    assert missing == []


def test_every_format_and_write_mode_is_documented():
    doc = (REPO / "docs" / "configuration.md").read_text()
    for word in (*FORMATS, *WRITE_MODES):
        assert f"`{word}`" in doc, word


def test_the_readme_make_targets_exist():
    readme = (REPO / "README.md").read_text()
    makefile = (REPO / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z-]+):", makefile, re.M))
    used = set(re.findall(r"make ([a-z-]+)", readme))
    assert used and used <= targets, used - targets
    assert "make test" in (REPO / ".ci" / "run").read_text()


ORIGINS = {"Odibi v2", "Odibi v3", "odibi_dagster"}


def _key_tables(doc: str) -> list[list[str]]:
    """The reference tables of configuration.md whose rows are YAML keys."""
    tables: list[list[str]] = []
    lines = doc.splitlines()
    for i, line in enumerate(lines[:-1]):
        head = line.split("|")[1].strip() if line.startswith("| ") else ""
        if head in ("key", "option", "`metadata` key") and lines[i + 1].startswith("|---"):
            if "why it has no effect here" in line:
                continue  # the generated list of keys accepted, not applied (all Odibi v3)
            rows = [line]
            for row in lines[i + 2 :]:
                if not row.startswith("| "):
                    break
                rows.append(row)
            tables.append(rows)
    return tables


def test_every_key_in_the_configuration_reference_says_its_origin():
    doc = (REPO / "docs" / "configuration.md").read_text()
    tables = _key_tables(doc)
    assert len(tables) >= 17
    for rows in tables:
        assert rows[0].rstrip().endswith("| origin |"), rows[0]
        for row in rows[1:]:
            origin = row.rstrip().rstrip("|").rsplit("|", 1)[1].strip()
            assert origin in ORIGINS, row


def test_the_accepted_not_applied_list_is_the_codes():
    from odibi_dagster.config.notes_doc import END, START, render

    doc = (REPO / "docs" / "configuration.md").read_text()
    section = doc.split(START, 1)[1].split(END, 1)[0]
    assert section.strip() == render().strip(), (
        "docs/configuration.md is out of date: run python -m odibi_dagster.config.notes_doc"
    )
