"""What the CLI prints: tables and colour through rich, plain where the output is not a
terminal (a pipe, a file: no colour codes, no wrapping, one row a line), ``NO_COLOR`` honoured.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

#: Wide enough that a piped row is never wrapped (rich assumes 80 columns off a terminal).
PIPE_WIDTH = 100_000


class _Console(Console):
    def on_broken_pipe(self) -> None:
        """The reader went away: ``worker.cli.main`` ends quietly with its own exit code
        (rich's default exits 1, which a script would read as a failure of the command)."""
        self.quiet = True
        raise BrokenPipeError


def console() -> Console:
    """A console on stdout, looked up now (tests and ``contextlib.redirect_stdout``)."""
    out = sys.stdout
    tty = out.isatty()
    return _Console(
        file=out,
        highlight=False,
        soft_wrap=not tty,
        width=None if tty else PIPE_WIDTH,
        emoji=False,
    )


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], *, right: int = 1) -> None:
    """Print ``rows`` under ``headers``, the first ``right`` columns aligned right (IDs,
    counts). Cells are text, never markup: an error's ``[...]`` stays as it is."""
    out = console()
    grid = Table(
        box=box.SIMPLE_HEAD if out.is_terminal else None,  # piped: no rule under the headers
        show_edge=False,
        pad_edge=False,
        header_style="bold",
    )
    for index, header in enumerate(headers):
        grid.add_column(header, justify="right" if index < right else "left")
    for row in rows:
        grid.add_row(*(cell if isinstance(cell, Text) else Text(str(cell)) for cell in row))
    out.print(grid)


def line(text: str, style: str = "") -> None:
    """One line, in ``style`` on a terminal (``bold red``); never read as markup."""
    console().print(Text(text, style=style))
