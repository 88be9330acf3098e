"""clusterctl from Python: ``clusterctl.Cluster``, a ``distributed.deploy.Cluster`` over a clusterctl cluster.

    cluster = clusterctl.Cluster("cluster.yaml")    # `clusterctl up`: starts or reconciles
    client = Client(cluster)
    cluster.scale(8); cluster.adapt(minimum=1, maximum=16)
    cluster.close()                                 # detaches; the cluster keeps running
    clusterctl.Cluster.from_name("lab").down()      # verified teardown, from any process

Every action goes through the same functions as the command line (``clusterctl.commands``), so
the preflight, the state, the lock and the errors (``ClusterctlError``, with the same messages)
are the same. Those functions block on hosts, so they run in a thread of their own, never in
the event loop (which, in Jupyter, is the kernel's).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from dask.utils import parse_bytes
from distributed.core import rpc
from distributed.deploy import Adaptive
from distributed.deploy import Cluster as DaskCluster

from clusterctl import elastic, scheduler_api, state
from clusterctl.commands.down import DownResult
from clusterctl.commands.down import down as down_command
from clusterctl.commands.scale import ScaleResult
from clusterctl.commands.scale import scale as scale_command
from clusterctl.commands.scale import scale_down as scale_down_command
from clusterctl.commands.up import up as up_command
from clusterctl.errors import ClusterctlError, InvalidInputError, SchedulerUnreachableError
from clusterctl.progress import SilentProgress
from clusterctl.state import ClusterState
from clusterctl.timing import WORKER_TIMEOUT

T = TypeVar("T")
FINISH_SCALING_WITHIN = 120.0  # closing: a scaling step in progress (starting workers, or stopping them) may finish
logger = logging.getLogger("clusterctl")


def _in_thread(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a blocking clusterctl call in a thread: the caller's thread may be running an event loop."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="clusterctl") as pool:
        return pool.submit(call, *args, **kwargs).result()


def _size(memory_limit: str | None) -> int | None:
    """Bytes of a memory_limit written as a size; None for auto, a fraction, 0 or none."""
    if memory_limit is None or memory_limit == "auto":
        return None
    try:
        float(memory_limit)
        return None  # a fraction of the host's memory, or 0 (no limit)
    except ValueError:
        return parse_bytes(memory_limit)


class ElasticAdaptive(Adaptive):
    """distributed's ``Adaptive`` (the scheduler's ``adaptive_target``), retiring only elastic workers."""

    async def workers_to_close(self, target: int) -> list[str]:
        # The scheduler ranks every worker, cheapest to close first; the first elastic ones go. (Asking it
        # for just the excess could name only fixed workers, and the cluster would never shrink.)
        ranked = await self.scheduler.workers_to_close(n=len(self.observed), attribute="name",
                                                       **self._workers_to_close_kwargs)
        allowed = self.cluster.elastic_workers()  # type: ignore[attr-defined]
        return [name for name in ranked if name in allowed][:max(0, len(self.plan) - target)]


class Cluster(DaskCluster):
    """A clusterctl cluster as Dask's cluster objects are: ``Client(cluster)``, ``scale``, ``adapt``, the widget.

    ``Cluster(path)`` starts or reconciles the inventory at ``path`` (as `clusterctl up`);
    ``Cluster.from_name(name)`` attaches to a running cluster. ``close()`` detaches and leaves the
    cluster running, unless ``shutdown_on_close=True``; ``down()`` takes it down, verified.
    """

    def __init__(self, config: str | os.PathLike[str] | None = None, *, name: str | None = None,
                 shutdown_on_close: bool = False, timeout: float = WORKER_TIMEOUT, restart: bool = False,
                 allow_version_mismatch: bool = False, loop: Any = None) -> None:
        if (config is None) == (name is None):
            raise InvalidInputError("give an inventory path, or the name of a running cluster with name=")
        if config is not None:
            report = _in_thread(up_command, os.fspath(config), SilentProgress(), timeout=timeout,
                                allow_version_mismatch=allow_version_mismatch, restart=restart)
            name = report.cluster
        assert name is not None
        st = self._load(name)
        # A scheduler that is gone is one clear error now, not distributed's 30 s connect timeout later.
        _in_thread(scheduler_api.query, st.scheduler_address, timeout=10.0, tls=st.client_tls())
        super().__init__(asynchronous=False, loop=loop, quiet=True, name=name)
        self.shutdown_on_close = shutdown_on_close
        self.security = scheduler_api.client_security(st.client_tls())  # what Client(cluster) uses
        self._scheduler_address = st.scheduler_address
        self._dashboard_url = st.dashboard_url
        self._loop_runner.start()
        try:
            self.sync(self._start)
        except BaseException:
            self._loop_runner.stop()
            raise

    @classmethod
    def up(cls, config: str | os.PathLike[str], **options: Any) -> Cluster:
        """Start or reconcile the cluster of inventory ``config``, as `clusterctl up` does, and attach."""
        return cls(config, **options)

    @classmethod
    def from_name(cls, name: str, **options: Any) -> Cluster:
        """Attach to the running cluster ``name`` (as `clusterctl list` shows it), from any process."""
        return cls(name=name, **options)

    @staticmethod
    def _load(name: str) -> ClusterState:
        st = state.load(state.resolve_name(name, None))
        if st is None:
            raise ClusterctlError(f"cluster {name!r} is not running (no state in {state.cluster_dir(name)})",
                                  "start it with `clusterctl up CONFIG` or `clusterctl.Cluster(CONFIG)`")
        return st

    async def _start(self) -> None:
        comm_args = self.security.get_connection_args("client") if self.security else {}
        self.scheduler_comm = rpc(self._scheduler_address, connection_args=comm_args)
        try:
            await super()._start()
        except OSError as exc:
            await self.scheduler_comm.close_rpc()
            raise SchedulerUnreachableError(
                f"scheduler at {self._scheduler_address} does not answer: {exc}",
                f"run `clusterctl status --cluster {self.name} --processes`, or `clusterctl up` to restart it",
            ) from None

    @property
    def dashboard_link(self) -> str:
        return self._dashboard_url or ""

    # --- the cluster's workers, as clusterctl recorded them ------------------------------------------

    def _recorded(self) -> ClusterState | None:
        return state.load(self.name)

    def workers_recorded(self) -> set[str]:
        """Every worker name recorded for the cluster (fixed, added and elastic)."""
        st = self._recorded()
        return set(st.expected_workers()) if st else set()

    def elastic_workers(self) -> set[str]:
        """The workers scaling may remove."""
        st = self._recorded()
        return elastic.elastic_names(st.processes) if st else set()

    @property
    def plan(self) -> set[str]:  # what Adaptive compares its target with
        return self.workers_recorded()

    @property
    def requested(self) -> set[str]:
        return self.workers_recorded()

    # --- scale, adapt --------------------------------------------------------------------------------

    def scale(self, n: int = 0, memory: str | int | None = None, cores: int | None = None) -> Any:
        """Scale to ``n`` workers (or enough for ``memory`` bytes / ``cores`` threads), adding or retiring
        elastic workers; fixed workers count toward ``n`` and are never removed. Returns a ``ScaleResult``."""
        st = self._load(self.name)
        spec = elastic.spec_of(st.inventory).worker
        if memory is not None:
            per_worker = _size(spec.memory_limit)
            if not per_worker:
                raise InvalidInputError("scale(memory=...) needs `elastic.worker.memory_limit` as a size like 4GB")
            n = max(n, math.ceil(parse_bytes(memory) / per_worker))
        if cores is not None:
            n = max(n, math.ceil(cores / spec.nthreads))
        return self.sync(self._scale, n)

    async def _scale(self, n: int) -> ScaleResult:
        result = await asyncio.get_running_loop().run_in_executor(
            None, lambda: scale_command(SilentProgress(), n, cluster=self.name))
        if result.added or result.removed:
            logger.info("cluster %s: %d -> %d worker(s)%s%s", self.name, result.before, result.after,
                        f"; added {', '.join(result.added)}" if result.added else "",
                        f"; removed {', '.join(result.removed)}" if result.removed else "")
        return result

    def scale_down(self, workers: list[str]) -> Any:
        """Retire and stop the named elastic workers (``Adaptive`` calls this after retiring them)."""
        return self.sync(self._scale_down, list(workers))

    async def _scale_down(self, workers: list[str]) -> ScaleResult:
        result = await asyncio.get_running_loop().run_in_executor(
            None, lambda: scale_down_command(SilentProgress(), workers, cluster=self.name))
        if result.removed:
            logger.info("cluster %s: %d -> %d worker(s); removed %s", self.name, result.before, result.after,
                        ", ".join(result.removed))
        return result

    def adapt(self, Adaptive: type[Adaptive] = ElasticAdaptive, minimum: int | None = None,
              maximum: int | float | None = None, **options: Any) -> Adaptive:
        """distributed's adaptive scaling between ``minimum`` and ``maximum`` workers (default: the
        inventory's `elastic.minimum`/`maximum`, which also bound them)."""
        spec = elastic.spec_of(self._load(self.name).inventory)
        low = max(spec.minimum, minimum if minimum is not None else spec.minimum)
        high = maximum if maximum is not None else (spec.maximum if spec.maximum is not None else math.inf)
        if spec.maximum is not None:
            high = min(high, spec.maximum)
        return super().adapt(Adaptive=Adaptive, minimum=low, maximum=max(low, high), **options)

    # --- detach, down --------------------------------------------------------------------------------

    def close(self, timeout: float | None = None) -> Any:
        """Detach: the cluster keeps running. With ``shutdown_on_close=True``, `down()` instead.

        Adapting stops first, and a scaling step in progress is let finish, so that nothing is left half-started.
        """
        if self._adaptive is not None and self.status.name == "running":
            self.sync(self._stop_adapting)
        closed = super().close(timeout)
        self._loop_runner.stop()
        if self.shutdown_on_close:
            self.shutdown_on_close = False
            self.down()
        return closed

    async def _stop_adapting(self) -> None:
        adaptive = self._adaptive
        assert adaptive is not None
        adaptive.stop(reason="the cluster object is closing")
        deadline = time.monotonic() + FINISH_SCALING_WITHIN
        while adaptive._adapting and time.monotonic() < deadline:  # its own flag: a step is running
            await asyncio.sleep(0.1)

    def down(self) -> DownResult:
        """Retire every worker, close the scheduler, stop every process and verify it gone (`clusterctl down`)."""
        if self.status.name not in ("closed", "closing"):
            self.shutdown_on_close = False
            self.close()
        return _in_thread(down_command, SilentProgress(), cluster=self.name)
