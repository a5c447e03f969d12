"""Plain-text tables for the command-line tools (the sizing tool, the data build's report)."""

from __future__ import annotations


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
