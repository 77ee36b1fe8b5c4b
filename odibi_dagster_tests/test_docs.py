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
