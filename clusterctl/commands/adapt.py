"""`clusterctl adapt`: distributed's adaptive scaling of a running cluster, with no Python session open.

In the foreground it runs until Ctrl-C or SIGTERM; with ``--detach`` it runs as a supervisor in
its own session, its pid and log recorded in the cluster's state (`status` shows it, `down`
stops it first). SIGTERM stops adapting and detaches, leaving the cluster as it is.
"""

from __future__ import annotations

import math
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass

from clusterctl import state, supervisor
from clusterctl.errors import ClusterctlError
from clusterctl.records import SupervisorRecord


@dataclass
class AdaptResult:
    cluster: str
    supervisor: SupervisorRecord
    detached: bool


def adapt(cluster: str | None = None, config: str | None = None, minimum: int | None = None,
          maximum: int | None = None, interval: float = 1.0, detach: bool = False, log_file: str | None = None,
          on_started: Callable[[AdaptResult], None] | None = None) -> AdaptResult:
    name = state.resolve_name(cluster, config)
    st = state.load(name)
    if st is None:
        raise ClusterctlError(f"cluster {name!r} is not running", "start it with `clusterctl up CONFIG`")
    if st.supervisor is not None and supervisor.alive(st.supervisor):
        raise ClusterctlError(f"cluster {name!r} already adapts (supervisor pid {st.supervisor.pid})",
                              f"stop it first: kill {st.supervisor.pid}")
    if detach:
        return AdaptResult(name, supervisor.launch(name, minimum, maximum, interval), True)
    return _run(name, minimum, maximum, interval, log_file, on_started)


def _run(name: str, minimum: int | None, maximum: int | None, interval: float, log_file: str | None,
         on_started: Callable[[AdaptResult], None] | None) -> AdaptResult:
    from clusterctl.api import Cluster  # distributed: only once there is something to adapt

    cluster = Cluster.from_name(name)
    stopping = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: stopping.set())
    try:
        adaptive = cluster.adapt(minimum=minimum, maximum=maximum, interval=interval)
        bound = None if math.isinf(adaptive.maximum) else int(adaptive.maximum)
        result = AdaptResult(name, supervisor.record_self(name, adaptive.minimum, bound, interval, log_file), False)
        if on_started:
            on_started(result)
        while not stopping.wait(1.0):
            if state.load(name) is None:  # taken down by someone else
                break
        return result
    finally:
        cluster.close()  # stops adapting, after a scaling step in progress has finished
        supervisor.forget_self(name)
        signal.signal(signal.SIGTERM, previous)
