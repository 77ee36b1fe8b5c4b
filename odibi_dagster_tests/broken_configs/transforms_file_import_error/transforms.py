"""Transform functions of this broken-config case; importing it fails."""

from odibi_dagster import transform

THRESHOLD = DEFAULT_THRESHOLD * 2


@transform
def odibi_bc_mark_big_orders(context, source: str):
    df = context.get(source).copy()
    df["big"] = df["amount"] > THRESHOLD
    return df
