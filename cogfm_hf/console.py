"""What the command-line tools print: plain-text tables (the sizing tool, the data build's report), Markdown tables
(the experiment reports), and the one line a refused input ends with."""

from __future__ import annotations

import os
import sys
from typing import NoReturn

DEBUG_ENV = "COGFM_DEBUG"  # set (to anything) to see the traceback behind a one-line error


def exit_with(prefix: str, error: BaseException) -> NoReturn:
    """End a command with `prefix: error` on one line and exit status 1, or, with COGFM_DEBUG set, re-raise
    `error` with its traceback."""
    if os.environ.get(DEBUG_ENV):
        raise error
    sys.exit(f"{prefix}: {error}" if prefix else str(error))


def text_table(rows: list[list[str]] | list[tuple], left_columns: int = 1) -> str:
    """Rows of cells (the first row is the header) in columns padded to their widest cell, a rule under the
    header; the first `left_columns` columns are aligned left (names), the rest right (numbers)."""
    rows = [[str(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]

    def line(row: list[str]) -> str:
        return "  ".join(
            cell.ljust(width) if i < left_columns else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths))
        )

    return "\n".join([line(rows[0]), "  ".join("-" * w for w in widths), *map(line, rows[1:])])


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table (what the experiment reports write): the header, then one line per row."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows])
