"""Scaling a running cluster with the inventory's `elastic:` section (the Python API's `scale`, and `adapt`).

``scale(n)`` counts every worker of the cluster: it starts elastic worker groups on the
least-loaded allowed hosts, or retires elastic workers through the scheduler (their data moves
first), stops their processes and verifies them gone. Fixed groups are never removed. Added
workers are ordinary recorded processes: `status`, `down` and `up` see them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from clusterctl import elastic, lifecycle, scheduler_api, state
from clusterctl.errors import ClusterctlError, InvalidInputError, SchedulerUnreachableError
from clusterctl.group import connect
from clusterctl.launch import plan_worker_group
from clusterctl.progress import PasswordPrompt, Progress
from clusterctl.state import ClusterState
from clusterctl.timing import WORKER_TIMEOUT


@dataclass
class ScaleResult:
    cluster: str
    target: int  # the workers asked for, within elastic.minimum/maximum and the fixed workers
    before: int
    after: int
    added: list[str] = field(default_factory=list)  # worker names
    removed: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)  # "<host>: <process> (pid N)"
    note: str | None = None


def scale(progress: Progress, n: int, cluster: str | None = None, config: str | None = None,
          timeout: float = WORKER_TIMEOUT, password_prompt: PasswordPrompt | None = None) -> ScaleResult:
    """Bring the cluster to ``n`` workers (bounded by `elastic.minimum`/`maximum`)."""
    if n < 0:
        raise InvalidInputError(f"cannot scale to {n} workers")
    name = state.resolve_name(cluster, config)
    with state.locked(name):
        st = _load(name)
        before = len(st.expected_workers())
        target = elastic.bounded(st.inventory, n, elastic.fixed_workers(st.processes))
        result = ScaleResult(name, target, before, before)
        if target > before:
            result.added = _add(st, target - before, timeout, progress, password_prompt)
        elif target < before:
            workers = elastic.removals(st.processes, before - target)
            result.removed = sorted(workers)
            result.stopped, result.note = _remove(st, workers, progress, password_prompt)
        result.after = len(st.expected_workers())
        return result


def scale_down(progress: Progress, workers: list[str], cluster: str | None = None,
               password_prompt: PasswordPrompt | None = None) -> ScaleResult:
    """Retire and stop the named workers, if they are elastic (others are left alone), not below the minimum."""
    name = state.resolve_name(cluster, None)
    with state.locked(name):
        st = _load(name)
        before = len(st.expected_workers())
        spec = elastic.spec_of(st.inventory)
        chosen = sorted(set(workers) & elastic.elastic_names(st.processes))[:max(0, before - spec.minimum)]
        result = ScaleResult(name, before - len(chosen), before, before, removed=chosen)
        if chosen:
            result.stopped, result.note = _remove(st, set(chosen), progress, password_prompt)
        result.after = len(st.expected_workers())
        return result


def _load(name: str) -> ClusterState:
    st = state.load(name)
    if st is None:
        raise ClusterctlError(f"cluster {name!r} is not running", "start it with `clusterctl up CONFIG`")
    return st


def _add(st: ClusterState, workers: int, timeout: float, progress: Progress,
         password_prompt: PasswordPrompt | None) -> list[str]:
    groups = elastic.additions(st.inventory, list(st.processes), workers)
    names = [w for group in groups for w in group.worker_names()]
    with connect(st.inventory, [group.host for group in groups], password_prompt) as hosts:
        run_dirs = lifecycle.tls_dirs(hosts, st.tls)
        plans = [plan_worker_group(st.inventory, group, st.scheduler_address, run_dirs) for group in groups]
        specs = {group.name or "": group.model_dump(mode="json") for group in groups}
        _, started = lifecycle.start_and_wait(st, hosts, plans, names, timeout, progress, added=specs)
    for record in started:
        record.elastic = True
    state.save(st)
    return names


def _remove(st: ClusterState, workers: set[str], progress: Progress,
            password_prompt: PasswordPrompt | None) -> tuple[list[str], str | None]:
    try:
        scheduler_api.query(st.scheduler_address, timeout=3.0, tls=st.client_tls(), expect=st.expected_scheduler_id())
        answers = True
    except SchedulerUnreachableError:
        answers = False
    stopped, note = lifecycle.retire_and_stop(st, workers, answers, progress, password_prompt, retry="clusterctl down")
    return [f"{p.host}: {p.name} (pid {p.pid})" for p in stopped], note
