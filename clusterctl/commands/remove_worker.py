"""`clusterctl remove-worker NAME|ADDRESS...`: retire workers gracefully, then stop their processes.

A target is a worker name (`gpu2-0`), a worker group's process name (`gpu2`: all its workers) or
a worker address (`tcp://10.0.0.2:40123`). Retiring moves the workers' results to other workers
first. A `dask worker` process is stopped once none of its workers is left.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from clusterctl import lifecycle, scheduler_api, state
from clusterctl.errors import ClusterctlError, ForeignSchedulerError, InvalidInputError, SchedulerUnreachableError
from clusterctl.progress import PasswordPrompt, Progress
from clusterctl.records import ProcessRecord, StoppedProcess


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
        result.stopped, result.retire_note = lifecycle.retire_and_stop(
            st, workers, view is not None, progress, password_prompt)
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
