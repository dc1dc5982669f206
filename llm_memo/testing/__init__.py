"""A local OpenAI-compatible server for tests, yours included: no network, no key."""

from .server import LocalServer

__all__ = ["LocalServer"]
