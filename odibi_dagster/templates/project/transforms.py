"""Python steps; this file is imported automatically (it sits beside project.yaml)."""

from odibi_dagster import transform


@transform
def add_share(context, column: str):
    """Add `<column>_share`: each row's fraction of the column total."""
    df = context.get("__result__").copy()
    df[f"{column}_share"] = df[column] / df[column].sum()
    return df
