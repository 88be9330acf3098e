"""`clusterctl down`: retire through the scheduler, stop every recorded pid, verify, forget."""

from __future__ import annotations

from dataclasses import dataclass, field

from clusterctl import scheduler_api, state
from clusterctl.commands._common import Progress, stop_records
from clusterctl.errors import ClusterctlError, SchedulerUnreachableError
from clusterctl.hosts import connect

DEFAULT_GRACE = 10.0


@dataclass
class DownResult:
    cluster: str
    stopped: list[str] = field(default_factory=list)  # "<host>: <name> (pid N)"
    already_gone: bool = False
    scheduler_note: str | None = None


class DownIncompleteError(ClusterctlError):
    pass


def down(progress: Progress, cluster: str | None = None, config: str | None = None,
         grace: float = DEFAULT_GRACE) -> DownResult:
    if cluster is None and config is None and state.current() is None:
        return DownResult("(none)", already_gone=True)  # nothing is current: down is harmless
    name = state.resolve_name(cluster, config)
    with state.locked(name):
        st = state.load(name)
        if st is None:
            return DownResult(name, already_gone=True)
        result = DownResult(name)
        progress.step(f"retiring workers and closing the scheduler at {st.scheduler_address}")
        try:
            scheduler_api.retire_and_close(st.scheduler_address)
        except SchedulerUnreachableError as exc:
            result.scheduler_note = exc.message  # stopping by pid below still cleans up
        inventory = st.model()
        progress.step(f"stopping {len(st.processes)} process(es) and verifying they are gone")
        with connect(inventory, [r.host for r in st.processes]) as hosts:
            outcomes = stop_records(hosts, st.processes, grace)
        progress.done()
        gone = {(o.host, pid) for o in outcomes if o.succeeded for pid, ok in o.value.items() if ok}  # type: ignore[union-attr]
        result.stopped = [f"{r.host}: {r.name} (pid {r.pid})" for r in st.processes if (r.host, r.pid) in gone]
        left = [r for r in st.processes if (r.host, r.pid) not in gone]
        if not left:
            state.remove(name)
            return result
        st.processes = left
        state.save(st)
        failures = {o.host: o.error for o in outcomes if not o.succeeded}
        reasons = "; ".join(
            f"{r.host}: {r.name} (pid {r.pid}) " + (f"not verified: {failures[r.host].reason}"  # type: ignore[union-attr]
                                                    if r.host in failures else "still running after SIGKILL")
            for r in left)
        raise DownIncompleteError(f"down incomplete: {reasons}",
                                  "fix the host, then run `clusterctl down` again; it stops what is left")
