"""Transform functions of this broken-config case (names unique across the tests)."""

from odibi_dagster import transform


@transform
def odibi_bc_flag_large_orders(context, source: str, threshold: float):
    df = context.get(source).copy()
    df["large"] = df["amount"] > threshold
    return df
