"""Helpers for tests that run real clusters: isolated state, free ports, the CLI as a subprocess,
and a safety net that kills, by pid, every process a test's clusters recorded."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

PYTHON = sys.executable
REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def clusterctl(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> CliResult:
    """Run the real `clusterctl` command line in a subprocess with the test's environment."""
    done = subprocess.run([PYTHON, "-m", "clusterctl", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL)
    return CliResult(done.returncode, done.stdout, done.stderr)


def local_inventory(name: str = "t", workers: list[dict[str, Any]] | None = None, **scheduler: Any) -> dict[str, Any]:
    """The lecture's cluster on this machine, on free ports, with the default python (a local host
    runs the interpreter clusterctl runs under: this test's)."""
    return {
        "name": name,
        # PYTHONPATH: the workers import the tests' task functions, as users ship their own code.
        "defaults": {"env": {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}},
        "hosts": {"me": {"connection": "local"}},
        "scheduler": {"host": "me", "port": free_port(), "dashboard_address": None, **scheduler},
        "workers": workers if workers is not None else [
            {"name": "gpu2", "host": "me", "nworkers": 2, "nthreads": 1, "resources": {"GPU": 2}},
            {"name": "gpu1", "host": "me", "nworkers": 1, "nthreads": 1, "memory_limit": "2GB", "resources": "GPU=1"},
        ],
    }


def write_inventory(path: Path, inventory: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(inventory, sort_keys=False))
    return path


def recorded_processes(home: Path) -> list[dict[str, Any]]:
    """Every process any cluster under ``home`` recorded, in state files and local pid files."""
    found: list[dict[str, Any]] = []
    for state_file in home.glob("clusters/*/state.json"):
        try:
            found += json.loads(state_file.read_text()).get("processes", [])
        except (OSError, ValueError, AttributeError):
            pass
    default_run_dirs = Path(os.environ.get("HOME", "/nonexistent")).glob(".clusterctl/*/*.pid")
    for pid_file in [*home.glob("clusters/*/run/*.pid"), *default_run_dirs]:
        try:
            found.append(json.loads(pid_file.read_text()))
        except (OSError, ValueError):
            pass
    return [p for p in found if isinstance(p, dict) and isinstance(p.get("pid"), int)]


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, process group, start time) of a process, from /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return fields[0], int(fields[2]), int(fields[19])


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group: what a recorded session left running."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None and stat[1] == pgid and stat[0] != "Z":
                members.append(int(entry.name))
    return members


def is_running(process: dict[str, Any]) -> bool:
    """The recorded process, or what is left of its process group, still runs (zombies don't)."""
    stat = _stat(process["pid"])
    if stat is not None and process.get("start_time") not in (None, stat[2]):
        return False  # pid reused by a stranger
    return bool(group_members(process["pid"]))


def kill_recorded(home: Path) -> list[int]:
    """The safety net: SIGKILL the process group of every recorded process that still runs."""
    killed = []
    for process in recorded_processes(home):
        if is_running(process):
            try:
                os.killpg(process["pid"], signal.SIGKILL)
                killed.append(process["pid"])
            except ProcessLookupError:
                pass
    return killed


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
