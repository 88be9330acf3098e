"""The only place that prints: rich tables and live progress for people, JSON for scripts.

Colour and live displays are decided in one function, ``_plain``: off when the stream is not a
terminal or NO_COLOR is set. Every value shown goes through ``safe`` (or ``clean``, outside
markup): names, log lines and answers come from hosts, the scheduler and whoever can reach it,
so they are data, never rich markup or terminal control sequences.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from clusterctl.progress import FAILED, HOST_STATES, IN_FLIGHT
from clusterctl.report import JSON_SCHEMA_VERSION, ClusterReport, report_document

if TYPE_CHECKING:
    from clusterctl.commands.adapt import AdaptResult
    from clusterctl.commands.bench import BenchResult
    from clusterctl.commands.check import CheckReport
    from clusterctl.commands.down import DownResult
    from clusterctl.commands.exec import ExecResult
    from clusterctl.commands.init import InitResult
    from clusterctl.commands.list_clusters import ListResult
    from clusterctl.commands.logs import LogStream
    from clusterctl.commands.remove_worker import RemoveResult
    from clusterctl.commands.sync import CleanReport
    from clusterctl.commands.up import DryRun
    from clusterctl.environment import SyncReport
    from clusterctl.preflight import PreflightReport
    from clusterctl.progress import PasswordPrompt


# C0 and C1 control characters, DEL, and newline unless allowed; tab is harmless and kept.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_CONTROL_OR_NEWLINE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def clean(text: object, newlines: bool = False) -> str:
    """``text`` with control characters shown as ``\\xNN``: no escape sequence reaches the terminal."""
    return (_CONTROL if newlines else _CONTROL_OR_NEWLINE).sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))


def safe(text: object, newlines: bool = False) -> str:
    """``text`` as rich shows it literally: control characters replaced, markup escaped."""
    return escape(clean(text, newlines))


def _plain(stream: Any) -> bool:
    """No colour, no live display: the stream is not a terminal, or the user set NO_COLOR."""
    return not stream.isatty() or "NO_COLOR" in os.environ


class _Console(Console):
    def on_broken_pipe(self) -> None:
        _reader_gone(self.file)


def _reader_gone(stream: Any) -> None:
    """The reader went away (`clusterctl status | head -1`): what is left to print goes nowhere and
    the command finishes as it would have, with its own exit code (rich and click would exit 1)."""
    global READER_GONE
    READER_GONE = True
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, stream.fileno())
    except (OSError, ValueError):
        pass
    finally:
        os.close(devnull)


READER_GONE = False


def reader_gone() -> bool:
    """Has stdout's reader gone? Also true for a pipe closed before anything was written to it."""
    if READER_GONE:
        return True
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), 0)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return False


def _write(text: str, flush: bool = False) -> None:
    try:
        sys.stdout.write(text)
        if flush:
            sys.stdout.flush()
    except BrokenPipeError:
        _reader_gone(sys.stdout)


def finish() -> None:
    """The end of a command: no live line left behind; stdout flushed (a reader that has gone is
    not an error)."""
    _stop_live()
    _write("", flush=True)


