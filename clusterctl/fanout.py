"""Run one step on many hosts at once: a bounded thread pool, one outcome per host."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from clusterctl.errors import ClusterctlError, HostError, HostOutcome, PartialFailureError

T = TypeVar("T")
MAX_PARALLEL_HOSTS = 32


def fan_out(hosts: Iterable[str], step: Callable[[str], T]) -> list[HostOutcome]:
    """``step(host)`` for every host in parallel; expected failures become the host's error."""
    hosts = list(dict.fromkeys(hosts))

    def one(host: str) -> HostOutcome:
        try:
            return HostOutcome(host, value=step(host))
        except ClusterctlError as exc:
            if not isinstance(exc, HostError) and not exc.message.startswith(f"{host}:"):
                exc = HostError(host, exc.message, exc.hint)
            return HostOutcome(host, error=exc)

    if len(hosts) == 1:
        return [one(hosts[0])]
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_HOSTS, len(hosts) or 1)) as pool:
        return list(pool.map(one, hosts))


def values_or_raise(action: str, outcomes: list[HostOutcome]) -> dict[str, object]:
    """Every host's value, or one ``PartialFailureError`` that carries all outcomes."""
    if any(not outcome.succeeded for outcome in outcomes):
        failed = [o for o in outcomes if not o.succeeded]
        if len(outcomes) == 1 and failed[0].error is not None:
            raise failed[0].error
        raise PartialFailureError(action, outcomes)
    return {outcome.host: outcome.value for outcome in outcomes}
