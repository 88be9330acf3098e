"""The registry of beds under /run (``Testbed.save`` writes a record per bed there), and the pruning of
beds whose owning process died without removing them (SIGKILL, a hard timeout)."""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator

from testbed.errors import TestbedError
from testbed.model import REGISTRY_DIR, Testbed


@contextlib.contextmanager
def registry_lock() -> Iterator[None]:
    """Held while a bed picks its id and subnet, and while stale beds are pruned."""
    REGISTRY_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(REGISTRY_DIR / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def registered_beds() -> list[Testbed]:
    """Every bed recorded in the registry (any owner)."""
    beds = []
    for path in sorted(REGISTRY_DIR.glob("*.json")):
        with contextlib.suppress(OSError, ValueError, KeyError):
            beds.append(Testbed.load(path))
    return beds


def prune_stale_beds() -> list[str]:
    """Destroy the beds whose owning process has died; their ids. One bed's failure does not stop the others."""
    pruned, problems = [], []
    with registry_lock():
        for bed in registered_beds():
            if bed.is_stale():
                try:
                    bed.destroy()
                    pruned.append(bed.bed_id)
                except TestbedError as exc:
                    problems.append(str(exc))
    if problems:
        raise TestbedError("; ".join(problems))
    return pruned