def _console(stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    plain = _plain(stream)
    return _Console(file=stream, no_color=plain, highlight=False, soft_wrap=plain, emoji=False,
                   width=None if not plain else _columns(200))


def _columns(default: int) -> int:
    """The width for output that is not a terminal: $COLUMNS when set, else wide enough not to wrap."""
    try:
        return max(20, int(os.environ["COLUMNS"]))
    except (KeyError, ValueError):
        return default


_LIVE: list[Live] = []  # live displays still on the terminal; the end of a command removes them


def _stop_live() -> None:
    """Take every live line off the terminal (Ctrl-C or an error ends a command mid-progress)."""
    while _LIVE:
        _LIVE.pop().stop()


def error(message: str, hint: str | None = None, details: str | None = None) -> None:
    _stop_live()
    console = _console(stderr=True)
    console.print(f"[bold red]error:[/] {safe(message)}")
    if details:
        console.print(safe(details, newlines=True), style="dim")
    if hint:
        console.print(f"[yellow]hint:[/] {safe(hint)}")


def interrupted() -> None:
    _stop_live()
    _console(stderr=True).print("interrupted")


def internal_error(summary: str, log: str) -> None:
    _stop_live()
    _console(stderr=True).print(f"[bold red]internal error:[/] {safe(summary)} (traceback in {safe(log)}; "
                                "please report it)")


def help_text(text: str) -> None:
    _write(text + "\n")


def warning(message: str) -> None:
    _console(stderr=True).print(f"[yellow]warning:[/] {safe(message)}")


def line(message: str) -> None:
    _console().print(safe(message))


def print_json(document: Any) -> None:
    _write(json.dumps(document, indent=2, sort_keys=False, default=str) + "\n")


# --- progress ---------------------------------------------------------------------------------


def _ask_password(host: str) -> str:
    import getpass

    return getpass.getpass(f"{host} SSH password: ")


class PlainProgress:
    """One line per change, on stderr, for logs and pipes. Of the hosts, only a failure is a line."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.last = ""
        self.started = time.monotonic()

    def _say(self, text: str) -> None:
        if not self.quiet and text != self.last:
            self.last = text
            print(f"[{time.monotonic() - self.started:5.1f}s] {clean(text)}", file=sys.stderr, flush=True)

    def step(self, message: str) -> None:
        self._say(message)

    def waiting(self, ready: list[str], expected: list[str]) -> None:
        self._say(f"{len(ready)}/{len(expected)} workers registered")

    def host(self, alias: str, state: str, detail: str = "") -> None:
        if state == FAILED:
            self._say(f"{alias}: failed: {detail}")

    def done(self) -> None:
        pass

    @contextmanager
    def paused(self) -> Iterator[None]:
        yield


class HostBoard:
    """Where each host of a fleet is, drawn to fit the terminal: the hosts still in flight and the
    failed ones get a row each (failed first), the finished ones only a count."""

    MAX_ROWS = 16  # host rows at most, whatever the terminal's height

    def __init__(self) -> None:
        self.hosts: dict[str, tuple[str, str]] = {}  # alias -> (state, detail), in the order first seen
        self._lock = threading.Lock()  # hosts report from the group's threads, the display reads from its own

    def set(self, alias: str, state: str, detail: str) -> None:
        with self._lock:
            self.hosts[alias] = (state, detail)

    def _snapshot(self) -> dict[str, tuple[str, str]]:
        with self._lock:
            return dict(self.hosts)

    @property
    def finished(self) -> bool:
        return all(state not in IN_FLIGHT for state, _ in self._snapshot().values())

    def counts(self) -> str:
        """``62 registered · 2 failed``: the states in their order in a host's life."""
        found: dict[str, int] = {}
        for state, _ in self._snapshot().values():
            found[state] = found.get(state, 0) + 1
        return " · ".join(f"{found[state]} {state}" for state in HOST_STATES if state in found)

    def lines(self, height: int) -> list[Text]:
        """The count line, then at most ``height - 1`` host rows, the last saying how many are not shown."""
        hosts = self._snapshot()
        if not hosts:
            return []
        lines = [Text.from_markup(f"  [bold]{len(hosts)} host(s)[/]: {safe(self.counts())}")]
        shown = [a for a, (state, _) in hosts.items() if state == FAILED]
        shown += [a for a, (state, _) in hosts.items() if state in IN_FLIGHT]
        room = max(1, min(self.MAX_ROWS, height - 1))
        hidden = shown[room - 1:] if len(shown) > room else []
        width = max((len(clean(a)) for a in shown), default=0)
        for alias in shown[:len(shown) - len(hidden)]:
            lines.append(self._row(alias, *hosts[alias], width))
        if hidden:
            lines.append(Text(f"  … and {len(hidden)} more host(s) in flight", style="dim"))
        for line in lines:
            line.no_wrap = True
            line.overflow = "ellipsis"
        return lines

    @staticmethod
    def _row(alias: str, state: str, detail: str, width: int) -> Text:
        style = "red" if state == FAILED else "cyan"
        return Text.from_markup(f"  {safe(alias).ljust(width)}  [{style}]{state:<10}[/] {safe(detail)}".rstrip())

    def summary(self) -> list[Text]:
        """What stays on the terminal: the counts, and each failed host with its reason."""
        hosts = self._snapshot()
        failed = [(a, detail) for a, (state, detail) in hosts.items() if state == FAILED]
        mark = "[red]✗[/]" if failed else "[green]✓[/]"
        lines = [Text.from_markup(f"{mark} {len(hosts)} host(s): {safe(self.counts())}")]
        lines += [Text.from_markup(f"  {safe(alias)}: [red]failed[/] {safe(detail)}") for alias, detail in failed]
        return lines


class LiveProgress:
    """On a terminal: the step, the workers registered and the time taken on a live line, and below it
    one row per host in flight (see ``HostBoard``), summed up when every host is done."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or _console(stderr=True)
        self.started = time.monotonic()
        self.text = ""
        self.board = HostBoard()
        # Rendered afresh at every refresh, so that the time keeps counting while a step waits.
        self.live = Live(console=self.console, transient=True, refresh_per_second=8, get_renderable=self.renderable)
        self._start()

    def _start(self) -> None:
        if not self.live.is_started:
            self.live.start()
            _LIVE.append(self.live)

    def step(self, message: str) -> None:
        self.text = message
        self._refresh()

    def waiting(self, ready: list[str], expected: list[str]) -> None:
        missing = [name for name in expected if name not in ready]
        self.text = f"{len(ready)}/{len(expected)} workers registered" + (
            f" (waiting for {', '.join(missing[:4])}{'…' if len(missing) > 4 else ''})" if missing else "")
        self._refresh()

    def host(self, alias: str, state: str, detail: str = "") -> None:
        self.board.set(alias, state, detail)
        self._refresh()

    def renderable(self) -> Group:
        top = Text.from_markup(f"[cyan]⠿[/] {safe(self.text)} [dim]{time.monotonic() - self.started:.1f}s[/]",
                               overflow="ellipsis")
        top.no_wrap = True
        return Group(top, *self.board.lines(self.console.height - 2))

    def _refresh(self) -> None:
        self._start()  # a step after `done` (one command, several phases) shows the display again
        self.live.refresh()

    def done(self) -> None:
        self.live.stop()
        if self.live in _LIVE:
            _LIVE.remove(self.live)
        if self.board.hosts and self.board.finished:
            for line in self.board.summary():
                self.console.print(line, no_wrap=True, overflow="ellipsis")
            self.board = HostBoard()

    @contextmanager
    def paused(self) -> Iterator[None]:
        """The live line gives the terminal up, e.g. for a password prompt."""
        self.live.stop()
        try:
            yield
        finally:
            self.live.start()


def progress(quiet: bool = False, json_output: bool = False) -> PlainProgress | LiveProgress:
    if not quiet and not json_output and not _plain(sys.stderr):
        return LiveProgress()
    return PlainProgress(quiet=quiet or json_output)


def password_prompt(shown: PlainProgress | LiveProgress) -> PasswordPrompt:
    """Asks for a host's SSH password on the terminal, with the progress display paused."""

    def ask(host: str) -> str:
        with shown.paused():
            return _ask_password(host)

    return ask


# --- cluster reports ------------------------------------------------------------------------------


def _bytes(value: int | None) -> str:
    """Decimal units throughout, as users write sizes: ``memory_limit: 2GB`` shows as ``2 GB``."""
    if not value:
        return "-"
    amount = float(value)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if amount < 999.5 or unit == "TB":
            return f"{amount:.3g} {unit}" if unit != "B" else f"{int(amount)} B"
        amount /= 1000
    raise AssertionError("unreachable")


def _resources(resources: dict[str, float]) -> str:
    return " ".join(f"{k}={int(v) if float(v).is_integer() else v}" for k, v in resources.items()) or "-"


WORKER_COLUMNS = ("worker", "host", "address", "threads", "memory", "resources", "processing", "in memory")


def _worker_cells(worker: Any) -> list[str]:
    name = worker.name + {"missing": " (missing)", "extra": " (extra)"}.get(worker.state, "")
    running = worker.address is not None
    memory = f"{_bytes(worker.memory)} / {_bytes(worker.memory_limit)}" if running else "-"
    host = worker.host + (f" (GPU {worker.gpu['index']}: {worker.gpu['name']})" if worker.gpu else "")
    return [name, host, worker.address or "-", str(worker.nthreads or "-"), memory,
            _resources(worker.resources), str(worker.processing) if running else "-",
            str(worker.in_memory) if running else "-"]


def _worker_table(report: ClusterReport, console: Console) -> None:
    """One row per worker when the table fits the terminal; else two lines per worker, so that a
    name or an address (what `remove-worker` accepts) is never cut."""
    styles = [{"missing": "red", "extra": "cyan"}.get(w.state) for w in report.workers]
    rows = [[clean(cell) for cell in _worker_cells(w)] for w in report.workers]  # hosts' names: text only
    table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    for column in WORKER_COLUMNS:
        table.add_column(column, justify="right" if column in ("threads", "processing", "in memory") else "left",
                         no_wrap=True)
    for cells, style in zip(rows, styles, strict=True):
        table.add_row(*map(safe, cells), style=style)
    from rich.cells import cell_len

    natural = sum(max(cell_len(text) for text in column) for column in zip(WORKER_COLUMNS, *rows, strict=True))
    if natural + 2 * (len(WORKER_COLUMNS) - 1) <= console.width:
        console.print(table)
        return
    name_width = max([len("worker"), *(len(c[0]) for c in rows)])
    host_width = max([len("host"), *(len(c[1]) for c in rows)])
    console.print(f"[bold]{'worker'.ljust(name_width)}  {'host'.ljust(host_width)}  address[/]", soft_wrap=True)
    for cells, worker, style in zip(rows, report.workers, styles, strict=True):
        name, host, address, threads, memory, resources, processing, in_memory = cells
        console.print(safe(f"{name.ljust(name_width)}  {host.ljust(host_width)}  {address}"), style=style,
                      soft_wrap=True)
        if worker.address is None:
            continue
        details = (f"{threads} thread{'' if threads == '1' else 's'}, memory {memory}, "
                   f"{'no resources' if resources == '-' else resources}, {processing} processing, "
                   f"{in_memory} in memory")
        console.print("  " + safe(details), style=style or "dim", soft_wrap=False)


def _tasks_line(report: ClusterReport) -> str | None:
    tasks = report.tasks
    if tasks is None:
        return None
    return (f"tasks      {tasks.waiting} waiting, {tasks.processing} processing, {tasks.in_memory} in memory, "
            f"{tasks.erred} erred")


def cluster_report(report: ClusterReport, console: Console | None = None) -> None:
    from clusterctl.report import add_worker_command

    console = console or _console()
    if report.headline:
        console.print(f"[green]✓[/] {safe(report.headline)}")
    console.print(f"cluster    [bold]{safe(report.cluster)}[/]")
    state = ("[green]answers[/]" if report.scheduler_answers
             else f"[red]does not answer[/] ({safe(report.scheduler_error or '')})")
    if report.scheduler_uptime is not None:
        state += f", up {duration(report.scheduler_uptime)}"
    console.print(f"scheduler  {safe(report.scheduler_address)}  {state}")
    console.print(f"dashboard  {safe(report.dashboard or report.dashboard_note or 'not running on the scheduler')}")
    if report.adaptive is not None:
        a = report.adaptive
        what = (f"supervisor pid {a.pid}, minimum {a.minimum}, maximum {a.maximum if a.maximum is not None else 'none'}"
                + (f", log {a.log}" if a.log else ""))
        console.print(f"adaptive   {safe(what)}" + ("" if a.alive else "  [red](not running)[/]"))
    tasks_line = _tasks_line(report)
    if tasks_line:
        console.print(safe(tasks_line))
    _worker_table(report, console)
    if report.processes is not None:
        processes = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
        for column in ("process", "role", "host", "pid", "state", "log"):
            # A log path folds onto the next line rather than losing its end to an ellipsis.
            processes.add_column(column, no_wrap=column != "log", overflow="fold" if column == "log" else "ellipsis")
        for p in report.processes:
            alive = {True: "[green]alive[/]", False: "[red]dead[/]", None: "[yellow]host unreachable[/]"}[p.alive]
            processes.add_row(safe(p.name), safe(p.role), safe(p.host), str(p.pid), alive, safe(p.note or p.log))
        console.print(processes)
    if not report.scheduler_answers:
        console.print("[red]✗ the scheduler does not answer[/]")
    elif report.missing:
        console.print(f"[red]✗ {len(report.missing)} expected worker(s) missing:[/] {safe(', '.join(report.missing))}")
    else:
        count = len(report.workers)
        console.print(f"[green]✓ all {count - len(report.extra)} expected worker(s) present[/]"
                      + (f", {len(report.extra)} extra" if report.extra else ""))
    for waiting in report.tasks.unsatisfied if report.tasks else ():
        console.print(f"[yellow]![/] {waiting.tasks} task(s) wait for {safe(_resources(waiting.resources))}, "
                      "which no worker offers; to run them:")
        console.print(f"  {safe(add_worker_command(waiting.resources))}", soft_wrap=True)


def dry_run(result: DryRun, json_output: bool) -> None:
    if json_output:
        print_json({"schema": JSON_SCHEMA_VERSION, "cluster": result.cluster,
                    "scheduler": {"address": result.scheduler_address}, "commands": result.commands,
                    "hosts": {host: {"address": address, "processes": result.processes.get(host, []),
                                     "notes": result.notes.get(host, [])} for host, address in result.addresses.items()}})
        return
    console = _console()
    console.print(f"dry run for cluster [bold]{safe(result.cluster)}[/]: nothing is started")
    console.print(f"scheduler address {safe(result.scheduler_address)}")
    for host in dict.fromkeys([*result.commands, *result.notes]):
        names = [p["name"] for p in result.processes.get(host, [])]
        address = result.addresses.get(host)
        console.print(f"[bold]{safe(host)}[/]" + (f" {safe(address)}" if address and address != host else "")
                      + (f" ({safe(', '.join(names))})" if names else ""))
        for text in result.commands.get(host, []):
            console.print(f"  {safe(text)}", soft_wrap=True)
        for text in result.notes.get(host, []):
            console.print(f"  [dim]# {safe(text)}[/]", soft_wrap=True)


def remove_result(result: RemoveResult, json_output: bool) -> None:
    if json_output:
        print_json({"schema": JSON_SCHEMA_VERSION, **asdict(result)})
        return
    console = _console()
    if result.retire_note:
        console.print(f"[yellow]note:[/] {safe(result.retire_note)}")
    console.print(f"[green]✓[/] removed {safe(', '.join(result.removed))} from cluster {safe(result.cluster)}"
                  + (f"; stopped {safe(', '.join(map(str, result.stopped)))}" if result.stopped else ""))


def down_result(result: DownResult, json_output: bool, limited: bool = False) -> None:
    if json_output:
        print_json({"schema": JSON_SCHEMA_VERSION, **asdict(result)})
        return
    console = _console()
    if result.already_gone:
        console.print("no current cluster: nothing to do" if result.cluster is None
                      else f"cluster {safe(result.cluster)} is not running: nothing to do")
        return
    name = result.cluster or ""
    if result.without_state:
        console.print(f"no local state for {safe(name)}: found its processes through the hosts' pid files")
    if result.scheduler_note:
        console.print(f"[yellow]note:[/] {safe(result.scheduler_note)}; stopped the processes by pid instead")
    for note in result.notes:
        console.print(f"[yellow]note:[/] {safe(note)}")
    if limited and not any(p.name == "scheduler" for p in result.stopped):  # the rest of the cluster runs
        hosts = ", ".join(dict.fromkeys(p.host for p in result.stopped)) or "the selected hosts"
        console.print(f"[green]✓[/] {len(result.stopped)} process(es) on {safe(hosts)} stopped and verified gone")
        return
    console.print(f"[green]✓[/] cluster {safe(name)} is down: "
                  f"{len(result.stopped)} process(es) stopped and verified gone")


def adapt_result(result: AdaptResult, json_output: bool) -> None:
    record = result.supervisor
    if json_output:
        print_json({"cluster": result.cluster, "detached": result.detached, "supervisor": asdict(record)})
        sys.stdout.flush()
        return
    bounds = f"minimum {record.minimum}, maximum {record.maximum if record.maximum is not None else 'none'}"
    where = f"; log {record.log}" if record.log else "; Ctrl-C or SIGTERM stops it"
    _console().print(f"[green]✓[/] cluster {safe(result.cluster)} adapts ({bounds}, every {record.interval:g}s): "
                     f"supervisor pid {record.pid}{safe(where)}")
    sys.stdout.flush()


def env_exports(values: dict[str, str], json_output: bool) -> None:
    if json_output:
        print_json({"schema": JSON_SCHEMA_VERSION, "exports": values})
        return
    import shlex

    for key, value in values.items():
        _write(f"export {key}={shlex.quote(value)}\n")


def version_table(report: PreflightReport) -> None:
    """host x package versions, mismatches marked: shown when preflight refuses. Columns: python,
    dask, distributed and every package that differs somewhere; this machine as the last row."""
    from clusterctl.preflight import ALWAYS_SHOWN

    console = _console(stderr=True)
    bad_anywhere = {p for packages in report.mismatched.values() for p in packages}
    columns = [p for p in report.packages if p in ALWAYS_SHOWN or p in bad_anywhere]
    table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    table.add_column("host")
    for package in columns:
        table.add_column(package)
    rows = list(report.versions.items()) + ([("(this machine)", report.local)] if report.local else [])
    for host, found in rows:
        bad = report.mismatched.get(host, [])
        cells = [f"[red]{safe(str(found.get(p)))}[/]" if p in bad else safe(str(found.get(p))) for p in columns]
        marker = " (scheduler)" if host == report.reference_host else ""
        table.add_row(safe(host) + marker, *cells)
    console.print(table)


# --- the operator's view: uptime, status --watch, logs, check, init, schema, -v ---------------------


def duration(seconds: float) -> str:
    """``42s``, ``3m 07s``, ``5h 02m``, ``2d 03h``."""
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours:02d}h"


