"""The lecture's word count: one task per document, then a sum, checked against the sequential loop.

The corpus is the standard library's own source: its top-level modules cut into documents of 20 lines
(about 6,800 of them), so nothing is downloaded. Each document is one ``client.submit``; a last task
sums the counts::

    clusterctl up configs/local.yaml
    eval $(clusterctl env)
    python examples/word_count.py                 # 5000 documents
    python examples/word_count.py --sleep 0.01    # each task also "works" 10 ms, as in the lecture

It prints the total and the time of both versions. With tasks this small the sequential loop wins by
far: dask adds about a millisecond per task, which is the lecture's point. Give each task real work
(``--sleep``) and the cluster pulls ahead.
"""

from __future__ import annotations

import argparse
import os
import sys
import sysconfig
import time
from pathlib import Path

from distributed import Client

LINES_PER_DOCUMENT = 20


def stdlib_corpus(documents: int) -> list[str]:
    """``documents`` texts of 20 lines each, from the standard library's top-level modules in name order."""
    corpus: list[str] = []
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        for start in range(0, len(lines), LINES_PER_DOCUMENT):
            corpus.append("\n".join(lines[start:start + LINES_PER_DOCUMENT]))
            if len(corpus) == documents:
                return corpus
    return corpus


def count_words(text: str, sleep: float = 0.0) -> int:
    if sleep:
        time.sleep(sleep)  # stands for real work per document
    return len(text.split())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=5000, help="how many documents (default %(default)s)")
    parser.add_argument("--sleep", type=float, default=0.0, help="seconds of simulated work per document")
    args = parser.parse_args(argv)
    if not os.environ.get("DASK_SCHEDULER_ADDRESS"):
        print("no cluster: run `eval $(clusterctl env)` first (after `clusterctl up CONFIG`)", file=sys.stderr)
        return 1

    corpus = stdlib_corpus(args.documents)
    print(f"{len(corpus)} documents from {sysconfig.get_paths()['stdlib']}")

    started = time.perf_counter()
    sequential = sum(count_words(document, args.sleep) for document in corpus)
    sequential_seconds = time.perf_counter() - started
    print(f"sequential:  {sequential} words in {sequential_seconds:.2f}s")

    with Client(timeout=30) as client:
        started = time.perf_counter()
        futures = [client.submit(count_words, document, args.sleep, pure=False) for document in corpus]
        distributed = client.submit(sum, futures).result()
        distributed_seconds = time.perf_counter() - started
        workers = len(client.scheduler_info()["workers"])
    print(f"distributed: {distributed} words in {distributed_seconds:.2f}s on {workers} workers")
    if distributed != sequential:
        print("the counts differ!", file=sys.stderr)
        return 1
    print("the counts agree")
    return 0


if __name__ == "__main__":
    sys.exit(main())
