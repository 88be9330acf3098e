"""Issue 11, item 4: Ctrl-C during `up`, at many moments, never leaves a process that `down` cannot
find. Ctrl-C is sent as a terminal does: SIGINT to the whole foreground process group."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from clusterctl import agent
from clusterctl.lifecycle import finish_despite_interrupt
from tests.helpers.cluster import PYTHON, clusterctl, local_inventory, write_inventory

# Seconds after `up` began (before anything starts, up to waiting for the workers), then seconds
# after it said "starting": the moments the agent starts processes and writes their pid files.
DELAYS = [1.0, 3.0]
AFTER_STARTING = [0.0, 0.05, 0.15]


def processes_naming(port: int) -> list[int]:
    """Every live process whose command line names the port: the scheduler (`--port N`) and the
    workers (its address), whoever recorded them or not."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and (f"127.0.0.1:{port}".encode() in argv or str(port).encode() in argv) \
                and any(b"dask_" in arg for arg in argv):
            found.append(int(entry.name))
    return found


def test_ctrl_c_during_up_at_any_moment_leaves_nothing_that_down_cannot_find(tmp_path: Path) -> None:
    inventory = local_inventory("intr", workers=[
        {"name": name, "host": "me", "nworkers": 1, "nthreads": 1, "nanny": False} for name in "ab"])
    port = inventory["scheduler"]["port"]
    config = write_inventory(tmp_path / "c.yaml", inventory)
    leftovers: dict[float, list[int]] = {}
    try:
        for delay, after_starting in [*((d, False) for d in DELAYS), *((d, True) for d in AFTER_STARTING)]:
            up = subprocess.Popen([PYTHON, "-m", "clusterctl", "up", str(config)], start_new_session=True,
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            if after_starting:
                assert up.stderr is not None
                for line in up.stderr:
                    if b"starting" in line:
                        break
            time.sleep(delay)
            try:
                os.killpg(up.pid, signal.SIGINT)  # the terminal's Ctrl-C: clusterctl and its children
            except ProcessLookupError:
                pass
            _, stderr = up.communicate(timeout=60)
            assert up.returncode in (0, 130, -signal.SIGINT), stderr  # -2: still importing
            down = clusterctl("down", str(config))
            assert down.exit_code == 0, (delay, down.stderr)
            deadline = time.monotonic() + 10
            while processes_naming(port) and time.monotonic() < deadline:
                time.sleep(0.2)
            if processes_naming(port):
                leftovers[delay] = processes_naming(port)
                for pid in leftovers[delay]:
                    os.kill(pid, signal.SIGKILL)
    finally:
        for pid in processes_naming(port):
            os.kill(pid, signal.SIGKILL)
    assert leftovers == {}, f"after Ctrl-C at these delays, processes outlived `down`: {leftovers}"


def test_the_agent_finishes_a_start_and_its_pid_files_through_a_ctrl_c(tmp_path: Path) -> None:
    """The agent gets the terminal's SIGINT too (a local host): every process it started has its pid
    file. The window is narrow, so it is tried several times."""
    orphans = [attempt for attempt in range(6) if interrupted_agent_start(tmp_path / str(attempt))]
    assert orphans == [], f"attempts that left processes without a pid file: {orphans}"


def interrupted_agent_start(run_dir: Path) -> list[int]:
    """SIGINT to an agent once it started its first process; the pids of what it started unrecorded."""
    import json

    marker = f"clusterctl-intr-{os.getpid()}-{run_dir.name}"
    request = {"op": "start", "run_dir": str(run_dir), "processes": [
        {"name": f"p{i}", "role": "worker", "argv": ["/bin/sh", "-c", "sleep 60; :", marker]} for i in range(40)]}
    started = subprocess.Popen([PYTHON, "-c", Path(agent.__file__).read_text()], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert started.stdin is not None
    started.stdin.write(json.dumps(request).encode())
    started.stdin.close()
    deadline = time.monotonic() + 10
    while not list(run_dir.glob("*.pid")) and time.monotonic() < deadline:
        time.sleep(0.001)  # until it is starting processes
    started.send_signal(signal.SIGINT)
    started.wait(30)
    time.sleep(0.2)
    running = [pid for pid in map(int, (p.name for p in Path("/proc").iterdir() if p.name.isdigit()))
               if marker.encode() in _cmdline(pid)]
    recorded = {json.loads(f.read_text())["pid"] for f in run_dir.glob("*.pid")}
    for pid in running:
        os.killpg(pid, signal.SIGKILL)
    assert running, "the agent started nothing"
    return sorted(set(running) - recorded)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_a_start_runs_to_its_end_through_ctrl_c_and_the_interrupt_comes_after() -> None:
    import threading

    threading.Timer(0.1, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
    value, interrupted = finish_despite_interrupt(lambda: time.sleep(0.5) or "recorded")
    assert value == "recorded" and isinstance(interrupted, KeyboardInterrupt)
