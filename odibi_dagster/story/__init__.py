"""Run stories (HTML + JSON) written through the project's story connection."""

from odibi_dagster.story.writer import NodeStory, StoryTarget, record, render_html

__all__ = ["NodeStory", "StoryTarget", "record", "render_html"]