def watch(reports: Iterable[ClusterReport], json_output: bool, interval: float) -> None:
    """`status --watch`: redraw in place on a terminal; else reprint (JSON: one document per line).

    A reader that leaves (`status --watch | head -1`) has what it wanted: a quiet, successful end.
    """
    try:
        _watch(reports, json_output, interval)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing more to flush at exit


def _reader_left() -> None:
    raise BrokenPipeError  # rich's own answer is SystemExit(1): for `watch`, a closed pipe is the end


def _watch(reports: Iterable[ClusterReport], json_output: bool, interval: float) -> None:
    if json_output:
        for report in reports:
            _write(json.dumps(report_document(report), default=str) + "\n", flush=True)
            if READER_GONE:
                return
        return
    console = _console()
    console.on_broken_pipe = _reader_left  # type: ignore[method-assign]
    if _plain(sys.stdout):
        for report in reports:
            console.print(f"--- {time.strftime('%H:%M:%S')} (every {interval:g}s; Ctrl-C to stop)")
            cluster_report(report, console)
            _write("", flush=True)
            if READER_GONE:
                return
        return
    from io import StringIO

    from rich.console import Group
    from rich.text import Text

    with Live(console=console, auto_refresh=False) as live:
        for report in reports:
            buffer = Console(file=StringIO(), force_terminal=True, color_system="auto" if console.color_system else None,
                             width=console.width, highlight=False, emoji=False)
            cluster_report(report, buffer)
            header = Text(f"{time.strftime('%H:%M:%S')}  every {interval:g}s, Ctrl-C to stop", style="dim")
            live.update(Group(header, Text.from_ansi(buffer.file.getvalue())), refresh=True)  # type: ignore[attr-defined]


