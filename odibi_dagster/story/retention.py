"""``story.retention_days`` (Odibi v3): the stories of a pipeline's old runs are deleted.

After a run's first node story is saved, the run directories of the same pipeline whose
``story.json`` was last written more than ``retention_days`` ago are removed. The run being
recorded is never removed; a directory without ``story.json`` (a run still starting) is
left alone.
"""

from __future__ import annotations

import posixpath
from datetime import datetime, timedelta, timezone
from typing import Any

from odibi_dagster.story.writer import StoryTarget


def prune_stories(
    target: StoryTarget,
    pipeline: str,
    keep_run_id: str,
    retention_days: int,
    now: datetime | None = None,
) -> list[str]:
    """Delete the story directories of ``pipeline`` older than ``retention_days``; return
    the run ids removed."""
    base = target.locate(posixpath.join(target.path.strip("/"), pipeline))
    fs = base.fs
    cutoff = (now or datetime.now(timezone.utc)) - timedelta(days=retention_days)
    removed = []
    for story_json in sorted(fs.glob(posixpath.join(base.fs_path, "*", "story.json"))):
        run_dir = posixpath.dirname(story_json)
        run_id = posixpath.basename(run_dir)
        if run_id == keep_run_id:
            continue
        written = _modified(fs, story_json)
        if written is not None and written < cutoff:
            fs.rm(run_dir, recursive=True)
            removed.append(run_id)
    return removed


def _modified(fs: Any, path: str) -> datetime | None:
    """When ``path`` was last written (UTC), or None if the filesystem cannot say."""
    try:
        when = fs.modified(path)
    except (NotImplementedError, AttributeError):
        info = fs.info(path)
        when = info.get("last_modified") or info.get("mtime")
    if isinstance(when, int | float):
        return datetime.fromtimestamp(when, timezone.utc)
    if isinstance(when, datetime):
        return when if when.tzinfo else when.replace(tzinfo=timezone.utc)
    return None
