"""`clusterctl logs [TARGET]`: the logs of the cluster's processes, read through each host's agent.

A target is ``scheduler``, a worker group's process name (``gpu2``), a worker name (``gpu2-0``,
meaning the process that runs it) or a host alias (every process on that host); no target means
every process. The last lines are fetched with one agent call per host; following polls every
log by byte offset, again one call per host per round, over the one connection per host that
``hosts.connect`` keeps open for the whole command.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from clusterctl import state
from clusterctl.errors import EXIT_FAILED, EXIT_OK, ClusterctlError, InvalidInputError
from clusterctl.group import HostGroup, connect
from clusterctl.host import Host
from clusterctl.launch import SCHEDULER_NAME
from clusterctl.limit import cluster_hosts, limit_hosts
from clusterctl.records import ProcessRecord
from clusterctl.state import ClusterState

DEFAULT_LINES = 50
POLL_INTERVAL = 0.5  # seconds between rounds while following
READ_TIMEOUT = 30.0  # seconds for one round trip to a host's agent


@dataclass(frozen=True)
class LogLines:
    """Lines of one process's log, or a note about it (an error reading it, a truncated log)."""

    process: str
    host: str
    lines: list[str] = field(default_factory=list)
    note: str | None = None
    failed: bool = False  # the note is an error: the log could not be read


@dataclass
class _Source:
    record: ProcessRecord
    offset: int | None = None  # where the next read starts; None: not read yet
    inode: int | None = None
    last_error: str | None = None

    @property
    def host(self) -> str:
        return self.record.host


@dataclass
class LogStream:
    """What `logs` shows, produced as it is read: iterate it for ``LogLines``."""

    cluster: str
    processes: list[ProcessRecord]
    lines: int
    follow: bool
    poll_interval: float = POLL_INTERVAL
    failures: int = 0  # logs that could not be read (counted while iterating)

    @property
    def exit_code(self) -> int:
        """1 when a log could not be read; following, that is a warning (it may come back): 0."""
        return EXIT_FAILED if self.failures and not self.follow else EXIT_OK

    @property
    def prefixed(self) -> bool:
        """Several processes are shown: each line says whose it is."""
        return len(self.processes) > 1

    def __iter__(self) -> Iterator[LogLines]:
        st = state.load(self.cluster)
        if st is None:
            raise _not_running(self.cluster)
        sources = [_Source(record) for record in self.processes]
        with connect(st.inventory, [s.host for s in sources]) as hosts:
            chunks, _ = self._read_round(hosts, sources)
            yield from self._counted(chunks)
            while self.follow:
                down = state.load(self.cluster) is None  # `down` removed it: nothing more will be written
                started = time.monotonic()
                chunks, more = self._read_round(hosts, sources)
                if not down and any(chunk.failed for chunk in chunks) and state.load(self.cluster) is None:
                    down = True  # `down` removed the logs with the state during this round: no complaint
                # The last lines, but no complaints: `down` may have removed a local host's logs too.
                yield from self._counted(chunk for chunk in chunks if not (down and chunk.failed))
                if not chunks:
                    yield LogLines("", "")  # nothing new: lets the reader side check that its reader is still there
                if down:
                    yield LogLines("", "", note=f"cluster {self.cluster!r} was taken down: stopped following")
                    return
                if not more:  # else some log had more than one read returns: read again at once
                    time.sleep(max(0.0, self.poll_interval - (time.monotonic() - started)))

    def _counted(self, chunks: Iterable[LogLines]) -> Iterator[LogLines]:
        for chunk in chunks:
            self.failures += chunk.failed
            yield chunk

    def _read_round(self, hosts: HostGroup, sources: list[_Source]) -> tuple[list[LogLines], bool]:
        """One agent call per host, all hosts at once: what is new, in the order of ``sources``,
        and whether any log has more to read right away."""

        def read(host: Host, mine: list[_Source]) -> dict[int, dict[str, Any]]:
            files = [{"path": s.record.log, "offset": s.offset, "inode": s.inode, "lines": self.lines,
                      "whole_lines": self.follow} for s in mine]
            answers = host.read_logs(files, READ_TIMEOUT)
            for source, answer in zip(mine, answers, strict=True):
                if "error" in answer:
                    answer["error"] = f"{host.alias}: cannot read {source.record.log}: {answer['error']}"
            return {id(source): answer for source, answer in zip(mine, answers, strict=True)}

        answers: dict[int, dict[str, Any]] = {}
        for alias, result in hosts.run_each(sources, read).items():
            if result.value is not None:
                answers.update(result.value)
            else:
                answers.update({id(s): {"error": str(result.error.message if result.error else alias)}
                                for s in sources if s.host == alias})
        chunks: list[LogLines] = []
        more = False
        for source in sources:
            answer, record = answers[id(source)], source.record
            if "error" in answer:
                if answer["error"] != source.last_error:  # while following, say it once, not every round
                    source.last_error = answer["error"]
                    chunks.append(LogLines(record.name, record.host, note=answer["error"], failed=True))
                continue
            if source.last_error is not None:
                chunks.append(LogLines(record.name, record.host, note=f"{record.log} on {record.host} is readable again"))
                source.last_error = None
            if answer.get("restarted"):
                chunks.append(LogLines(record.name, record.host, note=f"{record.log} was truncated or replaced: "
                                                                      "reading it from its start"))
            source.offset, source.inode = answer["offset"], answer.get("inode")
            more = more or bool(answer.get("more"))
            if answer["text"]:
                chunks.append(LogLines(record.name, record.host, answer["text"].splitlines()))
        return chunks, more