_LOG_STYLES = ("cyan", "magenta", "green", "yellow", "blue", "bright_cyan", "bright_magenta", "bright_green")


def log_stream(stream: LogStream, quiet: bool = False) -> None:
    """`clusterctl logs`: lines as they come, ``[process]``-prefixed when several logs are shown."""
    from rich.text import Text

    plain = _plain(sys.stdout)
    console = _console()
    width = max((len(p.name) for p in stream.processes), default=0) + 3
    styles = {p.name: _LOG_STYLES[i % len(_LOG_STYLES)] for i, p in enumerate(stream.processes)}
    if stream.follow and not quiet:
        _console(stderr=True).print(f"[dim]following {len(stream.processes)} log(s) of cluster "
                                    f"{safe(stream.cluster)}; Ctrl-C to stop[/]")
    for chunk in stream:
        if chunk.note:
            (warning if chunk.failed else note)(chunk.note)
        lines = [] if chunk.note else chunk.lines
        prefix = f"[{chunk.process}]".ljust(width) if stream.prefixed else ""
        if plain:
            _write("".join(f"{clean(prefix)}{clean(line)}\n" for line in lines))
        else:
            for text in lines:
                console.print(Text.assemble((clean(prefix), styles.get(chunk.process, "")), clean(text)), soft_wrap=True)
        _write("", flush=True)
        if reader_gone():  # also while following a log that has nothing new to write
            return


