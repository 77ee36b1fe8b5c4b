"""Run stories (HTML + JSON) written through the project's story connection."""

from odibi_dagster.story.recorder import STORY_RESOURCE_KEY, RunStoryResource
from odibi_dagster.story.writer import (
    FAILED,
    NOT_RUN,
    SUCCESS,
    NodeStory,
    StoryTarget,
    now,
    record,
    render_html,
)

__all__ = [
    "FAILED",
    "NOT_RUN",
    "STORY_RESOURCE_KEY",
    "SUCCESS",
    "NodeStory",
    "RunStoryResource",
    "StoryTarget",
    "now",
    "record",
    "render_html",
]
