"""Helpers for tests that run real clusters: the CLI as a subprocess (run to the end, or in the background
with its output read as it comes), its error lines, a local inventory, and a safety net that kills, by pid,
every process a test's clusters recorded."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import yaml

from testbed.client_env import environ_with
from testbed.proc import all_pids, process_stat
from testbed.sshd import free_port

PYTHON = sys.executable
REPO = Path(__file__).resolve().parents[2]
# PYTHONPATH: the workers import the tests' task functions (tests.workloads), as users ship their own code.
WORKER_ENV = {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def clusterctl(*args: str, env: Mapping[str, str | None] | None = None, timeout: float = 180) -> CliResult:
    """Run the real `clusterctl` command line in a subprocess with the test's environment, changed by ``env``
    (a None value removes a variable)."""
    done = subprocess.run([PYTHON, "-m", "clusterctl", *args], capture_output=True, text=True, timeout=timeout,
                          env=environ_with(env or {}), stdin=subprocess.DEVNULL)
    return CliResult(done.returncode, done.stdout, done.stderr)


def error_lines(stderr: str) -> list[str]:
    """The lines of ``stderr`` that report an error (clusterctl starts each with ``error:``)."""
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def warning_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("warning:")]


class Running:
    """`clusterctl ARGS` in the background (``env`` as for ``clusterctl``), its output collected line by line
    as it comes, so a test can wait for a line without blocking on the pipe."""

    def __init__(self, *args: str, env: Mapping[str, str | None] | None = None) -> None:
        self.process = subprocess.Popen([PYTHON, "-m", "clusterctl", *args], stdin=subprocess.DEVNULL,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                        env=environ_with(env or {}))
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._readers = [threading.Thread(target=self._collect, args=(stream, lines), daemon=True)
                         for stream, lines in ((self.process.stdout, self.stdout), (self.process.stderr, self.stderr))]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _collect(stream: IO[str], lines: list[str]) -> None:
        for line in stream:
            lines.append(line.rstrip("\n"))

    def wait_for(self, lines: list[str], predicate: Callable[[list[str]], bool], timeout: float = 30.0) -> bool:
        """Wait until ``predicate(lines)`` (``lines``: self.stdout or self.stderr) holds; whether it did."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(list(lines)):
                return True
            if self.process.poll() is not None:
                time.sleep(0.2)  # let the readers catch up with what it printed before exiting
                return predicate(list(lines))
            time.sleep(0.05)
        return predicate(list(lines))

    def wait(self, timeout: float) -> int:
        """Its exit code, once it has exited and all its output is read; TimeoutExpired if it runs on."""
        code = self.process.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout=5)
        return code

    def interrupt(self, timeout: float = 20.0) -> int:
        """Ctrl-C, by pid; SIGKILL if it does not end within ``timeout``. Returns the exit code."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGINT)
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.wait(10)

    def kill(self) -> None:
        """SIGKILL, by pid, if it still runs."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def local_inventory(name: str = "t", workers: list[dict[str, Any]] | None = None, **scheduler: Any) -> dict[str, Any]:
    """The lecture's cluster on this machine, on free ports, with the default python (a local host
    runs the interpreter clusterctl runs under: this test's)."""
    return {
        "name": name,
        "defaults": {"env": WORKER_ENV},  # no python: a local host runs clusterctl's own interpreter
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


@contextlib.contextmanager
def module_cluster(base: Path, inventory: dict[str, Any], **env: str) -> Iterator[dict[str, str]]:
    """A cluster up for a whole test module, and the environment that reaches it: its own
    CLUSTERCTL_HOME below ``base`` plus ``env``, which every call passes explicitly (the per-test home
    of conftest differs). `down`, then the safety net by pid, however the module ends."""
    variables = {"CLUSTERCTL_HOME": str(base / "clusterctl-home"), **env}
    config = write_inventory(base / "cluster.yaml", inventory)
    try:
        started = clusterctl("up", str(config), env=variables)
        if started.exit_code != 0:
            raise AssertionError(f"clusterctl up failed ({started.exit_code}):\n{started.stderr}")
        yield variables
    finally:
        clusterctl("down", "--cluster", inventory["name"], env=variables)
        kill_recorded(Path(variables["CLUSTERCTL_HOME"]))


def recorded_processes(home: Path) -> list[dict[str, Any]]:
    """Every process any cluster under ``home`` recorded, in state files and local pid files."""
    found: list[dict[str, Any]] = []
    for state_file in home.glob("clusters/*/state.json"):
        try:
            found += json.loads(state_file.read_text()).get("processes", [])
        except (OSError, ValueError, AttributeError):
            pass
    # A local host's default run_dir is ~/.clusterctl/<cluster>, as on remote hosts.
    default_run_dirs = Path(os.environ.get("HOME", "/nonexistent")).glob(".clusterctl/*/*.pid")
    return [p for p in found if _is_record(p)] + pid_file_records([*home.glob("clusters/*/run/*.pid"),
                                                                   *default_run_dirs])


def pid_file_records(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """The processes that pid files record (those that can be read)."""
    found = []
    for path in paths:
        try:
            found.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            pass
    return [p for p in found if _is_record(p)]


def _is_record(process: Any) -> bool:
    # pid 0 (or 1) planted in a state file must not make the safety net killpg(0): the test's own group
    return isinstance(process, dict) and isinstance(process.get("pid"), int) and process["pid"] > 1


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group: what a recorded session left running."""
    return [
        pid for pid in all_pids()
        if (stat := process_stat(pid)) is not None and stat.group == pgid and stat.state != "Z"
    ]


def is_running(process: dict[str, Any]) -> bool:
    """The recorded process, or what is left of its process group, still runs (zombies don't)."""
    stat = process_stat(process["pid"])
    if stat is not None and process.get("start_time") not in (None, stat.start_time):
        return False  # pid reused by a stranger
    return bool(group_members(process["pid"]))


def kill_recorded(home: Path) -> list[int]:
    """The safety net: SIGKILL the process group of every recorded process that still runs."""
    return kill_running(recorded_processes(home))


def kill_running(processes: Iterable[dict[str, Any]]) -> list[int]:
    """SIGKILL the process group of each of ``processes`` (records) that still runs: by recorded pid and
    start time, never by name. The pids killed."""
    killed = []
    for process in processes:
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