def note(message: str) -> None:
    _console(stderr=True).print(f"[dim]note:[/] {safe(message)}")


CHECK_LABELS = {"reachable": "reachable", "python": "python", "versions": "versions", "gpus": "GPUs",
                "port_free": "port free", "reaches_scheduler": "reaches scheduler"}


def check_report(report: CheckReport, json_output: bool) -> None:
    if json_output:
        print_json(report.document())
        return
    console = _console()
    where = f" at {safe(report.scheduler_address)}" if report.scheduler_address else ""
    console.print(f"cluster [bold]{safe(report.cluster)}[/] ({safe(report.config)}): "
                  f"scheduler on {safe(report.scheduler_host)}{where}")
    table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    table.add_column("host")
    table.add_column("roles")
    shown = [name for name in CHECK_LABELS  # the GPUs column only when some worker group has `gpus:`
             if name != "gpus" or any(name in host.checks for host in report.hosts)]
    for name in shown:
        table.add_column(CHECK_LABELS[name], justify="center")
    marks = {"ok": "[green]✓[/]", "failed": "[red]✗[/]", "skipped": "[dim]-[/]"}
    for host in report.hosts:
        cells = [marks[host.checks[name].status] if name in host.checks else "" for name in shown]
        table.add_row(safe(host.host), safe(",".join(host.roles)), *cells)
    console.print(table)
    for host in report.hosts:
        if host.gpus:  # what a worker group with `gpus:` would get there
            console.print(f"{safe(host.host)}: " + "; ".join(
                f"GPU {gpu.index}: {safe(gpu.name)}" + (f", {gpu.memory_mib} MiB" if gpu.memory_mib is not None else "")
                for gpu in host.gpus))
    for alias, result in report.failures:
        console.print(f"[red]✗[/] {safe(alias)}: {CHECK_LABELS[result.name]}: {safe(result.reason or '')}")
        if result.hint:
            console.print(f"  [yellow]hint:[/] {safe(result.hint)}")
    if report.show_environment:
        environment_matrix(report)
    for text in report.warnings:
        warning(text)
    failed_hosts = [h for h in report.hosts if not h.ok]
    if failed_hosts:
        console.print(f"[red]✗ {len(report.failures)} check(s) failed on {len(failed_hosts)} of "
                      f"{len(report.hosts)} host(s)[/]")
    else:
        console.print(f"[green]✓ all {len(report.hosts)} host(s) passed every check[/]")


