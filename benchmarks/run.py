"""Build a test bed, measure clusterctl and SSHCluster side by side, report, and tear everything down.

Everything this starts is stopped: each cluster by its own tool (`clusterctl down`, ``SSHCluster.close``),
then whatever is left in the bed's hosts by pid, and finally the bed itself, which kills every process
in its network namespaces. That holds on failure, Ctrl-C and SIGTERM too.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import importlib
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmarks.adapt import ADAPT_GOAL, ADAPT_HOSTS, measure_adapt
from benchmarks.report import Results, markdown_table, text_table
from benchmarks.sync import SYNC_HOSTS, measure_sync
from benchmarks.tools import (
    NTHREADS,
    NWORKERS,
    SCHEDULER_HOST,
    SCHEDULER_PORT,
    BenchmarkError,
    Clusterctl,
    SshCluster,
    Tool,
    console_script,
    dask_cpu_seconds,
    scheduler_info_argv,
    ssh_probe_argv,
    wall_time,
)
from testbed import create_testbed, unavailable_reason
from testbed.client_env import SshEnv

RESULTS_DIR = Path(__file__).resolve().parent / "results"
ASYNCSSH_REQUIREMENT = "asyncssh>=2.14"  # as in pyproject.toml's `test` extra
LEFTOVER_WAIT = 30.0  # seconds a stopped cluster's processes get to disappear before they count as left over


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="repetitions of every measurement (default %(default)s)")
    parser.add_argument("--quick", action="store_true", help="one repetition, fewer samples")
    parser.add_argument("--worker-hosts", type=host_counts, default=None,
                        help="comma-separated numbers of worker hosts to start clusters on (default 1,4)")
    parser.add_argument("--full", action="store_true", help="also 8 and 16 worker hosts (1,4,8,16)")
    parser.add_argument("--samples", type=int, default=5,
                        help="samples per repetition of the short commands, status and --help (default %(default)s)")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR, help="where latest.json and latest.md go")
    args = parser.parse_args(argv)
    repeat, samples = (1, 3) if args.quick else (args.repeat, args.samples)
    counts: list[int] = args.worker_hosts or ([1, 4, 8, 16] if args.full else [1, 4])
    if repeat < 1 or samples < 1:
        parser.error("--repeat and --samples must be at least 1")

    reason = unavailable_reason()
    if reason:
        print(f"cannot benchmark here: {reason}", file=sys.stderr)
        return 2
    ensure_asyncssh()
    compile_clusterctl()

    results = Results(settings={
        "repeat": repeat, "samples": samples, "worker_hosts": counts, "nworkers_per_host": NWORKERS,
        "nthreads": NTHREADS, "scheduler": f"{SCHEDULER_HOST}:{SCHEDULER_PORT}, alone on its host",
    }, machine=machine_facts())
    workdir = Path(tempfile.mkdtemp(prefix="clusterctl-bench-"))
    started = time.monotonic()
    try:
        # Own HOME, CLUSTERCTL_HOME and ssh config for this process and everything it starts.
        with SshEnv.under(workdir).applied(), signals_as_interrupts():
            outcome = benchmark(workdir, counts, repeat, samples, results)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if outcome:
        return outcome
    results.machine["load_average_end"] = os.getloadavg()
    results.seconds = round(time.monotonic() - started, 1)
    write_results(results, args.output)
    print(text_table(results))
    print(f"\nwritten: {args.output / 'latest.json'}, {args.output / 'latest.md'}")
    return 0


def compile_clusterctl() -> None:
    """clusterctl's bytecode, as `pip install` leaves an installed package (the peer's packages have
    theirs). An editable install run under PYTHONDONTWRITEBYTECODE=1 would otherwise compile every
    module of clusterctl on every command: ~80 ms of CPU that no user's installed copy pays."""
    package = Path(__file__).resolve().parents[1] / "clusterctl"
    if not compileall.compile_dir(str(package), quiet=1):
        raise SystemExit(f"cannot compile {package}")


