"""Task functions the tests' workers run, and the data they run on.

Workers import this module by name (the inventories put the repository on ``PYTHONPATH``), the
way users ship their own code to a cluster. Keep it importable without the test helpers.
"""

from __future__ import annotations

import numpy as np

from examples import word_count
from examples.word_count import count_words

__all__ = ["count_words", "howmany_within_range", "stdlib_corpus", "trace_of_constant_matrix"]


def trace_of_constant_matrix(m: int) -> int:
    """The trace of a 4x3 matrix whose every entry is ``m``: always ``3 * m``."""
    return int(np.trace(np.random.randint(low=m, high=m + 1, size=(4, 3))))


def howmany_within_range(row: list[int], minimum: int, maximum: int) -> int:
    """How many values of ``row`` lie in ``[minimum, maximum]``."""
    return sum(1 for value in row if minimum <= value <= maximum)


def stdlib_corpus(documents: int = 5000) -> list[str]:
    """The word-count example's corpus (cut from the standard library's source), exactly that long."""
    corpus = word_count.stdlib_corpus(documents)
    if len(corpus) != documents:
        raise ValueError(f"the standard library yields only {len(corpus)} documents, not {documents}")
    return corpus
