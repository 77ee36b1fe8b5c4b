"""odibi_dagster: run Odibi YAML pipelines as Dagster assets.

import odibi_dagster
defs = odibi_dagster.load_definitions("project.yaml")
"""

from odibi_dagster.compile import build_definitions, load_definitions
from odibi_dagster.components import OdibiProject
from odibi_dagster.config.loader import LoadedProject, load_project
from odibi_dagster.errors import OdibiConfigError, OdibiConnectionError, OdibiRunError
from odibi_dagster.io_managers.pandas import PandasIOManager
from odibi_dagster.io_managers.spark import SparkIOManager
from odibi_dagster.resources.azure_adls import AzureADLS
from odibi_dagster.resources.local import LocalStorage
from odibi_dagster.resources.spark import SparkSessionResource
from odibi_dagster.transforms import StepContext, transform
from odibi_dagster.translator import OdibiNode, OdibiTranslator

__version__ = "0.1.0"

__all__ = [
    "AzureADLS",
    "LoadedProject",
    "LocalStorage",
    "OdibiConfigError",
    "OdibiConnectionError",
    "OdibiNode",
    "OdibiProject",
    "OdibiRunError",
    "OdibiTranslator",
    "PandasIOManager",
    "SparkIOManager",
    "SparkSessionResource",
    "StepContext",
    "build_definitions",
    "load_definitions",
    "load_project",
    "transform",
]
