"""What should run where: the inventory -> one ``ProcessPlan`` per process, with its argv.

Pure functions, no I/O. The only place that knows the command lines of ``dask scheduler`` and
``dask worker``. Command lines are lists; they cross a shell only inside the SSH transport.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from clusterctl.inventory import Inventory, WorkerGroup, format_resources
from clusterctl.tls import TlsFiles

#: (host alias, role) -> where that role's TLS files are on that host; None when TLS is off.
TlsPaths = Callable[[str, str], TlsFiles] | None

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


def scheduler_address(listen_host: str, port: int, protocol: str = "tcp") -> str:
    host = f"[{listen_host}]" if ":" in listen_host else listen_host
    return f"{protocol}://{host}:{port}"


def address_host(address: str) -> str:
    """``tcp://10.0.0.1:8786`` -> ``10.0.0.1``; ``tls://[::1]:8786`` -> ``::1``."""
    return address.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")


def _tls_argv(files: TlsFiles | None) -> list[str]:
    if files is None:
        return []
    return ["--tls-ca-file", files.ca_file, "--tls-cert", files.cert, "--tls-key", files.key]


def scheduler_argv(python: str, listen_host: str, port: int, dashboard_address: str | None,
                   tls: TlsFiles | None = None) -> list[str]:
    argv = [python, "-m", SCHEDULER_MODULE, "--host", listen_host, "--port", str(port)]
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


def plan_scheduler(inventory: Inventory, listen_host: str, tls_paths: TlsPaths = None) -> ProcessPlan:
    spec = inventory.scheduler
    settings = inventory.process_settings(spec.host, spec)
    assert settings.python is not None
    tls = tls_paths(spec.host, "scheduler") if tls_paths else None
    return ProcessPlan(
        role="scheduler",
        name=SCHEDULER_NAME,
        host=spec.host,
        argv=scheduler_argv(settings.python, listen_host, spec.port, spec.dashboard_bind(), tls),
        env=settings.env,
        setup=list(spec.setup),
    )


def plan_worker_group(inventory: Inventory, group: WorkerGroup, scheduler: str,
                      tls_paths: TlsPaths = None) -> ProcessPlan:
    settings = inventory.process_settings(group.host, group)
    assert settings.python is not None and group.name is not None
    tls = tls_paths(group.host, "worker") if tls_paths else None
    return ProcessPlan(
        role="worker",
        name=group.name,
        host=group.host,
        argv=worker_argv(settings.python, scheduler, group, tls),
        env=settings.env,
        setup=list(group.setup),
        worker_names=group.worker_names(),
    )


def plan_cluster(inventory: Inventory, listen_host: str, tls_paths: TlsPaths = None) -> list[ProcessPlan]:
    """The scheduler first, then every worker group, in inventory order."""
    address = scheduler_address(listen_host, inventory.scheduler.port, "tls" if tls_paths else "tcp")
    return [plan_scheduler(inventory, listen_host, tls_paths)] + [
        plan_worker_group(inventory, group, address, tls_paths) for group in inventory.workers
    ]
