"""Collection: send prompts to an OpenAI-compatible teacher, keep every exchange in a run store."""

from stillhouse.collect.run import CollectResult, Progress, acollect, collect

__all__ = ["CollectResult", "Progress", "acollect", "collect"]
