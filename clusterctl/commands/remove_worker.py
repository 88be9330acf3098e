"""`clusterctl remove-worker NAME|ADDRESS...`: retire workers gracefully, then stop their processes.

A target is a worker name (`gpu2-0`), a worker group's process name (`gpu2`: all its workers) or
a worker address (`tcp://10.0.0.2:40123`). Retiring moves the workers' results to other workers
first. A `dask worker` process is stopped once none of its workers is left.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from clusterctl import lifecycle, scheduler_api, state
from clusterctl.errors import ClusterctlError, ForeignSchedulerError, InvalidInputError, SchedulerUnreachableError
from clusterctl.group import connect
from clusterctl.progress import PasswordPrompt, Progress
from clusterctl.records import ProcessRecord, StoppedProcess
from clusterctl.timing import DOWN_GRACE


@dataclass
class RemoveResult:
    cluster: str
    removed: list[str] = field(default_factory=list)  # worker names
    stopped: list[StoppedProcess] = field(default_factory=list)
    retire_note: str | None = None


def remove_worker(progress: Progress, targets: list[str], cluster: str | None = None,
                  config: str | None = None, password_prompt: PasswordPrompt | None = None) -> RemoveResult:
    name = state.resolve_name(cluster, config)
    with state.locked(name):
        st = state.load(name)
        if st is None:
            raise ClusterctlError(f"cluster {name!r} is not running", "start it with `clusterctl up CONFIG`")
        try:
            view = scheduler_api.query(st.scheduler_address, tls=st.client_tls(), expect=st.expected_scheduler_id())
            by_address = {w.address: w.name for w in view.workers}
        except (SchedulerUnreachableError, ForeignSchedulerError):  # another cluster's workers are never retired
            view, by_address = None, {}
        workers = _resolve(st.processes, targets, by_address)
        result = RemoveResult(name, removed=sorted(workers))
        if view is not None:
            progress.step(f"retiring {', '.join(sorted(workers))} (moving their data to other workers)")
            try:
                scheduler_api.retire(st.scheduler_address, sorted(workers), st.expected_scheduler_id(),
                                     tls=st.client_tls())
            except (SchedulerUnreachableError, ForeignSchedulerError) as exc:
                result.retire_note = exc.message
        else:
            result.retire_note = f"scheduler at {st.scheduler_address} does not answer: stopped without retiring"
        emptied = [r for r in st.processes if r.role == "worker" and r.worker_names
                   and set(r.worker_names) <= workers]
        if emptied:
            progress.step(f"stopping {len(emptied)} process(es)")
            with connect(st.inventory, [r.host for r in emptied], password_prompt) as hosts:
                gone = lifecycle.verified_gone(lifecycle.stop_records(hosts, emptied, DOWN_GRACE))
            progress.done()
            result.stopped = [StoppedProcess(r.host, r.name, r.pid) for r in emptied if (r.host, r.pid) in gone]
            stuck = [r for r in emptied if (r.host, r.pid) not in gone]
        else:
            stuck = []
        for record in st.processes:
            if record not in stuck:
                record.worker_names = [w for w in record.worker_names if w not in workers]
        st.processes = [r for r in st.processes if r.role != "worker" or r.worker_names or r in stuck]
        state.save(st)
        if stuck:
            failures = ", ".join(f"{r.host}: {r.name} (pid {r.pid})" for r in stuck)
            raise ClusterctlError(f"could not verify that {failures} stopped",
                                  "check the host, then run `clusterctl remove-worker` again")
        return result


def _resolve(records: list[ProcessRecord], targets: list[str], by_address: dict[str, str]) -> set[str]:
    """Targets -> worker names; an unknown target is an error that lists the known names."""
    workers: set[str] = set()
    for target in targets:
        group = next((r for r in records if r.role == "worker" and r.name == target), None)
        if group is not None:
            workers.update(group.worker_names)
        elif any(target in r.worker_names for r in records):
            workers.add(target)
        elif target in by_address:
            workers.add(by_address[target])
        else:
            known = sorted({w for r in records for w in r.worker_names})
            raise InvalidInputError(f"no worker named {target!r} in this cluster",
                                    f"known workers: {', '.join(known) or 'none'}; see `clusterctl status`")
    return workers
