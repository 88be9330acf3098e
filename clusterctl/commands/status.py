"""`clusterctl status`: the scheduler's own view, mapped onto the inventory; optionally the pids."""

from __future__ import annotations

import time
from collections.abc import Iterator

from clusterctl import scheduler_api, state
from clusterctl.commands._common import ClusterReport, ProcessRow, build_report
from clusterctl.errors import ClusterctlError, SchedulerUnreachableError
from clusterctl.fanout import fan_out
from clusterctl.hosts import connect
from clusterctl.state import ClusterState


def status(cluster: str | None = None, config: str | None = None, processes: bool = False) -> ClusterReport:
    name = state.resolve_name(cluster, config)
    st = state.load(name)
    if st is None:
        raise ClusterctlError(f"cluster {name!r} is not running (no state in {state.cluster_dir(name)})",
                              "start it with `clusterctl up CONFIG`")
    try:
        report = build_report(st, scheduler_api.query(st.scheduler_address, tls=st.client_tls()))
    except SchedulerUnreachableError as exc:
        report = build_report(st, None, error=exc.message)
    if processes:
        report.processes = check_processes(st)
    return report


def check_processes(st: ClusterState) -> list[ProcessRow]:
    """Every recorded pid, asked on its host: alive, dead, or the host could not be asked."""
    inventory = st.model()
    by_host: dict[str, list] = {}
    for record in st.processes:
        by_host.setdefault(record.host, []).append(record)
    rows: list[ProcessRow] = []
    with connect(inventory, list(by_host)) as hosts:
        outcomes = fan_out(by_host, lambda h: hosts[h].alive([vars(r) for r in by_host[h]]))
    for outcome in outcomes:
        for record in by_host[outcome.host]:
            alive = outcome.value.get(record.pid) if outcome.succeeded else None  # type: ignore[union-attr]
            rows.append(ProcessRow(record.role, record.name, record.host, record.pid, alive, record.log,
                                   note="" if outcome.succeeded else str(outcome.error)))
    return rows


def watch(cluster: str | None = None, config: str | None = None, processes: bool = False,
          interval: float = 2.0) -> Iterator[ClusterReport]:
    """A fresh report every ``interval`` seconds, until the caller stops iterating (Ctrl-C)."""
    while True:
        started = time.monotonic()
        yield status(cluster, config, processes)
        time.sleep(max(0.0, interval - (time.monotonic() - started)))