def host_counts(text: str) -> list[int]:
    try:
        counts = sorted({int(item) for item in text.split(",")})
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of numbers like 1,2,4") from None
    if counts[0] < 1:
        raise argparse.ArgumentTypeError("a cluster needs at least 1 worker host")
    return counts


def benchmark(workdir: Path, counts: list[int], repeat: int, samples: int, results: Results) -> int:
    """Build the bed, measure, and tear everything down whatever happens; an exit status."""
    bed = None
    tools: list[Tool] = []
    try:
        print(f"building a test bed of {1 + max(counts)} hosts", file=sys.stderr)
        bed = create_testbed(1 + max(counts), workdir / "bed", owner_pid=os.getpid())
        tools = [Clusterctl(bed, workdir), SshCluster(bed, workdir)]
        measure(bed, tools, counts, repeat, samples, results)
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BenchmarkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if bed is not None:
            tear_down(bed, tools)


def measure(bed: Any, tools: list[Tool], counts: list[int], repeat: int, samples: int, results: Results) -> None:
    clusterctl = tools[0]
    assert isinstance(clusterctl, Clusterctl)
    for rep in range(repeat):
        print(f"[{rep + 1}/{repeat}] clusterctl sync: {len(SYNC_HOSTS)} bare hosts", file=sys.stderr)
        synced = measure_sync(bed, clusterctl.workdir, rep)
        for kind, seconds in synced.items():
            results.add(f"sync: {kind} ({len(SYNC_HOSTS)} hosts, bare python)", "clusterctl", seconds)
        for _ in range(samples):  # alternating, so a slow moment of the machine hits both
            results.add("`--help`", "clusterctl", wall_time([*console_script("clusterctl"), "--help"]))
            results.add("`--help`", "dask", wall_time([*console_script("dask"), "--help"]))
        for count in counts:
            worker_hosts = [f"h{i}" for i in range(2, 2 + count)]
            workers = f"{count} worker host{'s' if count > 1 else ''}, {NWORKERS * count} workers"
            for tool in (tools if rep % 2 == 0 else tools[::-1]):
                print(f"[{rep + 1}/{repeat}] {tool.name}: {workers}", file=sys.stderr)
                require_empty(bed, results)
                results.add(f"start ({workers})", tool.name, tool.start(worker_hosts))
                if tool is clusterctl:
                    results.fact(workers, "up: remote commands per host (most)", clusterctl.last_cost["remote_commands_per_host"])
                    results.fact(workers, "up: controller CPU s", clusterctl.last_cost["controller_cpu_seconds"])
                    # The floor: what the dask processes themselves burnt to get here (imports, start, registering).
                    cpu = dask_cpu_seconds([pid for host in bed.hosts for pid in bed.pids_in(host)])
                    results.fact(workers, "dask processes' CPU s at ready", round(cpu, 2))
                    results.fact(workers, f"floor on this bed (that CPU / {os.cpu_count()} cores) s",
                                 round(cpu / (os.cpu_count() or 1), 2))
                if tool is clusterctl and count == counts[-1]:
                    measure_status(clusterctl, bed, samples, results)
                stopping = time.perf_counter()
                results.add(f"stop: command returns ({workers})", tool.name, tool.stop())
                left = wait_until_empty(bed)
                gone = time.perf_counter() - stopping
                results.add(f"stop: no process left ({workers})", tool.name, None if left else gone)
                if tool is clusterctl:
                    cost = clusterctl.last_cost
                    results.fact(workers, "down: remote commands per host (most)", cost["remote_commands_per_host"])
                    results.fact(workers, "down: controller CPU s", clusterctl.last_cost["controller_cpu_seconds"])
                if left:
                    results.note(f"{tool.name} ({workers}): {len(left)} process(es) still ran {LEFTOVER_WAIT:g}s "
                                 "after the stop; killed by pid")
                    kill_pids(bed, left)
            hosts = f"{1 + count} hosts"
            addresses = [bed.host(alias).address for alias in [SCHEDULER_HOST, *worker_hosts]]
            for _ in range(min(samples, 3)):  # alternating: clusterctl's whole preflight, and a bare SSH probe
                results.add(f"`check` ({hosts})", "clusterctl", clusterctl.check(worker_hosts))
                results.add(f"`check` ({hosts})", "paramiko probe",
                            wall_time(ssh_probe_argv(addresses, bed.client_key_path)))
        if len(bed.hosts) > len(ADAPT_HOSTS):  # the scheduler's h1 and the elastic pool
            print(f"[{rep + 1}/{repeat}] clusterctl adapt: 200 sleeps, pool of {len(ADAPT_HOSTS)} hosts", file=sys.stderr)
            require_empty(bed, results)
            adapted = measure_adapt(bed, clusterctl.workdir)
            results.add(f"adapt: 3 more workers (200 × sleep(0.5); goal {ADAPT_GOAL:g} s)", "clusterctl", adapted["grow"])
            results.add("adapt: back to 1 worker, processes gone", "clusterctl", adapted["shrink"])


