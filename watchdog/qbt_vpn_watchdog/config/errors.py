"""The one error a config can raise: every problem at once, one line each.

A leaf module: whatever reads a config file (``web_security`` too) raises it
without importing the loader.
"""

from __future__ import annotations


class ConfigError(Exception):
    """The config is invalid; ``errors`` holds one line per problem."""

    def __init__(self, source: str, errors: list[str]) -> None:
        self.source = source
        self.errors = errors
        super().__init__(
            f"{source}: {len(errors)} error(s):\n" + "\n".join(f"  {e}" for e in errors)
        )
