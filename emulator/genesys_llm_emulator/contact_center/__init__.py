"""The synthetic contact center (being split into modules by purpose; see the next commit)."""

from .calls import *  # noqa: F403
