"""The tables ``nitrod synth-unit`` and ``nitrod build`` print and write (Markdown)."""

from __future__ import annotations

__all__ = ["markdown_table", "met_cell"]


def met_cell(report) -> str:
    """``met`` of a report: ``yes``/``NO`` against its target clock, ``FAILED`` when place and
    route failed; a ``*`` marks iCE40 figures that leave out the delay through unregistered
    SB_MAC16 blocks."""
    value = "FAILED" if report.get("error") else ("yes" if report.get("timing_met") else "NO")
    return value + ("*" if report.get("untimed_dsps") else "")


def markdown_table(rows, columns) -> str:
    """A Markdown table of ``rows`` (dicts); ``columns`` is ``[(key, title, format), ...]``
    where ``format(row)`` gives the cell (``None`` for ``row[key]``, ``-`` when absent)."""
    head = "| " + " | ".join(title for _, title, _ in columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    lines = [head, rule]
    for row in rows:
        cells = []
        for key, _, fmt in columns:
            value = fmt(row) if fmt else row.get(key)
            cells.append("-" if value is None else str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
