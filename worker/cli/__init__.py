"""``medseg``: the one console script in front of every role (``medseg = worker.cli:main``)."""

from worker.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
