"""Python steps; this file is imported automatically (it sits beside project.yaml)."""

import pandas as pd

from odibi_dagster import StepContext, transform


@transform
def add_share(context: StepContext, column: str) -> pd.DataFrame:
    """Add `<column>_share`: each row's fraction of the column total."""
    df = context.get("__result__").copy()
    df[f"{column}_share"] = df[column] / df[column].sum()
    return df
