"""The tools under measurement, each behind the same small interface: ``start(worker_hosts)`` and
``stop()``, each returning seconds of wall time; the bed is searched for leftovers by the caller."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Protocol

import yaml

from testbed import Testbed

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CLUSTER = "bench"
SCHEDULER_HOST = "h1"
SCHEDULER_PORT = 8786
NWORKERS = 2  # worker processes per worker host
NTHREADS = 1
START_TIMEOUT = 180.0  # seconds; a start slower than this is a failure, not a data point


class BenchmarkError(RuntimeError):
    """A tool failed to do what is being measured; the message says which and how."""


def console_script(name: str) -> list[str]:
    """How a user runs ``name``: the venv's console script, else ``python -m``."""
    script = BIN / name
    return [str(script)] if script.exists() else [sys.executable, "-m", name]


def wall_time(argv: list[str], timeout: float = 60.0) -> float:
    """Seconds from starting ``argv`` until it exits; it must exit 0."""
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise BenchmarkError(f"{' '.join(argv)} exited {done.returncode}: {tail(done.stderr)}")
    return elapsed


def tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


class Tool(Protocol):
    name: str

    @property
    def running(self) -> bool: ...

    def start(self, worker_hosts: list[str]) -> float: ...

    def stop(self) -> float: ...


class Clusterctl:
    """`clusterctl up` of an inventory with the scheduler on h1 and one worker group per worker host."""

    name = "clusterctl"

    def __init__(self, bed: Testbed, workdir: Path) -> None:
        self.bed = bed
        self.workdir = workdir
        self.command = console_script("clusterctl")
        self._running = False

    @property
    def running(self) -> bool:
        return self._running

    def inventory(self, worker_hosts: list[str]) -> Path:
        path = self.workdir / f"bench-{len(worker_hosts)}.yaml"
        inventory = self.bed.inventory(
            name=CLUSTER,
            scheduler={"host": SCHEDULER_HOST, "port": SCHEDULER_PORT, "dashboard_address": None},
            workers=[{"name": alias, "host": alias, "nworkers": NWORKERS, "nthreads": NTHREADS}
                     for alias in worker_hosts],
        )
        path.write_text(yaml.safe_dump(inventory, sort_keys=False), encoding="utf-8")
        return path

    def start(self, worker_hosts: list[str]) -> float:
        config = self.inventory(worker_hosts)
        self._running = True  # from here on, `down` is due even if `up` fails half-way
        return self._run("up", str(config), "--timeout", str(int(START_TIMEOUT)))

    def stop(self) -> float:
        elapsed = self._run("down", "--cluster", CLUSTER)
        self._running = False
        return elapsed

    def status(self, *options: str) -> float:
        return wall_time([*self.command, "status", "--cluster", CLUSTER, *options])

    def _run(self, *args: str) -> float:
        started = time.perf_counter()
        done = subprocess.run([*self.command, "-q", *args], capture_output=True, text=True,
                              timeout=START_TIMEOUT + 60, stdin=subprocess.DEVNULL)
        elapsed = time.perf_counter() - started
        if done.returncode != 0:
            raise BenchmarkError(f"clusterctl {args[0]} exited {done.returncode}: {tail(done.stderr)}")
        return elapsed


class SshCluster:
    """distributed's ``SSHCluster`` with the same layout, driven in a child python (sshcluster_child.py)."""

    name = "SSHCluster"

    def __init__(self, bed: Testbed, workdir: Path) -> None:
        self.bed = bed
        self.log_path = workdir / "sshcluster.log"
        self.child: subprocess.Popen[str] | None = None
        self._lines: queue.Queue[str] = queue.Queue()

    @property
    def running(self) -> bool:
        return self.child is not None

    def start(self, worker_hosts: list[str]) -> float:
        hosts = [self.bed.host(alias).address for alias in [SCHEDULER_HOST, *worker_hosts]]
        spec = {"hosts": hosts, "key": str(self.bed.client_key_path), "nworkers": NWORKERS, "nthreads": NTHREADS,
                "port": SCHEDULER_PORT, "workers": NWORKERS * len(worker_hosts), "timeout": START_TIMEOUT}
        self._lines = queue.Queue()
        with open(self.log_path, "a") as log:
            log.write(f"--- {len(worker_hosts)} worker host(s)\n")
            log.flush()
            started = time.perf_counter()
            self.child = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.sshcluster_child", json.dumps(spec)], cwd=REPO,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True,
            )
        assert self.child.stdout is not None
        threading.Thread(target=_forward_lines, args=(self.child.stdout, self._lines), daemon=True).start()
        self._expect("ready", START_TIMEOUT + 30)
        return time.perf_counter() - started

    def stop(self) -> float:
        """Close the client and the cluster; seconds until the child python has exited."""
        child = self.child
        if child is None:
            return 0.0
        started = time.perf_counter()
        try:
            assert child.stdin is not None
            child.stdin.write("close\n")
            child.stdin.flush()
            self._expect("closed", 120)
            child.wait(timeout=60)
        except (BrokenPipeError, subprocess.TimeoutExpired, BenchmarkError):
            self.kill()
            raise
        self.child = None
        return time.perf_counter() - started

    def kill(self) -> None:
        """The last resort for the child itself; what it started on the hosts is the caller's to sweep."""
        if self.child is not None:
            self.child.kill()
            self.child.wait(timeout=30)
            self.child = None

    def _expect(self, word: str, timeout: float) -> None:
        assert self.child is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._lines.get(timeout=min(1.0, max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                if self.child.poll() is not None and self._lines.empty():
                    break
                continue
            if line.strip() == word:
                return
        raise BenchmarkError(f"SSHCluster did not print {word!r} within {timeout:g}s "
                             f"(exit status {self.child.poll()}); its log: {self.log_path}\n"
                             f"{tail(self.log_path.read_text(errors='replace'))}")


def _forward_lines(stream: IO[str], lines: queue.Queue[str]) -> None:
    for line in stream:
        lines.put(line)


def scheduler_info_argv(address: str) -> list[str]:
    """What a user without clusterctl runs to see the cluster: a Client asking the scheduler."""
    code = ("import sys; from distributed import Client\n"
            "with Client(sys.argv[1], timeout=10) as client:\n"
            "    print(len(client.scheduler_info()['workers']))")
    return [sys.executable, "-c", code, address]
