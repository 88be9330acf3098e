"""What should run where: the inventory -> one ``ProcessPlan`` per process, with its argv.

Pure functions, no I/O. The only place that knows the command lines of ``dask scheduler`` and
``dask worker``. Command lines are lists; they cross a shell only inside the SSH transport.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from clusterctl.errors import HostError
from clusterctl.inventory import Inventory, WorkerGroup, dask_config_env, format_resources
from clusterctl.records import Gpu
from clusterctl.tls import TlsFiles, remote_files

SCHEDULER_MODULE = "distributed.cli.dask_scheduler"
WORKER_MODULE = "distributed.cli.dask_worker"
SCHEDULER_NAME = "scheduler"


@dataclass(frozen=True)
class ProcessPlan:
    """One process to start: a scheduler, or one `dask worker` invocation (a worker group)."""

    role: Literal["scheduler", "worker"]
    name: str  # unique in the cluster; also names the log and pid files
    host: str  # inventory alias or bare address
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    setup: list[str] = field(default_factory=list)  # the process's own setup lines (host's run first)
    worker_names: list[str] = field(default_factory=list)  # what the scheduler will report
    group: str | None = None  # the inventory's worker group it belongs to (several hosts: one plan per host)
    gpu: Gpu | None = None  # a per-GPU worker's GPU


@dataclass(frozen=True)
class SchedulerEndpoint:
    """Where the scheduler listens, resolved once: the host part stays a host, never parsed back."""

    listen_host: str
    port: int
    protocol: Literal["tcp", "tls"] = "tcp"

    @property
    def address(self) -> str:
        host = f"[{self.listen_host}]" if ":" in self.listen_host else self.listen_host
        return f"{self.protocol}://{host}:{self.port}"


def scheduler_address(listen_host: str, port: int, protocol: Literal["tcp", "tls"] = "tcp") -> str:
    return SchedulerEndpoint(listen_host, port, protocol).address


def new_scheduler_id(cluster: str) -> str:
    """The identity a cluster's scheduler carries (its distributed id): ``clusterctl:<cluster>:<token>``."""
    return f"clusterctl:{cluster}:{secrets.token_hex(8)}"


def scheduler_id_prefix(cluster: str) -> str:
    """What every scheduler of ``cluster`` answers with, whatever its token: for a `down` without state."""
    return f"clusterctl:{cluster}:"


def identity_preload(scheduler_id: str) -> str:
    """A `--preload` script (distributed runs text with spaces as a module) that gives the scheduler
    its id. It runs right after the scheduler binds, before it handles any request."""
    return f"def dask_setup(scheduler):\n    scheduler.id = {json.dumps(scheduler_id)}\n"


def _tls_argv(files: TlsFiles | None) -> list[str]:
    if files is None:
        return []
    return ["--tls-ca-file", files.ca_file, "--tls-cert", files.cert, "--tls-key", files.key]


def scheduler_argv(python: str, listen_host: str, port: int, dashboard_address: str | None,
                   tls: TlsFiles | None = None, scheduler_id: str | None = None, preload: list[str] | None = None,
                   idle_timeout: str | None = None) -> list[str]:
    argv = [python, "-m", SCHEDULER_MODULE, "--host", listen_host, "--port", str(port)]
    if scheduler_id is not None:
        argv += ["--preload", identity_preload(scheduler_id)]
    for module in preload or []:
        argv += ["--preload", module]
    if idle_timeout is not None:
        argv += ["--idle-timeout", idle_timeout]
    if tls is not None:
        argv += ["--protocol", "tls", *_tls_argv(tls)]
    if dashboard_address is None:
        argv.append("--no-dashboard")
    else:
        argv += ["--dashboard-address", dashboard_address]
    return argv


def worker_argv(python: str, scheduler: str, group: WorkerGroup, tls: TlsFiles | None = None,
                options: dict[str, Any] | None = None) -> list[str]:
    """``options``: the worker options of every level, merged (``Inventory.worker_options``)."""
    assert group.name is not None
    argv = [python, "-m", WORKER_MODULE, scheduler, "--name", group.name,
            "--nworkers", str(group.nworkers), "--nthreads", str(group.nthreads), *_tls_argv(tls)]
    if group.memory_limit is not None:
        argv += ["--memory-limit", group.memory_limit]
    if group.resources:
        argv += ["--resources", format_resources(group.resources)]
    argv.append("--dashboard" if group.dashboard else "--no-dashboard")
    argv.append("--nanny" if group.nanny else "--no-nanny")
    return argv + option_argv(options if options is not None else group.worker_options())


WORKER_FLAGS = {"worker_class": "--worker-class", "local_directory": "--local-directory", "lifetime": "--lifetime",
                "lifetime_stagger": "--lifetime-stagger", "death_timeout": "--death-timeout",
                "worker_port": "--worker-port", "nanny_port": "--nanny-port", "interface": "--interface"}


def option_argv(options: dict[str, Any]) -> list[str]:
    """`dask worker` flags for the inventory's worker options, each value its own argv element."""
    argv: list[str] = []
    for key, flag in WORKER_FLAGS.items():
        if options.get(key) is not None:
            argv += [flag, str(options[key])]
    for module in options.get("preload") or []:
        argv += ["--preload", module]
    if options.get("lifetime_restart") is not None:
        argv.append("--lifetime-restart" if options["lifetime_restart"] else "--no-lifetime-restart")
    return argv


