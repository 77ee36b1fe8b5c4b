"""The run story as a Dagster resource: where stories go, and each node's story on its way
from the node's computation to the IO manager that writes its result.

A compiled project with a ``story:`` block gets one ``RunStoryResource`` (key
``odibi_story``) that every asset requires. A node's story is started when the node
computes; the IO manager of the same step completes it with how the write went and
saves it. Under any executor, the computation and its write run in one step, which
shares one instance of the resource, so nothing passes through a process-wide global.
Stories of nodes that never computed are saved by the step that knows why: the IO
manager, when an input fails to load, saves the consumer's (failed) and, for a read-only
source, the source's (failed, or success when the read worked); a failed node's step
saves the ``not run`` stories of the nodes of the run that depend on it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg
from pydantic import Field, PrivateAttr

from odibi_dagster.resources.base import Location
from odibi_dagster.resources.connection import ConnectionResource
from odibi_dagster.resources.local import LocalStorage
from odibi_dagster.story.retention import prune_stories
from odibi_dagster.story.writer import NodeStory, StoryTarget, record

STORY_RESOURCE_KEY = "odibi_story"


class RunStoryResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Writes an HTML + JSON story of every run, through a connection of the project.

    Example::

        RunStoryResource(project="sales", connection="lake", path="stories")
    """

    project: str = Field(description="The project's name, shown in each story.")
    path: str = Field(default="", description="Directory of the stories on the connection.")
    connection: str | None = Field(
        default=None, description="The connection stories are written through."
    )
    output_dir: str | None = Field(
        default=None, description="A local directory, instead of a connection and path."
    )
    max_sample_rows: int = Field(default=10, description="Rows of each node's sample.")
    retention_days: int | None = Field(
        default=None,
        description="Delete the stories of runs older than this many days (None: keep all).",
    )

    # node stories computed in this step, waiting for their result to be written
    _pending: dict[tuple[str, tuple[str, ...]], NodeStory] = PrivateAttr(default_factory=dict)
    # (run id, pipeline) whose old stories this step has pruned already
    _pruned: set[tuple[str, str]] = PrivateAttr(default_factory=set)

    def target(self, connections: Mapping[str, Any]) -> StoryTarget:
        """Where stories go, given the step's resources (the connection is one of them)."""
        conn = connections.get(self.connection) if self.connection else None
        if not isinstance(conn, ConnectionResource):
            conn = LocalStorage(base_path=self.output_dir or ".")
        return StoryTarget(
            locate=conn.location,
            path=self.path,
            project=self.project,
            max_sample_rows=self.max_sample_rows,
        )

    def hold(self, run_id: str, key: tuple[str, ...], story: NodeStory) -> None:
        """Keep a computed node's story until the IO manager has written its result."""
        self._pending[(run_id, key)] = story

    def take(self, run_id: str, key: tuple[str, ...]) -> NodeStory | None:
        """The story :meth:`hold` kept for this output (None: none)."""
        return self._pending.pop((run_id, key), None)

    def save(
        self,
        connections: Mapping[str, Any],
        run_id: str,
        story: NodeStory,
        not_run: Sequence[NodeStory] = (),
    ) -> Location:
        """Save one node's story (and, for a failed node, the stories of the nodes that
        will not run because of it) and re-render the run's story; the HTML's location."""
        target = self.target(connections)
        html = record(target, run_id, story, not_run)
        if self.retention_days is not None and (run_id, story.pipeline) not in self._pruned:
            self._pruned.add((run_id, story.pipeline))
            prune_stories(target, story.pipeline, run_id, self.retention_days)
        return html

    def html(self, connections: Mapping[str, Any], pipeline: str, run_id: str) -> Location:
        """Where the story HTML of one run of ``pipeline`` is written."""
        return self.target(connections).html(pipeline, run_id)
