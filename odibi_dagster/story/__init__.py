"""Run stories (HTML + JSON) written through the project's story connection."""

from odibi_dagster.story.writer import (
    NodeStory,
    PendingStory,
    StoryTarget,
    record,
    render_html,
    stash_story,
    take_story,
)

__all__ = [
    "NodeStory",
    "PendingStory",
    "StoryTarget",
    "record",
    "render_html",
    "stash_story",
    "take_story",
]
