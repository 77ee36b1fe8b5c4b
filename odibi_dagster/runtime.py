"""What one node's asset does when it runs: read, transform, validate, hand over the result.

The compile layer builds one ``NodeRunner`` per node and wraps it in a Dagster asset;
writing the result is the IO manager's job.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import dagster as dg

from odibi_dagster import checks
from odibi_dagster.config.models import NodeConfig
from odibi_dagster.errors import OdibiRunError, as_failure, storage_errors
from odibi_dagster.resources.local import LocalStorage
from odibi_dagster.story import NodeStory, PendingStory, StoryTarget, record, stash_story
from odibi_dagster.transforms import run_steps


@dataclass(frozen=True)
class StorySettings:
    """The project's ``story:`` block, resolved: a connection name or a local directory."""

    project: str
    path: str
    max_sample_rows: int
    connection: str | None = None
    output_dir: str | None = None


def get_engine(name: str, resources: Any = None) -> Any:
    """The engine ``name``; for spark, over the session of the step with ``resources``."""
    if name == "pandas":
        from odibi_dagster.engines.pandas import PandasEngine

        return PandasEngine()
    if name == "spark":
        from odibi_dagster.engines.spark import SparkEngine, session_for

        return SparkEngine(session_for(resources))
    raise OdibiRunError(f"engine '{name}' is not available; use engine: pandas or spark")


def cheap_count(eng: Any, df: Any) -> int | None:
    """The row count when it costs nothing (pandas); None where it would run a job (Spark:
    the IO manager counts while it writes)."""
    return eng.row_count(df) if getattr(eng, "counts_are_cheap", True) else None


@dataclass(frozen=True)
class NodeRunner:
    node: NodeConfig
    pipeline: str
    key: dg.AssetKey
    engine: str
    story: StorySettings | None = None
    write_uri: str | None = None
    step_labels: tuple[str, ...] = ()

    def run(self, context: Any, inputs: dict[str, Any]) -> Iterator[Any]:
        """Compute the node. Its story is saved here if the computation fails, otherwise by
        the IO manager once the result is written (so it can tell how the write went)."""
        node = self.node
        t0 = time.perf_counter()
        story = NodeStory(
            pipeline=self.pipeline,
            node=node.name,
            status="failed",
            started=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            duration_s=0.0,
            where=node.where,
            description=node.description,
            steps=list(self.step_labels),
        )
        try:
            current = yield from self._compute(context, inputs, story)
        except OdibiRunError as exc:
            story.error = str(exc)
            self._save_failed(context, story, t0)
            raise as_failure(exc) from None
        except dg.Failure as exc:
            story.error = exc.description
            self._save_failed(context, story, t0)
            raise
        except Exception as exc:
            story.error = f"{node.where}: {type(exc).__name__}: {exc}"
            self._save_failed(context, story, t0)
            raise
        story.duration_s = round(time.perf_counter() - t0, 4)
        target = self._story_target(context)
        if target is not None:
            stash_story(context.run_id, tuple(self.key.path), PendingStory(target, story))
        yield dg.Output(current)

    def _compute(
        self, context: Any, inputs: dict[str, Any], story: NodeStory
    ) -> Generator[Any, None, Any]:
        """Read, transform and validate; yields check results, returns the result."""
        node = self.node
        eng = get_engine(self.engine, context.resources)
        frames = {dep: inputs[dep] for dep in node.depends_on}
        story.inputs = {name: cheap_count(eng, df) for name, df in frames.items()}
        current = None
        if node.read is not None:
            loc = getattr(context.resources, node.read.connection).location(node.read.path)
            with storage_errors(node.where, "reading", loc.uri, loc.storage_options):
                current = eng.read(loc, node.read.format, node.read.options, where=node.where)
            story.inputs[f"read {node.read.path}"] = cheap_count(eng, current)
        if node.transform is not None:
            current = run_steps(
                eng, node.transform.steps, frames, current, node=node.name, where=node.where
            )
        elif current is None:
            current = frames[node.depends_on[0]]
        story.rows = cheap_count(eng, current)
        story.columns = eng.column_schema(current)
        if self.story is not None and self.story.max_sample_rows and story.rows is not None:
            story.sample = current.head(self.story.max_sample_rows).to_dict(orient="records")
        if node.validation is not None:
            failed = []
            for outcome in checks.evaluate(eng, current, node.validation):
                story.checks.append(
                    {
                        "name": outcome.name,
                        "passed": outcome.passed,
                        "description": outcome.description,
                    }
                )
                yield dg.AssetCheckResult(
                    check_name=outcome.name,
                    passed=outcome.passed,
                    asset_key=self.key,
                    description=outcome.description,
                    metadata=outcome.metadata,
                )
                if not outcome.passed:
                    failed.append(f"{outcome.name}: {outcome.description}")
            if failed:
                raise dg.Failure(
                    description=f"{node.where}: validation failed, nothing was written: "
                    + "; ".join(failed),
                    allow_retries=False,
                )
        return current

    def _story_target(self, context: Any) -> StoryTarget | None:
        s = self.story
        if s is None:
            return None
        if s.connection:
            conn = getattr(context.resources, s.connection)
        else:
            conn = LocalStorage(base_path=s.output_dir or ".")
        return StoryTarget(
            locate=conn.location, path=s.path, project=s.project, max_sample_rows=s.max_sample_rows
        )

    def _save_failed(self, context: Any, story: NodeStory, t0: float) -> None:
        story.duration_s = round(time.perf_counter() - t0, 4)
        try:
            target = self._story_target(context)
            if target is not None:
                record(target, context.run_id, story)
        except Exception as exc:  # a story must never hide the node's own error
            context.log.warning(f"{self.node.where}: the run story was not written: {exc}")
