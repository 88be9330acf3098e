"""The `clusterctl adapt` supervisor: a process on this machine that runs distributed's ``Adaptive``
on a cluster, recorded in the cluster's state so that `status` shows it and `down` stops it first.

It records itself (pid and start time, against pid reuse) when it starts, and forgets itself when
it ends; `--detach` starts it in its own session with its output in ``<cluster dir>/adapt.log``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from clusterctl import state
from clusterctl.errors import ClusterctlError
from clusterctl.records import SupervisorRecord

READY_TIMEOUT = 60.0  # a detached supervisor: until it has attached and recorded itself


def log_path(name: str) -> Path:
    return state.cluster_dir(name) / "adapt.log"


def alive(record: SupervisorRecord) -> bool:
    """The recorded supervisor still runs: its pid is held by a live (not zombie) process with the
    recorded start time."""
    from clusterctl import agent  # only when a supervisor is recorded: `status` stays light

    stat = agent._stat(record.pid)
    return stat is not None and stat[0] != "Z" and record.start_time in (None, stat[2])


def stop(record: SupervisorRecord, grace: float) -> bool:
    """SIGTERM (it detaches cleanly), SIGKILL after ``grace`` seconds; True once verified gone."""
    for signum, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        if not alive(record):
            return True
        try:
            os.kill(record.pid, signum)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and alive(record):
            time.sleep(0.05)
    return not alive(record)


def record_self(name: str, minimum: int, maximum: int | None, interval: float, log: str | None) -> SupervisorRecord:
    """Record this process as the cluster's supervisor; refuse when another one runs."""
    from clusterctl import agent

    with state.locked(name, wait=30.0):  # a scale may hold the lock for a while
        st = state.load(name)
        if st is None:
            raise ClusterctlError(f"cluster {name!r} is not running", "start it with `clusterctl up CONFIG`")
        if st.supervisor is not None and st.supervisor.pid != os.getpid() and alive(st.supervisor):
            raise ClusterctlError(f"cluster {name!r} already adapts (supervisor pid {st.supervisor.pid})",
                                  f"stop it first: kill {st.supervisor.pid}")
        st.supervisor = SupervisorRecord(os.getpid(), agent._start_time(os.getpid()), log, minimum, maximum,
                                         interval)
        state.save(st)
        return st.supervisor


def forget_self(name: str) -> None:
    """Remove this process's record, if the cluster still has it (after `down`, it has none)."""
    with state.locked(name, wait=30.0):
        st = state.load(name)
        if st is not None and st.supervisor is not None and st.supervisor.pid == os.getpid():
            st.supervisor = None
            state.save(st)


def launch(name: str, minimum: int | None, maximum: int | None, interval: float) -> SupervisorRecord:
    """Start `clusterctl adapt` detached (own session, output to its log) and wait until it has recorded itself."""
    log = log_path(name)
    argv = [sys.executable, "-m", "clusterctl", "adapt", "--cluster", name, "--interval", str(interval),
            "--log-file", str(log)]
    argv += ["--minimum", str(minimum)] if minimum is not None else []
    argv += ["--maximum", str(maximum)] if maximum is not None else []
    with open(log, "ab") as output:
        os.chmod(log, 0o600)
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                                 start_new_session=True, close_fds=True)
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        st = state.load(name)
        if st is not None and st.supervisor is not None and st.supervisor.pid == child.pid:
            return st.supervisor
        if child.poll() is not None:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-10:])
            raise ClusterctlError(f"the adapt supervisor exited during start-up (exit {child.returncode})",
                                  f"full log: {log}", details=f"last lines of {log}:\n{tail}")
        time.sleep(0.1)
    child.terminate()
    raise ClusterctlError(f"the adapt supervisor did not start within {READY_TIMEOUT:g}s", f"see {log}")