def measure_status(clusterctl: Clusterctl, bed: Any, samples: int, results: Results) -> None:
    address = f"tcp://{bed.host(SCHEDULER_HOST).address}:{SCHEDULER_PORT}"
    for _ in range(samples):
        results.add("`status`", "clusterctl", clusterctl.status())
        results.add("`status`", "Client.scheduler_info", wall_time(scheduler_info_argv(address)))
        results.add("`status --processes`", "clusterctl", clusterctl.status("--processes"))


def require_empty(bed: Any, results: Results) -> None:
    """Every host is empty before a start; a leftover of an earlier run would skew it."""
    left = wait_until_empty(bed, timeout=10)
    if left:
        results.note(f"{len(left)} process(es) from an earlier run were still there; killed by pid")
        kill_pids(bed, left)


def wait_until_empty(bed: Any, timeout: float = LEFTOVER_WAIT) -> list[tuple[str, int]]:
    """(host, pid) of every process still in the bed's hosts after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        left = [(host.alias, pid) for host in bed.hosts for pid in bed.pids_in(host)]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.02)


def kill_pids(bed: Any, processes: list[tuple[str, int]]) -> None:
    for _, pid in processes:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    wait_until_empty(bed, timeout=10)


def tear_down(bed: Any, tools: list[Tool]) -> None:
    """Stop what runs, each tool its own way, then remove the bed (which kills whatever is left in it)."""
    # A second Ctrl-C (or a SIGTERM) must not leave a bed behind.
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        for tool in tools:
            if tool.running:
                print(f"stopping the {tool.name} cluster", file=sys.stderr)
                try:
                    tool.stop()
                except (BenchmarkError, OSError, subprocess.SubprocessError) as exc:
                    print(f"warning: {tool.name} did not stop cleanly: {exc}", file=sys.stderr)
                    if isinstance(tool, SshCluster):
                        tool.kill()
        print("removing the test bed", file=sys.stderr)
        bed.destroy()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def ensure_asyncssh() -> None:
    """SSHCluster needs asyncssh; install it into this environment if it is missing."""
    try:
        importlib.import_module("asyncssh")
    except ImportError:
        print(f"installing {ASYNCSSH_REQUIREMENT} (SSHCluster needs it)", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", ASYNCSSH_REQUIREMENT], check=True)
        importlib.invalidate_caches()


@contextlib.contextmanager
def signals_as_interrupts() -> Iterator[None]:
    """SIGTERM and SIGHUP end the run like Ctrl-C does: through the clean-up."""
    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def machine_facts() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "system": platform.platform(),
            "load_average_start": os.getloadavg(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "versions": _versions()}


def _versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for module in ("clusterctl", "dask", "distributed", "asyncssh", "paramiko"):
        try:
            found[module] = getattr(importlib.import_module(module), "__version__", None)
        except ImportError:
            found[module] = None
    return found


def write_results(results: Results, directory: Path) -> None:
    import json

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "latest.json").write_text(json.dumps(results.document(), indent=2) + "\n", encoding="utf-8")
    (directory / "latest.md").write_text(markdown_table(results), encoding="utf-8")

