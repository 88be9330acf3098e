"""Where elastic workers go and which leave: pure decisions over the inventory's `elastic:` section.

`scale`, `adapt` and `up` (which keeps `elastic.minimum`) ask here; nothing here touches a host.
A new worker group goes to the allowed host that runs the fewest workers (ties: the order of
`elastic.hosts`); removal takes the newest elastic workers first. The fixed `workers:` groups,
and workers added with `add-worker`, are never chosen for removal.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Protocol

from clusterctl.errors import ClusterctlError
from clusterctl.inventory import ElasticSpec, Inventory, WorkerGroup, select_hosts
from clusterctl.records import ProcessRecord


class Placed(Protocol):
    """A process that is, or will be, on a host: a ``ProcessRecord`` or a ``ProcessPlan``."""

    @property
    def host(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def worker_names(self) -> list[str]: ...


def spec_of(inventory: Inventory) -> ElasticSpec:
    if inventory.elastic is None:
        raise ClusterctlError(f"cluster {inventory.name!r} has no `elastic:` section: it cannot scale",
                              "add `elastic: {hosts: [...], worker: {...}, maximum: N}` to the inventory, "
                              "then run `clusterctl up CONFIG`")
    return inventory.elastic


def bounded(inventory: Inventory, n: int, fixed: int) -> int:
    """``n`` workers within `elastic.minimum`/`maximum`, and never below the workers scaling cannot remove."""
    spec = spec_of(inventory)
    n = max(n, spec.minimum, fixed)
    return n if spec.maximum is None else max(min(n, spec.maximum), fixed)


def fixed_workers(processes: Iterable[ProcessRecord]) -> int:
    """Workers scaling never removes: the inventory's groups and those `add-worker` added."""
    return sum(len(r.worker_names) for r in processes if r.role == "worker" and not r.elastic)


def additions(inventory: Inventory, present: list[Placed], workers: int) -> list[WorkerGroup]:
    """Worker groups that add at least ``workers`` workers, each on the least-loaded allowed host."""
    spec = spec_of(inventory)
    hosts = select_hosts(inventory, spec.hosts)
    load = {alias: 0 for alias in hosts}
    for process in present:
        if process.host in load:
            load[process.host] += len(process.worker_names)
    taken = {process.name for process in present} | {w for process in present for w in process.worker_names}
    template = spec.worker.model_dump(mode="json", exclude={"host", "name"})
    groups: list[WorkerGroup] = []
    index = 1
    for _ in range(math.ceil(workers / spec.worker.nworkers)):
        alias = min(hosts, key=lambda a: load[a])  # min() keeps the first of equals: the pool's order
        while f"{spec.worker.name}-{index}" in taken or any(
                w.startswith(f"{spec.worker.name}-{index}-") for w in taken):
            index += 1
        group = WorkerGroup.model_validate({**template, "host": alias, "name": f"{spec.worker.name}-{index}",
                                            "group": spec.worker.name})
        taken.update([group.name or "", *group.worker_names()])
        load[alias] += group.nworkers
        groups.append(group)
    return groups


def removals(processes: list[ProcessRecord], workers: int) -> set[str]:
    """The names of ``workers`` elastic workers to retire, newest first."""
    chosen: list[str] = []
    for record in reversed(processes):
        if record.role == "worker" and record.elastic:
            chosen += list(reversed(record.worker_names))[:workers - len(chosen)]
        if len(chosen) >= workers:
            break
    return set(chosen)


def elastic_names(processes: Iterable[ProcessRecord]) -> set[str]:
    return {w for r in processes if r.role == "worker" and r.elastic for w in r.worker_names}
