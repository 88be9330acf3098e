"""`--limit PATTERN`: which hosts of a cluster a command acts on (`up`, `down`, `check`, `status`,
`logs`, `exec`).

A pattern is resolved by ``inventory.select_hosts`` (an alias, a glob over the aliases, and whatever
host syntax the inventory offers) and may also glob over hosts that only the state knows (a worker
added with `add-worker --host ADDRESS`). A pattern that names no host of the cluster is an error,
never an empty selection.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable

from clusterctl.errors import ClusterctlError, InvalidInputError
from clusterctl.inventory import Inventory, select_hosts


def cluster_hosts(inventory: Inventory, recorded: Iterable[str] = ()) -> list[str]:
    """Every host of the cluster: the inventory's, those its processes use, those processes were added on."""
    used = [inventory.scheduler.host, *(group.host for group in inventory.workers)]
    return list(dict.fromkeys([*inventory.hosts, *used, *recorded]))


def limit_hosts(inventory: Inventory, hosts: list[str], patterns: Iterable[str]) -> list[str]:
    """The hosts of ``hosts`` that any pattern names, in the order of ``hosts``; all of them without patterns.

    Raises ``InvalidInputError`` (exit 2) naming the first pattern that names none of them.
    """
    patterns = list(patterns)
    if not patterns:
        return list(hosts)
    chosen: set[str] = set()
    for pattern in patterns:
        try:
            named = set(select_hosts(inventory, [pattern]))
        except ClusterctlError:  # e.g. an unknown group: named below as a pattern that matches nothing
            named = set()
        matched = [alias for alias in hosts if alias in named or fnmatch.fnmatchcase(alias, pattern)]
        if not matched:
            raise InvalidInputError(f"--limit {pattern!r} matches no host of the cluster",
                                    f"hosts of cluster {inventory.name}: {', '.join(hosts)}")
        chosen.update(matched)
    return [alias for alias in hosts if alias in chosen]
