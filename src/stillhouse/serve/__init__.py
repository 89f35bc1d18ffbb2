"""Serving local models over an OpenAI-compatible API, with one batching engine."""

from stillhouse.serve.server import Server, serve_forever, serve_in_background

__all__ = ["Server", "serve_forever", "serve_in_background"]
