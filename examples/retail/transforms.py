"""Python steps of the retail example. Imported automatically: it sits beside project.yaml.

Each step works on both engines: ``context.engine`` says whether ``context.get`` returns
pandas or Spark DataFrames (``ODIBI_ENGINE=spark`` runs this project on Spark).
"""

import pandas as pd

from odibi_dagster import transform


@transform(columns={"country": ["country"]})
def normalise_country(context, source: str, default: str):
    """Upper-case country codes; fill missing ones with ``default``."""
    df = context.get(source)
    if context.engine == "spark":
        from pyspark.sql import functions as F

        country = F.upper(F.trim(F.coalesce(F.col("country"), F.lit(default))))
        return df.withColumn("country", country)
    df = df.copy()
    df["country"] = df["country"].fillna(default).str.strip().str.upper()
    return df


@transform(
    columns={
        "customer_id": ["orders.customer_id"],
        "name": ["customers.name"],
        "spent": ["orders.amount"],
    }
)
def top_spenders(context, orders: str, customers: str, n: int = 3):
    """The ``n`` customers with the highest total amount, with their names."""
    if context.engine == "spark":
        from pyspark.sql import functions as F

        spent = context.get(orders).groupBy("customer_id").agg(F.sum("amount").alias("spent"))
        top = spent.orderBy(F.col("spent").desc(), "customer_id").limit(n)
        top = top.join(context.get(customers), on="customer_id")
        return top.select("customer_id", "name", F.round("spent", 2).alias("spent")).orderBy(
            F.col("spent").desc(), "customer_id"
        )
    spent = context.get(orders).groupby("customer_id", as_index=False)["amount"].sum()
    top = spent.nlargest(n, "amount").merge(context.get(customers), on="customer_id")
    return pd.DataFrame(
        {"customer_id": top["customer_id"], "name": top["name"], "spent": top["amount"].round(2)}
    )
