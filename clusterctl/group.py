"""One operation on many hosts at once: a bounded thread pool, one result per host.

Modelled on fabric's ``Group``/``GroupResult``: ``HostGroup.run`` calls a function with each
``Host`` in parallel and returns a ``GroupResult`` that maps every host to its value or to its
``HostError``. ``HostGroup.run_each`` does the same for records that name their host (processes,
log files), handing each host its own share: the one way clusterctl runs a step on many hosts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from clusterctl.errors import ClusterctlError, HostError, PartialFailureError, UnresolvableHostError
from clusterctl.host import Host, close_all
from clusterctl.inventory import Inventory
from clusterctl.progress import PasswordPrompt
from clusterctl.transport import open_transport

T = TypeVar("T")
R = TypeVar("R", bound="HasHost")
MAX_PARALLEL_HOSTS = 32


class HasHost(Protocol):
    @property
    def host(self) -> str: ...


@dataclass(frozen=True)
class HostResult(Generic[T]):
    """One host's share of a group call: its value, or the error that stopped it."""

    host: str
    value: T | None = None
    error: HostError | None = None

    @property
    def succeeded(self) -> bool:
        return self.error is None


class GroupResult(Mapping[str, HostResult[T]]):
    """Host -> ``HostResult``, in the order the hosts were given."""

    def __init__(self, results: Iterable[HostResult[T]]) -> None:
        self._results = {result.host: result for result in results}

    def __getitem__(self, host: str) -> HostResult[T]:
        return self._results[host]

    def __iter__(self) -> Iterator[str]:
        return iter(self._results)

    def __len__(self) -> int:
        return len(self._results)

    @property
    def succeeded(self) -> dict[str, T]:
        return {host: r.value for host, r in self._results.items() if r.error is None}  # type: ignore[misc]

    @property
    def failed(self) -> dict[str, HostError]:
        return {host: r.error for host, r in self._results.items() if r.error is not None}

    def values_or_raise(self, action: str) -> dict[str, T]:
        """Every host's value, or the one host's error, or a ``PartialFailureError`` carrying all."""
        failed = self.failed
        if failed:
            if len(self._results) == 1:
                raise next(iter(failed.values()))
            raise PartialFailureError(action, failed, list(self.succeeded))
        return self.succeeded


def located(host: Host, exc: ClusterctlError) -> ClusterctlError:
    """A name that does not resolve, with the inventory line that names it: where to fix it."""
    if not isinstance(exc, UnresolvableHostError) or host.where is None or host.where in exc.reason:
        return exc
    return UnresolvableHostError(exc.host, f"{exc.reason} (named at {host.where})", exc.hint, exc.details)


def _as_host_error(host: str, exc: ClusterctlError) -> HostError:
    return exc if isinstance(exc, HostError) else HostError(host, exc.message, exc.hint, exc.details)


class HostGroup:
    """The hosts of one command, each with its own open (lazily connecting) transport."""

    def __init__(self, hosts: Mapping[str, Host]) -> None:
        self.hosts = dict(hosts)

    def __getitem__(self, alias: str) -> Host:
        return self.hosts[alias]

    def __contains__(self, alias: object) -> bool:
        return alias in self.hosts

    def __iter__(self) -> Iterator[str]:
        return iter(self.hosts)

    def __len__(self) -> int:
        return len(self.hosts)

    def values(self) -> Iterable[Host]:
        return self.hosts.values()

    def run(self, step: Callable[[Host], T], only: Iterable[str] | None = None) -> GroupResult[T]:
        """``step(host)`` on every host (or those in ``only``) at once."""
        return self._run(self.hosts if only is None else only, lambda alias: step(self.hosts[alias]))

    def run_each(self, items: Iterable[R], step: Callable[[Host, list[R]], T]) -> GroupResult[T]:
        """``step(host, its_items)`` for every host that some item names, all at once."""
        by_host: dict[str, list[R]] = {}
        for item in items:
            by_host.setdefault(item.host, []).append(item)
        return self._run(by_host, lambda alias: step(self.hosts[alias], by_host[alias]))

    def _run(self, aliases: Iterable[str], call: Callable[[str], T]) -> GroupResult[T]:
        aliases = list(dict.fromkeys(aliases))

        def one(alias: str) -> HostResult[T]:
            try:
                return HostResult(alias, value=call(alias))
            except ClusterctlError as exc:
                if alias in self.hosts:
                    exc = located(self.hosts[alias], exc)
                return HostResult(alias, error=_as_host_error(alias, exc))

        if len(aliases) <= 1:
            return GroupResult(one(alias) for alias in aliases)
        with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_HOSTS, len(aliases))) as pool:
            return GroupResult(pool.map(one, aliases))



@contextmanager
def connect(inventory: Inventory, aliases: Iterable[str], password_prompt: PasswordPrompt | None = None
            ) -> Iterator[HostGroup]:
    """A ``HostGroup`` for ``aliases``, each host with one lazily connecting transport, all closed on exit."""
    hosts: dict[str, Host] = {}
    try:
        for alias in dict.fromkeys(aliases):
            settings = inventory.host(alias)
            hosts[alias] = Host(alias, settings, inventory.name, open_transport(alias, settings, password_prompt))
            hosts[alias].where = inventory.where(alias)
        yield HostGroup(hosts)
    finally:
        close_all([host.release for host in hosts.values()])  # agents `up` held and no start took
        for host in hosts.values():
            host.transport.close()
