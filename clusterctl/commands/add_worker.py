"""`clusterctl add-worker`: grow a running cluster by one `dask worker` invocation (with ``--gpus``,
one per GPU of the host, exactly as a worker group with `gpus:` would)."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from clusterctl import lifecycle, scheduler_api, state
from clusterctl.errors import ClusterctlError, InvalidInputError, SchedulerUnreachableError
from clusterctl.group import connect
from clusterctl.inventory import LOCAL_HOST, WorkerGroup, is_valid_address
from clusterctl.launch import per_gpu_groups, plan_worker_processes
from clusterctl.preflight import gpu_probes, preflight
from clusterctl.progress import PasswordPrompt, Progress
from clusterctl.report import ClusterReport, build_report
from clusterctl.state import ClusterState
from clusterctl.timing import WORKER_TIMEOUT


def add_worker(progress: Progress, cluster: str | None = None, config: str | None = None, host: str | None = None,
               nworkers: int = 1, nthreads: int = 1, memory_limit: str | None = None,
               resources: str | None = None, name: str | None = None, timeout: float = WORKER_TIMEOUT,
               allow_version_mismatch: bool = False, password_prompt: PasswordPrompt | None = None,
               gpus: str | None = None) -> ClusterReport:
    cluster_name = state.resolve_name(cluster, config)
    with state.locked(cluster_name):
        st = state.load(cluster_name)
        if st is None:
            raise ClusterctlError(f"cluster {cluster_name!r} is not running", "start it with `clusterctl up CONFIG`")
        inventory = st.inventory
        alias = host or LOCAL_HOST
        if alias == LOCAL_HOST:
            # The inventory's own name for this machine (`me`), so that names and rows say `me`.
            alias = next((a for a in inventory.hosts if inventory.host(a).connection == "local"), LOCAL_HOST)
        if alias not in inventory.hosts and alias != LOCAL_HOST and not is_valid_address(alias):
            known = ", ".join(sorted(inventory.hosts)) or "none"
            raise InvalidInputError(f"--host {alias!r} is neither an alias from the inventory (known: {known}) "
                                    "nor a hostname or IP address")
        spec: dict[str, Any] = {"host": alias, "name": name or _next_name(st, alias), "nworkers": nworkers,
                                "nthreads": nthreads, "memory_limit": memory_limit, "resources": resources,
                                "gpus": _gpus(gpus)}
        group = _validate(spec)
        if group.gpus is not None and nworkers != 1:
            raise InvalidInputError("--nworkers: with --gpus each GPU gets one worker process",
                                    "leave --nworkers out, or choose the GPUs with --gpus")
        _refuse_taken_names(st, [group.name, *group.worker_names()])
        try:  # a worker must never join another cluster's scheduler that holds our address
            scheduler_api.query(st.scheduler_address, timeout=3.0, tls=st.client_tls(),
                                expect=st.expected_scheduler_id())
        except SchedulerUnreachableError:
            pass  # waiting for the worker says so, with the scheduler's log
        outside = alias not in inventory.hosts and alias != LOCAL_HOST  # a bare address
        scheduler_host = inventory.scheduler.host
        with connect(inventory, [alias, *([scheduler_host] if outside else [])], password_prompt) as hosts:
            progress.step(f"checking {alias}")
            found = preflight(hosts, scheduler_host, allow_version_mismatch, reference=st.versions or None,
                              gpu_probes=gpu_probes(inventory, [group]), gpu_option="--gpus").gpus.get(alias)
            plans = plan_worker_processes(inventory, group, st.scheduler_address, lifecycle.tls_dirs(hosts, st.tls),
                                          found)
            worker_names = [name for plan in plans for name in plan.worker_names]
            if group.gpus is not None:  # the names are known only now that the GPUs are
                _refuse_taken_names(st, [*(plan.name for plan in plans), *worker_names])
            if st.tls:
                lifecycle.upload_tls(hosts[alias], state.tls_dir(st.name), {"worker"})
            if outside:  # before the start: a `down CONFIG` without state must find this host even then
                hosts[scheduler_host].note_elsewhere(alias)
            # Each process is recorded with the group it was planned from, for `up` to start it again.
            added = {one.name: one.model_dump(mode="json") for one, _ in per_gpu_groups(group, found)
                     if one.name is not None}
            view, _ = lifecycle.start_and_wait(st, hosts, plans, worker_names, timeout, progress, added=added)
    report = build_report(st, view)
    report.started = [plan.name for plan in plans]
    report.headline = f"added {', '.join(worker_names)} on {alias}"
    return report


def _refuse_taken_names(st: ClusterState, names: list[str | None]) -> None:
    taken = {r.name for r in st.processes} | set(st.expected_workers())
    clash = [n for n in names if n in taken]
    if clash:
        raise InvalidInputError(f"--name: worker name {clash[0]!r} is already used in cluster {st.name!r}",
                                "choose another --name, or leave it out for a generated one")


def _gpus(value: str | None) -> str | int | list[int] | None:
    """--gpus as `gpus:` takes it: auto, a count (2), or indices (0,2 or a single index followed by a comma)."""
    if value is None or value == "auto":
        return value
    parts = [part.strip() for part in value.split(",")]
    if not all(part.isascii() and part.isdigit() for part in parts if part) or not any(parts):
        raise InvalidInputError(f"--gpus: expected auto, a count like 2, or indices like 0,2; got {value!r}")
    if "," not in value:
        return int(value)
    return [int(part) for part in parts if part]


def _next_name(st: ClusterState, alias: str) -> str:
    taken = {r.name for r in st.processes}
    index = 1
    while f"{alias}-add{index}" in taken:
        index += 1
    return f"{alias}-add{index}"


def _validate(spec: dict[str, Any]) -> WorkerGroup:
    options = {"name": "--name", "host": "--host", "nworkers": "--nworkers", "nthreads": "--nthreads",
               "memory_limit": "--memory-limit", "resources": "--resources", "gpus": "--gpus"}
    try:
        return WorkerGroup.model_validate(spec)
    except ValidationError as exc:
        error = exc.errors()[0]
        option = options.get(str(error["loc"][0]) if error["loc"] else "", "option")
        raise InvalidInputError(f"{option}: {str(error['msg']).removeprefix('Value error, ')}") from None
