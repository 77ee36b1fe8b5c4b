"""What one node's asset does when it runs: read, transform, validate, hand over the result.

The compile layer builds one ``NodeRunner`` per node and wraps it in a Dagster asset;
writing the result is the IO manager's job.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import dagster as dg

from odibi_dagster import checks
from odibi_dagster.config.models import NodeConfig
from odibi_dagster.errors import OdibiRunError
from odibi_dagster.resources.local import LocalStorage
from odibi_dagster.story import NodeStory, StoryTarget, record
from odibi_dagster.transforms import run_steps


@dataclass(frozen=True)
class StorySettings:
    """The project's ``story:`` block, resolved: a connection name or a local directory."""

    project: str
    path: str
    max_sample_rows: int
    connection: str | None = None
    output_dir: str | None = None


def get_engine(name: str) -> Any:
    if name == "pandas":
        from odibi_dagster.engines.pandas import PandasEngine

        return PandasEngine()
    raise OdibiRunError(f"engine '{name}' is not available in this version; use engine: pandas")


@dataclass(frozen=True)
class NodeRunner:
    node: NodeConfig
    pipeline: str
    key: dg.AssetKey
    engine: str
    story: StorySettings | None = None
    write_uri: str | None = None

    def run(self, context: Any, inputs: dict[str, Any]) -> Iterator[Any]:
        node = self.node
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        t0 = time.perf_counter()
        story = NodeStory(
            pipeline=self.pipeline,
            node=node.name,
            status="failed",
            started=started,
            duration_s=0.0,
            where=node.where,
            description=node.description,
            steps=_step_labels(node),
        )
        try:
            yield from self._run(context, inputs, story)
            story.status = "success"
        except OdibiRunError as exc:
            story.error = str(exc)
            # A mistake in the config or the data: retrying cannot help.
            raise dg.Failure(description=str(exc), allow_retries=False) from None
        except dg.Failure as exc:
            story.error = exc.description
            raise
        except Exception as exc:
            story.error = f"{node.where}: {type(exc).__name__}: {exc}"
            raise
        finally:
            if story.status != "success" and story.error is None:
                story.error = "the result could not be stored; see the run's event log"
            story.duration_s = round(time.perf_counter() - t0, 4)
            self._record_story(context, story)

    def _run(self, context: Any, inputs: dict[str, Any], story: NodeStory) -> Iterator[Any]:
        node = self.node
        eng = get_engine(self.engine)
        frames = {dep: inputs[dep] for dep in node.depends_on}
        story.inputs = {name: eng.row_count(df) for name, df in frames.items()}
        current = None
        if node.read is not None:
            conn = getattr(context.resources, node.read.connection)
            current = eng.read(
                conn.location(node.read.path), node.read.format, node.read.options, where=node.where
            )
            story.inputs[f"read {node.read.path}"] = eng.row_count(current)
        if node.transform is not None:
            current = run_steps(
                eng, node.transform.steps, frames, current, node=node.name, where=node.where
            )
        elif current is None:
            current = frames[node.depends_on[0]]
        story.rows = eng.row_count(current)
        story.columns = eng.column_schema(current)
        if self.story is not None and self.story.max_sample_rows:
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
        yield dg.Output(current)
        if node.write is not None:
            story.write = {
                "uri": self.write_uri,
                "format": node.write.format,
                "mode": node.write.mode,
            }

    def _record_story(self, context: Any, story: NodeStory) -> None:
        s = self.story
        if s is None:
            return
        try:
            if s.connection:
                conn = getattr(context.resources, s.connection)
            else:
                conn = LocalStorage(base_path=s.output_dir or ".")
            target = StoryTarget(
                locate=conn.location,
                path=s.path,
                project=s.project,
                max_sample_rows=s.max_sample_rows,
            )
            loc = record(target, context.run_id, story)
            context.log.info(f"story: {loc.uri}")
        except Exception as exc:  # a story must never fail the node it describes
            context.log.warning(f"{self.node.where}: the run story was not written: {exc}")


def _step_labels(node: NodeConfig) -> list[str]:
    if node.transform is None:
        return []
    out = []
    for step in node.transform.steps:
        if step.sql is not None:
            out.append(" ".join(step.sql.split()))
        else:
            params = ", ".join(f"{k}={v!r}" for k, v in step.params.items())
            out.append(f"{step.function}({params})")
    return out
