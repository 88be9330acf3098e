"""What /proc says about a process: its state, parent, group and start time, its program, its network."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProcessStat:
    """The fields of ``/proc/<pid>/stat`` that the bed and the tests look at."""

    state: str  # R, S, D, ... Z for a zombie, X for dead
    parent: int
    group: int  # the process group
    start_time: int  # clock ticks since boot: with the pid, it names one process across pid reuse


def process_stat(pid: int) -> ProcessStat | None:
    """The process's stat, or None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # the command name may contain spaces and ')'
    return ProcessStat(state=fields[0], parent=int(fields[1]), group=int(fields[2]), start_time=int(fields[19]))


def all_pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def executable(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None


def network_namespace(pid: int) -> tuple[int, int] | None:
    """(device, inode) of the process's network namespace; None if it is gone or a zombie (which has none)."""
    try:
        info = os.stat(f"/proc/{pid}/ns/net")
    except (FileNotFoundError, ProcessLookupError, PermissionError, NotADirectoryError):
        return None
    return info.st_dev, info.st_ino


def start_time(pid: int) -> int | None:
    """The process's start time, or None if there is no such process."""
    stat = process_stat(pid)
    return stat.start_time if stat else None


def alive(pid: int) -> bool:
    """The process exists and is neither a zombie nor dead."""
    stat = process_stat(pid)
    return stat is not None and stat.state not in ("Z", "X")
