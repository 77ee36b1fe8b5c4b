"""Transform functions of this broken-config case (names unique across the tests)."""

from odibi_dagster import transform


@transform
def odibi_bc_add_order_margin(context, source: str, rate: float = 0.2):
    df = context.get(source).copy()
    df["margin"] = df["amount"] * rate
    return df
