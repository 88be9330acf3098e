"""What should run where: the inventory -> one ``ProcessPlan`` per process, with its argv.

Pure functions, no I/O. The only place that knows the command lines of ``dask scheduler`` and
``dask worker``. Command lines are lists; they cross a shell only inside the SSH transport.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Literal

from clusterctl.inventory import Inventory, WorkerGroup, format_resources
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
                   tls: TlsFiles | None = None, scheduler_id: str | None = None) -> list[str]:
    argv = [python, "-m", SCHEDULER_MODULE, "--host", listen_host, "--port", str(port)]
    if scheduler_id is not None:
        argv += ["--preload", identity_preload(scheduler_id)]
    if tls is not None:
        argv += ["--protocol", "tls", *_tls_argv(tls)]
    if dashboard_address is None:
        argv.append("--no-dashboard")
    else:
        argv += ["--dashboard-address", dashboard_address]
    return argv


def worker_argv(python: str, scheduler: str, group: WorkerGroup, tls: TlsFiles | None = None) -> list[str]:
    assert group.name is not None
    argv = [python, "-m", WORKER_MODULE, scheduler, "--name", group.name,
            "--nworkers", str(group.nworkers), "--nthreads", str(group.nthreads), *_tls_argv(tls)]
    if group.memory_limit is not None:
        argv += ["--memory-limit", group.memory_limit]
    if group.resources:
        argv += ["--resources", format_resources(group.resources)]
    argv.append("--dashboard" if group.dashboard else "--no-dashboard")
    argv.append("--nanny" if group.nanny else "--no-nanny")
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
                            scheduler_id),
        env=settings.env,
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
        argv=worker_argv(settings.python, scheduler, group, tls),
        env=settings.env,
        setup=list(group.setup),
        worker_names=group.worker_names(),
    )


def plan_cluster(inventory: Inventory, endpoint: SchedulerEndpoint,
                 tls_dirs: dict[str, str] | None = None, scheduler_id: str | None = None) -> list[ProcessPlan]:
    """The scheduler first, then every worker group, in inventory order."""
    return [plan_scheduler(inventory, endpoint, tls_dirs, scheduler_id)] + [
        plan_worker_group(inventory, group, endpoint.address, tls_dirs) for group in inventory.workers
    ]
