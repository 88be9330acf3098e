"""The tools under measurement, each behind the same small interface: ``start(worker_hosts)`` and
``stop()``, each returning seconds of wall time; the bed is searched for leftovers by the caller."""

from __future__ import annotations

import json
import os
import queue
import re
import resource
import subprocess
import sys
import threading
import time
from collections import Counter
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
REMOTE_COMMAND = re.compile(r"^→ ([^:\s]+): ", re.MULTILINE)  # one line per remote command in `clusterctl -v`
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
        self.last_cost: dict[str, float] = {}

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
        """Run with `-v`, and keep what it cost besides the wall time: the most remote commands it ran
        on one host (its `→ host:` lines) and the CPU time of the controller process."""
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        done = subprocess.run([*self.command, "-v", *args], capture_output=True, text=True,
                              timeout=START_TIMEOUT + 60, stdin=subprocess.DEVNULL)
        elapsed = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode != 0:
            raise BenchmarkError(f"clusterctl {args[0]} exited {done.returncode}: {tail(done.stderr)}")
        counts = Counter(REMOTE_COMMAND.findall(done.stderr))
        self.last_cost = {"remote_commands_per_host": max(counts.values(), default=0),
                          "controller_cpu_seconds": round(after.ru_utime + after.ru_stime
                                                          - before.ru_utime - before.ru_stime, 3)}
        return elapsed

    def check(self, worker_hosts: list[str]) -> float:
        return wall_time([*self.command, "-q", "check", str(self.inventory(worker_hosts))], timeout=START_TIMEOUT)


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


def ssh_probe_argv(addresses: list[str], key: Path) -> list[str]:
    """The floor for `check`: a python that connects to every host at once with paramiko and runs `true`."""
    code = ("import sys, concurrent.futures as cf, paramiko\n"
            "def probe(address):\n"
            "    client = paramiko.SSHClient()\n"
            "    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())\n"
            "    client.connect(address, username='root', key_filename=sys.argv[1], allow_agent=False,\n"
            "                   look_for_keys=False, timeout=10)\n"
            "    try:\n"
            "        _, out, _ = client.exec_command('true')\n"
            "        return out.channel.recv_exit_status()\n"
            "    finally:\n"
            "        client.close()\n"
            "with cf.ThreadPoolExecutor(32) as pool:\n"
            "    sys.exit(max(pool.map(probe, sys.argv[2:])))\n")
    return [sys.executable, "-c", code, str(key), *addresses]


def dask_cpu_seconds(pids: list[int]) -> float:
    """CPU time (user + system) the given processes and their waited-for children have used so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(value) for value in fields[11:15])  # utime, stime, cutime, cstime
    return total / ticks
