"""Task functions the tests' workers run, and the data they run on.

Workers import this module by name (the inventories put the repository on ``PYTHONPATH``), the
way users ship their own code to a cluster. Keep it importable without the test helpers.
"""

from __future__ import annotations

import sysconfig
from pathlib import Path

import numpy as np

LINES_PER_DOCUMENT = 20


def trace_of_constant_matrix(m: int) -> int:
    """The trace of a 4x3 matrix whose every entry is ``m``: always ``3 * m``."""
    return int(np.trace(np.random.randint(low=m, high=m + 1, size=(4, 3))))


def howmany_within_range(row: list[int], minimum: int, maximum: int) -> int:
    """How many values of ``row`` lie in ``[minimum, maximum]``."""
    return sum(1 for value in row if minimum <= value <= maximum)


def count_words(document: str) -> int:
    return len(document.split())


def stdlib_corpus(documents: int = 5000) -> list[str]:
    """``documents`` texts of ``LINES_PER_DOCUMENT`` lines each, cut from the standard library's
    top-level modules in name order: a corpus every Python installation ships, no download."""
    corpus: list[str] = []
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        for start in range(0, len(lines), LINES_PER_DOCUMENT):
            corpus.append("\n".join(lines[start:start + LINES_PER_DOCUMENT]))
            if len(corpus) == documents:
                return corpus
    raise ValueError(f"the standard library yields only {len(corpus)} documents, not {documents}")
