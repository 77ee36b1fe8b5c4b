"""Run stories (HTML + JSON) written through the project's story connection."""

from odibi_dagster.story.recorder import STORY_RESOURCE_KEY, RunStoryResource
from odibi_dagster.story.writer import NodeStory, StoryTarget, record, render_html

__all__ = [
    "STORY_RESOURCE_KEY",
    "NodeStory",
    "RunStoryResource",
    "StoryTarget",
    "record",
    "render_html",
]
