"""A cluster on the multi-host test bed as the tests drive it: its inventory, the isolated environment its
CLI calls run in, each host's run directory (the hosts share one filesystem), and a teardown that leaves
no process of it behind."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from testbed import Testbed
from testbed.client_env import SshEnv
from tests.helpers.cluster import (
    WORKER_ENV,
    CliResult,
    clusterctl,
    is_running,
    kill_running,
    pid_file_records,
    recorded_processes,
)

Cluster = TypeVar("Cluster", bound="BedCluster")


@dataclass
class BedCluster:
    """One cluster on the bed; a test module subclasses it for verbs of its own."""

    bed: Testbed
    name: str
    config: Path
    env: SshEnv
    run_dirs: dict[str, Path]  # host alias -> the cluster's run directory there

    cli_timeout: ClassVar[float] = 180.0  # seconds before a hung command fails the test

    @classmethod
    def write(cls: type[Cluster], bed: Testbed, base: Path, name: str, env: SshEnv, **sections: Any) -> Cluster:
        """The cluster's inventory, written to ``base``: every bed host with a run directory of its own below
        ``base``, the workers' environment, and ``sections`` (scheduler, workers, security, ...)."""
        run_dirs = {host.alias: base / host.alias / "run" for host in bed.hosts}
        config = bed.write_inventory(
            base / "cluster.yaml", name=name, defaults={"env": WORKER_ENV},
            hosts={alias: {"run_dir": str(run_dir)} for alias, run_dir in run_dirs.items()}, **sections,
        )
        return cls(bed, name, config, env, run_dirs)

    def cli(self, *args: str) -> CliResult:
        return clusterctl(*args, env=self.env.variables(), timeout=self.cli_timeout)

    @property
    def home(self) -> Path:
        return self.env.clusterctl_home

    @property
    def state_path(self) -> Path:
        return self.home / "clusters" / self.name / "state.json"

    def state(self) -> dict[str, Any] | None:
        return json.loads(self.state_path.read_text()) if self.state_path.exists() else None

    def recorded(self) -> list[dict[str, Any]]:
        """The processes the local state records ([] without state)."""
        state = self.state()
        return state["processes"] if state else []

    def pids(self) -> dict[str, int]:
        """Process name -> recorded pid, from the local state."""
        return {p["name"]: p["pid"] for p in self.recorded()}

    def pid_files(self) -> list[dict[str, Any]]:
        """What the hosts' pid files record (the run dirs live on the one shared filesystem)."""
        return pid_file_records(path for run_dir in self.run_dirs.values() for path in run_dir.glob("*.pid"))

    def kill_leftovers(self) -> list[int]:
        """The safety net: SIGKILL whatever the home's records or the run dirs' pid files name and still runs."""
        return kill_running([*recorded_processes(self.home), *self.pid_files()])

    def tear_down(self, *down_options: str) -> None:
        """`down CONFIG` if anything of the cluster may be left, then the safety net, whatever happened."""
        try:
            if self.state() is not None or any(is_running(p) for p in self.pid_files()):
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.cli("down", str(self.config), *down_options)
        finally:
            self.kill_leftovers()


def process_groups(testbed: Testbed, host: str) -> set[int]:
    """The process groups (sessions, as the agent starts them) of everything running in ``host``."""
    groups = set()
    for pid in testbed.pids_in(host):
        with contextlib.suppress(ProcessLookupError):
            groups.add(os.getpgid(pid))
    return groups
