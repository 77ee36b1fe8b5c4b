"""The one table of connection kinds: YAML ``type:`` -> the resource class that serves it.

The YAML model of each kind, its JSON Schema, the ``file:line`` checks of its fields and
the resource a compiled project gets all follow from the class listed here. Adding a
kind (S3, say) is one module with a :class:`ConnectionResource` subclass and one line
below (see docs/architecture.md).
"""

from __future__ import annotations

from odibi_dagster.resources.azure_adls import AzureADLS
from odibi_dagster.resources.connection import ConnectionResource
from odibi_dagster.resources.http import HttpConnection
from odibi_dagster.resources.local import LocalStorage

CONNECTION_KINDS: dict[str, type[ConnectionResource]] = {
    cls.yaml_type: cls for cls in (LocalStorage, AzureADLS, HttpConnection)
}
