"""Odibi v3 validation tests on 1,000,000 rows (pandas): the engine-neutral SQL odibi runs
(DuckDB over the frame) beside the same tests written by hand with pandas masks.

Run: `.venv/bin/python benchmarks/validation_tests.py` (about a minute on 2 cores).

The frame: `id` (unique), `customer_id` (1% null), `status` (4 values, 1% outside the
accepted ones), `total` (1% negative), `email` (1% without '@'). The tests: not_null,
unique, accepted_values, range, regex_match, custom_sql (`total < 900`).

- odibi, count: `quality.evaluate(...)` as a node runs it: one query counting every
  test's failing rows, plus the sample rows of each failing test (6 small queries).
- hand, count: each test as a pandas mask and its sum (`isna`, `duplicated(keep=False)`,
  `isin`, comparisons, `str.contains`, `eval`).
- odibi, split: `quality.split(...)` after the count: the rows kept and the rows to
  quarantine, with their added columns (two queries).
- hand, split: the masks or-ed, `df[~bad]` and `df[bad]` with the same columns added.

Median of REPEATS, taking turns, after one unmeasured round. Each round checks that both
sides count the same failing rows and keep the same rows. The ratio odibi / hand is what
to read.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from odibi_dagster import checks, quality
from odibi_dagster.config.models import NodeConfig
from odibi_dagster.engines.pandas import PandasEngine

ROWS, REPEATS = 1_000_000, 5
NODE = NodeConfig.model_validate(
    {
        "name": "bench",
        "transform": {"steps": ["SELECT 1"]},
        "validation": {
            "tests": [
                {"type": "not_null", "columns": ["customer_id"], "on_fail": "quarantine"},
                {"type": "unique", "columns": ["id"], "on_fail": "quarantine"},
                {
                    "type": "accepted_values",
                    "column": "status",
                    "values": ["paid", "open", "sent", "lost"],
                    "on_fail": "quarantine",
                },
                {"type": "range", "column": "total", "min": 0, "on_fail": "quarantine"},
                {"type": "regex_match", "column": "email", "pattern": "@", "on_fail": "warn"},
                {"type": "custom_sql", "condition": "total < 900", "on_fail": "warn"},
            ],
            "quarantine": {"connection": "lake", "path": "q"},
        },
    }
)


def frame() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    ids = np.arange(ROWS, dtype="int64")
    customer = rng.integers(1, 50_000, ROWS).astype("float64")
    customer[ids % 100 == 1] = np.nan
    status = np.array(["paid", "open", "sent", "lost"])[ids % 4].astype(object)
    status[ids % 100 == 2] = "weird"
    total = rng.uniform(0, 1000, ROWS)
    total[ids % 100 == 3] = -1.0
    email = np.array([f"u{i}@x.com" for i in ids], dtype=object)
    email[ids % 100 == 4] = "nobody"
    return pd.DataFrame(
        {"id": ids, "customer_id": customer, "status": status, "total": total, "email": email}
    )


def hand_masks(df: pd.DataFrame) -> dict[str, pd.Series]:
    return {
        "not_null": df["customer_id"].isna(),
        "unique": df.duplicated(subset=["id"], keep=False),
        "accepted_values": df["status"].notna()
        & ~df["status"].isin(["paid", "open", "sent", "lost"]),
        "range": df["total"] < 0,
        "regex_match": df["email"].notna() & ~df["email"].astype(str).str.contains("@"),
        "custom_sql": ~df.eval("total < 900"),
    }


def hand_count(df: pd.DataFrame) -> dict[str, int]:
    return {k: int(m.sum()) for k, m in hand_masks(df).items()}


def hand_split(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    masks = hand_masks(df)
    quarantine = ["not_null", "unique", "accepted_values", "range"]
    bad = masks["not_null"] | masks["unique"] | masks["accepted_values"] | masks["range"]
    rejected = df[bad].copy()
    names = pd.Series([""] * len(rejected), index=rejected.index)
    for name in quarantine:
        names = names.where(~masks[name][bad], names + "," + name)
    rejected["_failed_tests"] = names.str.lstrip(",")
    rejected["_rejected_at"] = pd.Timestamp.now(tz="UTC").isoformat()
    rejected["_source_batch_id"] = "run"
    return df[~bad], rejected


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> None:
    eng = PandasEngine()
    df = frame()
    assert NODE.validation is not None
    tests, gate = checks.v3_plan(NODE.validation)
    times: dict[str, list[float]] = {
        k: [] for k in ("odibi count", "hand count", "odibi split", "hand split")
    }
    for round_ in range(REPEATS + 1):
        t_oc, found = timed(lambda: quality.evaluate(eng, df, NODE, tests, gate))
        t_hc, counted = timed(lambda: hand_count(df))
        t_os, (keep, reject) = timed(
            lambda found=found: quality.split(eng, df, found, "run", "bench")
        )
        t_hs, (hand_keep, hand_reject) = timed(lambda: hand_split(df))
        assert {o.name: o.metadata["failing_rows"] for o in found.outcomes} == counted
        assert len(keep) == len(hand_keep) and len(reject) == len(hand_reject)
        assert sorted(keep["id"]) == sorted(hand_keep["id"])
        if round_:
            for k, t in zip(times, (t_oc, t_hc, t_os, t_hs), strict=True):
                times[k].append(t)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{ROWS:,} rows, 6 tests; failing rows: {counted}")
    print(f"kept {len(keep):,}, quarantined {len(reject):,}")
    for what in ("count", "split"):
        o, h = med[f"odibi {what}"], med[f"hand {what}"]
        print(f"{what}: odibi {o:.3f} s, hand {h:.3f} s ({o / h:.2f}x)")


if __name__ == "__main__":
    main()
