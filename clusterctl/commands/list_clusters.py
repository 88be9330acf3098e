"""`clusterctl list`: every cluster recorded under $CLUSTERCTL_HOME, and whether it still runs.

Each cluster's scheduler is asked once (all clusters at once). When it does not answer, the
recorded pids are checked on their hosts, so a cluster whose processes are all gone is shown as
such, with the command that forgets it.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from clusterctl import scheduler_api, state, supervisor
from clusterctl.errors import ClusterctlError
from clusterctl.group import connect
from clusterctl.report import JSON_SCHEMA_VERSION

QUERY_TIMEOUT = 5.0  # per scheduler, all at once: a busy scheduler still answers within it


@dataclass
class ClusterSummary:
    name: str
    scheduler_address: str | None
    answers: bool
    workers_present: int
    workers_expected: int
    age_seconds: float | None  # since the scheduler started, else since the state was last written
    state: str  # running | degraded | scheduler down | gone | unreadable
    note: str | None = None  # what is wrong, and the command that fixes it
    adaptive: bool = False  # a `clusterctl adapt` supervisor runs for it

    def document(self) -> dict[str, Any]:
        return {"name": self.name, "scheduler_address": self.scheduler_address, "answers": self.answers,
                "workers": {"present": self.workers_present, "expected": self.workers_expected},
                "age_seconds": None if self.age_seconds is None else round(self.age_seconds, 1),
                "state": self.state, "note": self.note, "adaptive": self.adaptive}


@dataclass
class ListResult:
    current: str | None
    clusters: list[ClusterSummary] = field(default_factory=list)

    def document(self) -> dict[str, Any]:
        return {"schema": JSON_SCHEMA_VERSION, "current": self.current,
                "clusters": [summary.document() for summary in self.clusters]}


def list_clusters() -> ListResult:
    names = state.known_clusters()
    with ThreadPoolExecutor(max_workers=min(16, len(names) or 1)) as pool:
        return ListResult(state.current(), list(pool.map(_summary, names)))


def _summary(name: str) -> ClusterSummary:
    summary = _look(name)
    try:
        st = state.load(name)
    except ClusterctlError:
        return summary
    summary.adaptive = bool(st and st.supervisor and supervisor.alive(st.supervisor))
    return summary


def _look(name: str) -> ClusterSummary:
    path = state.cluster_dir(name) / "state.json"
    try:
        st = state.load(name)
    except ClusterctlError as exc:
        return ClusterSummary(name, None, False, 0, 0, None, "unreadable", f"{exc.message}; {exc.hint}")
    if st is None:  # removed while we looked
        return ClusterSummary(name, None, False, 0, 0, None, "gone")
    expected = set(st.expected_workers())
    written = time.time() - path.stat().st_mtime if path.exists() else None
    try:
        view = scheduler_api.query(st.scheduler_address, timeout=QUERY_TIMEOUT, tls=st.client_tls(),
                                   expect=st.expected_scheduler_id())
    except ClusterctlError:
        view = None
    if view is not None:
        present = len(view.names() & expected)
        age = time.time() - view.started if view.started else written
        degraded = present < len(expected)
        return ClusterSummary(name, st.scheduler_address, True, present, len(expected), age,
                              "degraded" if degraded else "running",
                              f"{len(expected) - present} worker(s) missing: run `clusterctl up` or "
                              f"`clusterctl status --cluster {name}`" if degraded else None)
    with connect(st.inventory, [r.host for r in st.processes]) as hosts:
        asked = hosts.run_each(st.processes, lambda host, mine: host.alive(mine))
    unknown = asked.failed
    alive = [r for r in st.processes if r.host not in unknown and asked.succeeded[r.host].get(r.pid)]
    if not alive and not unknown:
        return ClusterSummary(name, st.scheduler_address, False, 0, len(expected), written, "gone",
                              f"its processes are gone; forget it with `clusterctl down --cluster {name}`")
    note = f"the scheduler does not answer; restart it with `clusterctl up {st.config_path or 'CONFIG'}`"
    if unknown:
        note += f" (could not check {', '.join(sorted(unknown))})"
    return ClusterSummary(name, st.scheduler_address, False, 0, len(expected), written, "scheduler down", note)