def environment_matrix(report: CheckReport) -> None:
    """`check --env`: one row per package, one column per host and one for this machine; a
    version that differs from the scheduler host's is red (this machine's: yellow, a warning)."""
    console = _console()
    asked = [host for host in report.hosts if host.versions]
    reference = next((h.versions for h in asked if h.host == report.scheduler_host), {})
    table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    table.add_column("package")
    for host in asked:
        table.add_column(host.host + (" (scheduler)" if host.host == report.scheduler_host else ""))
    table.add_column("this machine")

    def cell(package: str, found: dict[str, Any], style: str) -> str:
        from clusterctl.preflight import comparable

        text = escape(str(found.get(package) or "-"))
        same = comparable(package, found.get(package)) == comparable(package, reference.get(package))
        return text if same or not reference else f"[{style}]{text}[/]"

    for package in report.packages:
        table.add_row(package, *[cell(package, h.versions, "red") for h in asked], cell(package, report.local, "yellow"))
    console.print(table)


def init_result(result: InitResult) -> None:
    if result.path == "-":
        _write(result.text)
        return
    import shlex

    path = shlex.quote(result.path)
    _console().print(f"[green]✓[/] wrote {safe(result.path)}{' (replaced)' if result.overwrote else ''}; "
                     f"next: edit it, then `clusterctl check {safe(path)}` and `clusterctl up {safe(path)}`")


