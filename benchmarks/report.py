"""The samples, and the three views of them: a text table, a markdown table and a JSON document."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

OURS = "clusterctl"
ORDER = ("start", "stop: command returns", "stop: no process left", "`status`", "`status --processes`", "`check`",
         "`--help`", "sync: first", "sync: no-op")


@dataclass
class Row:
    """One measure: samples per tool (None: the tool did not get there, e.g. processes were left over)."""

    measure: str
    samples: dict[str, list[float | None]] = field(default_factory=dict)

    @property
    def peer(self) -> str | None:
        return next((tool for tool in self.samples if tool != OURS), None)

    def median(self, tool: str | None) -> float | None:
        values = [v for v in self.samples.get(tool or "", []) if v is not None]
        return statistics.median(values) if values else None

    def failures(self, tool: str | None) -> int:
        return sum(v is None for v in self.samples.get(tool or "", []))

    @property
    def ratio(self) -> float | None:
        ours, theirs = self.median(OURS), self.median(self.peer)
        return ours / theirs if ours is not None and theirs else None


@dataclass
class Results:
    settings: dict[str, Any]
    machine: dict[str, Any]
    rows: dict[str, Row] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float | None = None
    facts: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # size -> what -> samples

    def fact(self, size: str, what: str, value: float) -> None:
        """A figure that is not a race between tools: clusterctl's own cost, the dask processes' floor."""
        self.facts.setdefault(size, {}).setdefault(what, []).append(value)

    def fact_rows(self) -> list[list[str]]:
        whats = list(dict.fromkeys(what for figures in self.facts.values() for what in figures))
        rows = [["per size (medians)", *self.facts]]
        for what in whats:
            rows.append([what, *(f"{statistics.median(f[what]):g}" if f.get(what) else "–"
                                 for f in self.facts.values())])
        return rows

    def add(self, measure: str, tool: str, seconds: float | None) -> None:
        row = self.rows.setdefault(measure, Row(measure))
        row.samples.setdefault(tool, []).append(None if seconds is None else round(seconds, 4))

    def note(self, text: str) -> None:
        self.notes.append(text)

    def ordered(self) -> list[Row]:
        """Starts, then stops, then the short commands; each in the order measured."""
        def kind(row: Row) -> int:
            return next((i for i, prefix in enumerate(ORDER) if row.measure.startswith(prefix)), len(ORDER))

        return sorted(self.rows.values(), key=kind)

    def document(self) -> dict[str, Any]:
        return {
            "settings": self.settings,
            "machine": self.machine,
            "seconds": self.seconds,
            "rows": [
                {"measure": row.measure, "peer": row.peer, "clusterctl_median": _round(row.median(OURS)),
                 "peer_median": _round(row.median(row.peer)), "ratio": _round(row.ratio), "samples": row.samples}
                for row in self.ordered()
            ],
            "facts": {size: {what: {"median": statistics.median(values), "samples": values}
                             for what, values in figures.items()} for size, figures in self.facts.items()},
            "notes": self.notes,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _seconds(row: Row, tool: str | None) -> str:
    if tool is None:
        return "–"
    median = row.median(tool)
    text = "–" if median is None else f"{median:.2f} s"
    failed = row.failures(tool)
    return f"{text} ({failed} left processes)" if failed else text


def _cells(row: Row) -> list[str]:
    ratio = row.ratio
    return [row.measure, _seconds(row, OURS), row.peer or "–", _seconds(row, row.peer),
            "–" if ratio is None else f"{ratio:.2f}"]


HEADER = ["measure", "clusterctl (median)", "peer", "peer (median)", "clusterctl / peer"]


def text_table(results: Results) -> str:
    rows = [HEADER] + [_cells(row) for row in results.ordered()]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    lines = ["  ".join(cell.ljust(width) if i in (0, 2) else cell.rjust(width)
                       for i, (cell, width) in enumerate(zip(r, widths, strict=True))) for r in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    facts = results.fact_rows()
    if len(facts) > 1:
        widths = [max(len(r[i]) for r in facts) for i in range(len(facts[0]))]
        lines += ["", *("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in
                                  enumerate(zip(r, widths, strict=True))) for r in facts)]
    return "\n".join(lines + [""] + [_summary(results)] + [f"note: {note}" for note in results.notes])


def markdown_table(results: Results) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|---|---:|---|---:|---:|"]
    lines += ["| " + " | ".join(_cells(row)) + " |" for row in results.ordered()]
    facts = results.fact_rows()
    if len(facts) > 1:
        lines += ["", "| " + " | ".join(facts[0]) + " |", "|---|" + "---:|" * (len(facts[0]) - 1)]
        lines += ["| " + " | ".join(row) + " |" for row in facts[1:]]
    lines += ["", _summary(results)]
    lines += [f"- note: {note}" for note in results.notes]
    return "\n".join(lines) + "\n"


def _summary(results: Results) -> str:
    machine, settings = results.machine, results.settings
    versions = ", ".join(f"{name} {version}" for name, version in machine.get("versions", {}).items() if version)
    load = machine.get("load_average_start")
    load_text = f", load average {load[0]:.2f} at the start" if load else ""
    return (f"Medians of {settings['repeat']} repetition(s) ({settings['samples']} samples per repetition for "
            f"`status` and `--help`), {machine.get('date', '')}; {machine.get('cpus')} CPUs{load_text}; "
            f"Python {machine.get('python')}; {versions}.")