def plan_scheduler(inventory: Inventory, endpoint: SchedulerEndpoint, tls_dirs: dict[str, str] | None = None,
                   scheduler_id: str | None = None) -> ProcessPlan:
    """``tls_dirs``: each host's run directory, where `up` puts its TLS files; None when TLS is off."""
    spec = inventory.scheduler
    settings = inventory.process_settings(spec.host, spec)
    assert settings.python is not None
    tls = remote_files(tls_dirs[spec.host], "scheduler") if tls_dirs is not None else None
    return ProcessPlan(
        role="scheduler",
        name=SCHEDULER_NAME,
        host=spec.host,
        argv=scheduler_argv(settings.python, endpoint.listen_host, endpoint.port, spec.dashboard_bind(), tls,
                            scheduler_id, spec.preload, spec.idle_timeout),
        env={**dask_config_env(settings.dask_config), **settings.env},
        setup=list(spec.setup),
    )


def plan_worker_group(inventory: Inventory, group: WorkerGroup, scheduler: str,
                      tls_dirs: dict[str, str] | None = None) -> ProcessPlan:
    settings = inventory.process_settings(group.host, group)
    assert settings.python is not None and group.name is not None
    tls = remote_files(tls_dirs[group.host], "worker") if tls_dirs is not None else None
    return ProcessPlan(
        role="worker",
        name=group.name,
        host=group.host,
        argv=worker_argv(settings.python, scheduler, group, tls, inventory.worker_options(group)),
        env={**dask_config_env(settings.dask_config), **settings.env},
        setup=list(group.setup),
        worker_names=group.worker_names(),
        group=group.group or group.name,
    )


def plan_worker_processes(inventory: Inventory, group: WorkerGroup, scheduler: str,
                          tls_dirs: dict[str, str] | None = None, gpus: list[Gpu] | None = None) -> list[ProcessPlan]:
    """A worker group's processes: one, or with ``gpus:`` one per GPU of ``gpus`` (its host's, as
    detected), each planned from its own group (see ``per_gpu_groups``)."""
    return [replace(plan_worker_group(inventory, one, scheduler, tls_dirs), gpu=gpu)
            for one, gpu in per_gpu_groups(group, gpus)]


def per_gpu_groups(group: WorkerGroup, gpus: list[Gpu] | None) -> list[tuple[WorkerGroup, Gpu | None]]:
    """``group`` itself without ``gpus:``; with it, one group per chosen GPU: named ``<group>-gpu<index>``,
    one worker, ``GPU=1``, its ``CUDA_VISIBLE_DEVICES`` listing its GPU first and the others after it
    (dask-cuda's rotation). A whole process is in that group, so `up` can plan it again from it alone."""
    if group.gpus is None:
        return [(group, None)]
    chosen = chosen_gpus(group, gpus)
    ones: list[tuple[WorkerGroup, Gpu | None]] = []
    for position, gpu in enumerate(chosen):
        rotation = [*chosen[position:], *chosen[:position]]
        ones.append((group.model_copy(update={
            "name": f"{group.name}-gpu{gpu.index}", "nworkers": 1, "gpus": None, "group": group.group or group.name,
            "resources": {**group.resources, "GPU": 1.0},
            "env": {**group.env, "CUDA_VISIBLE_DEVICES": ",".join(str(g.index) for g in rotation)}}), gpu))
    return ones


def chosen_gpus(group: WorkerGroup, found: list[Gpu] | None) -> list[Gpu]:
    """The GPUs ``gpus:`` selects of those found on the group's host (None: not asked, as in a dry run)."""
    if found is None:
        if group.gpus == "auto":
            raise ValueError("gpus: auto needs the host's GPUs")
        indices = list(range(group.gpus)) if isinstance(group.gpus, int) else list(group.gpus or [])
        return [Gpu(index, "", "", None) for index in indices]
    fix = "set `gpus:` to auto, or to indices nvidia-smi lists there"
    if group.gpus == "auto":
        return list(found)
    if isinstance(group.gpus, int):
        if group.gpus > len(found):
            raise HostError(group.host, f"gpus: {group.gpus}, but nvidia-smi lists {len(found)} GPU(s)", fix)
        return list(found[:group.gpus])
    by_index = {gpu.index: gpu for gpu in found}
    missing = [index for index in group.gpus or [] if index not in by_index]
    if missing:
        raise HostError(group.host, f"GPU {missing[0]} of `gpus:` is not among those nvidia-smi lists "
                        f"({', '.join(str(g.index) for g in found)})", fix)
    return [by_index[index] for index in group.gpus or []]


def plan_cluster(inventory: Inventory, endpoint: SchedulerEndpoint,
                 tls_dirs: dict[str, str] | None = None, scheduler_id: str | None = None,
                 gpus: dict[str, list[Gpu]] | None = None) -> list[ProcessPlan]:
    """The scheduler first, then every worker group's processes, in inventory order.

    ``gpus``: each host's GPUs as the preflight found them. Without it (a dry run) a group with
    ``gpus: auto`` is left out: ``gpu_groups_unplanned`` names them.
    """
    plans = [plan_scheduler(inventory, endpoint, tls_dirs, scheduler_id)]
    for group in inventory.workers:
        if group.gpus == "auto" and (gpus is None or group.host not in gpus):
            continue
        found = None if gpus is None else gpus.get(group.host)
        plans += plan_worker_processes(inventory, group, endpoint.address, tls_dirs, found)
    return plans


def gpu_groups_unplanned(inventory: Inventory, gpus: dict[str, list[Gpu]] | None) -> list[WorkerGroup]:
    """The ``gpus: auto`` groups ``plan_cluster`` could not plan without the hosts' GPUs."""
    return [group for group in inventory.workers
            if group.gpus == "auto" and (gpus is None or group.host not in gpus)]