def list_result(result: ListResult, json_output: bool) -> None:
    if json_output:
        print_json(result.document())
        return
    console = _console()
    if not result.clusters:
        console.print("no clusters: start one with `clusterctl up CONFIG`")
        return
    table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    for column in ("cluster", "state", "scheduler", "workers", "age", "adaptive"):
        table.add_column(column, justify="right" if column in ("workers", "age") else "left")
    styles = {"running": "green", "degraded": "yellow", "scheduler down": "red", "gone": "dim", "unreadable": "red"}
    for summary in result.clusters:
        name = summary.name + (" (current)" if summary.name == result.current else "")
        age = duration(summary.age_seconds) if summary.age_seconds is not None else "-"
        table.add_row(safe(name), f"[{styles.get(summary.state, '')}]{summary.state}[/]",
                      safe(summary.scheduler_address or "-"), f"{summary.workers_present}/{summary.workers_expected}",
                      age, "on" if summary.adaptive else "-")
    console.print(table)
    for summary in result.clusters:
        if summary.note:
            console.print(f"[yellow]note:[/] {safe(summary.name)}: {safe(summary.note)}")


def exec_result(result: ExecResult, json_output: bool) -> None:
    if json_output:
        print_json(result.document())
        return
    console = _console()
    width = max((len(outcome.host) for outcome in result.hosts), default=0) + 3
    for outcome in result.hosts:
        prefix = f"[{outcome.host}]".ljust(width)
        for text in outcome.stdout.splitlines():
            console.print(safe(prefix + text), soft_wrap=True, highlight=False)
        for text in outcome.stderr.splitlines():
            console.print(safe(prefix + text), soft_wrap=True, style="yellow", highlight=False)
    for outcome in result.hosts:
        if outcome.error is not None:
            console.print(f"[red]✗[/] {safe(outcome.error)}")
        elif outcome.exit_code != 0:
            console.print(f"[red]✗[/] {safe(outcome.host)}: exited {outcome.exit_code}")
    failed = [o for o in result.hosts if not o.succeeded]
    summary = f"{len(result.hosts) - len(failed)} of {len(result.hosts)} host(s) succeeded"
    console.print(f"[red]✗ {summary}[/]" if failed else f"[green]✓ {summary}[/]")