def targets(st: ClusterState) -> list[str]:
    """Every valid target, in the order `logs` explains them: processes, workers, hosts."""
    names = [r.name for r in st.processes]
    workers = [w for r in st.processes for w in r.worker_names if w not in names]
    hosts = [h for h in dict.fromkeys(r.host for r in st.processes) if h not in names and h not in workers]
    return [*names, *dict.fromkeys(workers), *hosts]


def select(st: ClusterState, target: str | None) -> list[ProcessRecord]:
    """The processes whose logs ``target`` means; ``InvalidInputError`` naming the valid ones."""
    if target is None:
        return _scheduler_first(st.processes)
    for matches in ([r for r in st.processes if r.name == target],
                    [r for r in st.processes if target in r.worker_names],
                    [r for r in st.processes if r.host == target]):
        if matches:
            return _scheduler_first(matches)
    valid = targets(st)
    raise InvalidInputError(f"unknown logs target {target!r} in cluster {st.name!r}; valid targets: {', '.join(valid)}",
                            "name a process, a worker or a host alias as `clusterctl status --processes` shows "
                            "them, or give none for every log")


def logs(cluster: str | None = None, config: str | None = None, target: str | None = None,
         lines: int = DEFAULT_LINES, follow: bool = False, poll_interval: float = POLL_INTERVAL,
         limit: list[str] | None = None) -> LogStream:
    """The logs ``target`` means, on the hosts ``limit`` selects; nothing is read until the stream is iterated."""
    name = state.resolve_name(cluster, config)
    st = state.load(name)
    if st is None:
        raise _not_running(name)
    if not st.processes:
        raise ClusterctlError(f"cluster {name!r} records no processes", "start it with `clusterctl up CONFIG`")
    chosen = limit_hosts(st.inventory, cluster_hosts(st.inventory, [r.host for r in st.processes]), limit or [])
    records = [r for r in select(st, target) if r.host in chosen]
    if not records:
        raise InvalidInputError(f"no process {'of ' + repr(target) + ' ' if target else ''}of cluster {name!r} runs "
                                f"on {', '.join(chosen)}", "widen --limit, or see `clusterctl status --processes`")
    return LogStream(name, records, lines, follow, poll_interval)


def _scheduler_first(records: list[ProcessRecord]) -> list[ProcessRecord]:
    return sorted(records, key=lambda r: r.name != SCHEDULER_NAME)


def _not_running(name: str) -> ClusterctlError:
    return ClusterctlError(f"cluster {name!r} is not running (no state in {state.cluster_dir(name)})",
                           "start it with `clusterctl up CONFIG`; logs are found through the state `up` records")
