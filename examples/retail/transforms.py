"""Python steps of the retail example. Imported automatically: it sits beside project.yaml."""

import pandas as pd

from odibi_dagster import transform


@transform
def normalise_country(context, source: str, default: str):
    """Upper-case country codes; fill missing ones with ``default``."""
    df = context.get(source).copy()
    df["country"] = df["country"].fillna(default).str.strip().str.upper()
    return df


@transform
def top_spenders(context, orders: str, customers: str, n: int = 3):
    """The ``n`` customers with the highest total amount, with their names."""
    spent = context.get(orders).groupby("customer_id", as_index=False)["amount"].sum()
    top = spent.nlargest(n, "amount").merge(context.get(customers), on="customer_id")
    return pd.DataFrame(
        {"customer_id": top["customer_id"], "name": top["name"], "spent": top["amount"].round(2)}
    )