def bench_result(result: BenchResult, json_output: bool) -> None:
    if json_output:
        print_json(result.document())
        return
    console = _console()
    ours, local = result.figures, result.baseline
    console.print(f"cluster [bold]{safe(result.cluster)}[/] at {safe(result.scheduler_address)}: "
                  f"{ours.workers} worker(s), {ours.threads} thread(s); median of {result.settings.repeats}")
    table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    table.add_column("measure")
    table.add_column("this cluster", justify="right")
    if local is not None:
        table.add_column(f"LocalCluster ({local.workers} processes)", justify="right")

    def number(value: float | None, unit: str, digits: int = 2) -> str:
        return "-" if value is None else f"{value:,.{digits}f} {unit}"

    rows = [
        (f"per-task overhead ({result.settings.tasks} no-op tasks)", lambda f: number(f.overhead_ms, "ms/task", 3)),
        ("throughput, every thread busy", lambda f: number(f.throughput, "tasks/s", 0)
         + (f" ({f.throughput / f.ideal_throughput:.0%} of ideal)" if f.throughput and f.ideal_throughput else "")),
        (f"transfer of {result.settings.transfer_mb} MB between workers", lambda f: number(f.bandwidth_mb_s, "MB/s", 0)),
    ]
    for label, cell in rows:
        table.add_row(label, cell(ours), *([cell(local)] if local is not None else []))
    console.print(table)
    if ours.transfer:
        console.print(f"[dim]transfer: {safe(ours.transfer)}[/]")
    for text in ours.notes:
        console.print(f"[yellow]note:[/] {safe(text)}")


def sync_result(result: SyncReport | CleanReport, json_output: bool) -> None:
    if json_output:
        print_json(result.document())
        return
    from clusterctl.environment import SyncReport

    console = _console()
    if not isinstance(result, SyncReport):  # --clean
        for alias, removed in result.removed.items():
            console.print(f"{escape(alias)}: " + (f"removed {escape(', '.join(removed))}" if removed else "nothing to remove"))
        console.print(f"[green]✓[/] cluster {escape(result.cluster)}: the environment is removed from "
                      f"{len(result.removed)} host(s)")
        return
    table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    for column in ("host", "platform", "shipped", "installed", "seconds"):
        table.add_column(column, justify="right" if column in ("shipped", "seconds") else "left")
    for host in result.hosts:
        shipped = f"{len(host.shipped)} wheel(s), {host.shipped_bytes / 1e6:.1f} MB" if host.shipped else "0 B"
        installed = "yes" + (f" (removed {', '.join(host.removed)})" if host.removed else "") if host.installed else "no"
        table.add_row(escape(host.host), escape(host.target), shipped, escape(installed), f"{host.seconds:.2f}")
    console.print(table)
    console.print(f"[green]✓[/] {escape(result.headline)}")


class _RemoteLogHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            arrow = "↳" if getattr(record, "continued", False) else "→"  # ↳: to an agent already running
            _console(stderr=True).print(f"[dim]{arrow} {safe(record.getMessage())}[/]", soft_wrap=True)
        except (OSError, ValueError):
            self.handleError(record)


def enable_remote_log() -> None:
    """`clusterctl -v`: every remote command on stderr, as ``clusterctl.remote_log`` formats it."""
    from clusterctl.remote_log import logger

    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    if not any(isinstance(h, _RemoteLogHandler) for h in logger.handlers):
        logger.addHandler(_RemoteLogHandler())


def ssh_config(report: Any, json_output: bool) -> None:
    """`ssh-config`: ``key value`` lines as `ssh -G` prints them (one line per value of a repeated key)."""
    if json_output:
        options: dict[str, Any] = {}
        for key, value in report.lines:
            if key in ("identityfile", "certificatefile"):
                options.setdefault(key, []).append(value)
            elif key in ("userknownhostsfile", "globalknownhostsfile"):
                options[key] = [] if value == "none" else value.split()
            else:
                options[key] = value
        print_json({"schema": JSON_SCHEMA_VERSION, "host": report.host, "resolved_by": report.resolved_by,
                    "overrides": report.overrides, "options": options})
        return
    # Plain lines, never wrapped, for `diff` with `ssh -G`; control characters from the config are replaced.
    sys.stdout.write("".join(f"{key} {_printable(value)}\n" for key, value in report.lines))


def _printable(text: str) -> str:
    return "".join(c if c == "\t" or not (ord(c) < 32 or 127 <= ord(c) < 160) else "?" for c in text)
