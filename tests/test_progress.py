"""The fleet's progress: on an 80x24 terminal, 64 hosts read as a count line, the failed and in-flight
hosts one row each (never more rows than fit), and a summary that stays; without a terminal, the plain
lines of old, a failed host one line more."""

from __future__ import annotations

import io
import re
import sys
from pathlib import Path

import pytest
from rich.console import Console

from clusterctl import render
from tests.helpers.cluster import WORKER_ENV, clusterctl, free_port, write_inventory


def terminal(height: int = 24) -> Console:
    return Console(width=80, height=height, record=True, file=io.StringIO(), force_terminal=True,
                   color_system=None, legacy_windows=False)


def shown(progress: render.LiveProgress) -> list[str]:
    """What the live display draws now, line by line, at 80 columns."""
    console = terminal()
    console.print(progress.renderable())
    return console.export_text().splitlines()


def fleet(count: int = 64) -> list[str]:
    return [f"node{i:02d}" for i in range(1, count + 1)]


def test_64_hosts_fit_an_80x24_terminal_finished_ones_counted_failed_ones_shown() -> None:
    progress = render.LiveProgress(terminal())
    try:
        progress.step("starting 64 process(es) on 64 host(s)")
        for alias in fleet():
            progress.host(alias, "connecting")
        lines = shown(progress)
        assert len(lines) <= 24 - 2 and all(len(line) <= 80 for line in lines), lines
        assert "64 host(s): 64 connecting" in lines[1]
        assert re.fullmatch(r"\s+… and \d+ more host\(s\) in flight", lines[-1]), lines[-1]

        for alias in fleet()[:60]:
            progress.host(alias, "registered", "1 worker(s)")
        progress.host("node61", "failed", "python3: cannot import distributed: No module named 'distributed' " * 3)
        progress.host("node62", "started", "4 process(es)")
        lines = shown(progress)
        assert all(len(line) <= 80 for line in lines), lines
        assert "64 host(s): 2 connecting · 1 started · 60 registered · 1 failed" in lines[1]
        assert lines[2].split()[:2] == ["node61", "failed"] and lines[2].endswith("…"), "failed first, cut to fit"
        assert [line.split()[0] for line in lines[3:]] == ["node62", "node63", "node64"]
        assert not any("node01" in line for line in lines), "a finished host is only counted"
    finally:
        progress.done()


def test_the_summary_stays_once_every_host_is_done() -> None:
    console = terminal()
    progress = render.LiveProgress(console)
    for alias in fleet():
        progress.host(alias, "stopping")
    progress.done()  # hosts still in flight (one command's phases): no summary yet
    assert not re.search(r"^[✓✗] ", console.export_text(), re.MULTILINE)
    for alias in fleet():
        progress.host(alias, "failed" if alias == "node07" else "stopped", "unreachable" if alias == "node07" else "")
    progress.done()
    text = console.export_text()
    assert "✗ 64 host(s): 63 stopped · 1 failed" in text and "node07: failed unreachable" in text


def test_a_tiny_terminal_still_shows_one_host_row() -> None:
    progress = render.LiveProgress(terminal(height=5))
    try:
        for alias in fleet(10):
            progress.host(alias, "connecting")
        lines = shown(progress)
        assert len(lines) <= 4 and "10 host(s)" in lines[1], lines
    finally:
        progress.done()


def test_without_a_terminal_progress_stays_plain_lines(capsys: pytest.CaptureFixture[str]) -> None:
    plain = render.progress()  # pytest's captured stderr is no terminal
    assert isinstance(plain, render.PlainProgress)
    plain.step("checking 64 host(s)")
    for alias in fleet():
        plain.host(alias, "connecting")
        plain.host(alias, "checked")
    plain.host("node07", "failed", "connection refused")
    plain.done()
    lines = capsys.readouterr().err.splitlines()
    assert [re.sub(r"^\[\s*[\d.]+s\] ", "", line) for line in lines] == [
        "checking 64 host(s)", "node07: failed: connection refused"]
    assert not any("\x1b" in line for line in lines)


class Recorded:
    """A progress display that remembers each host's states in order."""

    def __init__(self) -> None:
        self.hosts: dict[str, list[str]] = {}
        self.details: dict[str, str] = {}

    def step(self, message: str) -> None:
        pass

    def waiting(self, ready: list[str], expected: list[str]) -> None:
        pass

    def host(self, alias: str, state: str, detail: str = "") -> None:
        states = self.hosts.setdefault(alias, [])
        self.details[alias] = detail
        if not states or states[-1] != state:
            states.append(state)

    def done(self) -> None:
        pass


def two_hosts(tmp_path: Path, name: str, **b_settings: str) -> Path:
    hosts = {alias: {"connection": "local", "run_dir": str(tmp_path / alias)} for alias in ("a", "b")}
    hosts["b"].update(b_settings)
    return write_inventory(tmp_path / "c.yaml", {
        "name": name, "defaults": {"env": WORKER_ENV}, "hosts": hosts,
        "scheduler": {"host": "a", "port": free_port(), "dashboard_address": None},
        "workers": [{"name": "w", "host": "b", "nworkers": 1, "nthreads": 1}]})


def test_up_and_down_tell_each_host_s_way_through_the_progress(tmp_path: Path, clusterctl_home: Path) -> None:
    from clusterctl.commands.down import down
    from clusterctl.commands.up import up

    config = two_hosts(tmp_path, "rows")
    shown = Recorded()
    up(str(config), shown)
    assert shown.hosts == {"a": ["connecting", "checked", "started", "registered"],
                           "b": ["connecting", "checked", "started", "registered"]}
    again = Recorded()
    up(str(config), again)
    assert again.hosts == {"a": ["connecting", "checked", "kept"], "b": ["connecting", "checked", "kept"]}
    stopped = Recorded()
    down(stopped, "rows")
    assert stopped.hosts == {"a": ["stopping", "stopped"], "b": ["stopping", "stopped"]}


def test_a_host_that_fails_the_preflight_is_shown_failed_with_its_reason(tmp_path: Path,
                                                                        clusterctl_home: Path) -> None:
    from clusterctl.commands.up import up
    from clusterctl.errors import ClusterctlError

    config = two_hosts(tmp_path, "broken", python="/nonexistent/python3")
    shown = Recorded()
    with pytest.raises(ClusterctlError, match="b: "):
        up(str(config), shown)
    assert shown.hosts["a"] == ["connecting", "checked"]
    assert shown.hosts["b"] == ["connecting", "failed"]
    assert "/nonexistent/python3" in shown.details["b"] and not shown.details["b"].startswith("b:")


def test_up_and_down_in_a_pipe_print_plain_lines_and_json_is_unchanged(tmp_path: Path, clusterctl_home: Path) -> None:
    config = two_hosts(tmp_path, "pipe")
    up = clusterctl("up", str(config))
    assert up.exit_code == 0, up.stderr
    assert all(re.match(r"\[\s*[\d.]+s\] ", line) for line in up.stderr.splitlines()), up.stderr
    assert "\x1b" not in up.stderr and "host(s):" not in up.stderr
    down = clusterctl("down", "--json")
    assert down.exit_code == 0 and down.stderr == "", down.stderr
    assert set(down.json()) == {"schema", "cluster", "stopped", "already_gone", "scheduler_note", "without_state",
                                "notes", "unrecorded_scheduler"}


def test_hosts_reporting_from_many_threads_while_the_display_draws() -> None:
    """The group's threads report hosts while the live display's own thread draws the board."""
    import threading

    board = render.HostBoard()
    errors: list[BaseException] = []
    stop = threading.Event()

    def draw() -> None:
        try:
            while not stop.is_set():
                board.lines(24)
                board.summary()
        except BaseException as exc:  # noqa: BLE001 - what the display thread would die of
            errors.append(exc)

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads take turns often: a board read while it grows shows
    drawer = threading.Thread(target=draw)
    drawer.start()
    try:
        reporters = [threading.Thread(target=lambda k=k: [board.set(f"h{k}-{i}", "connecting", "")
                                                           for i in range(3000)]) for k in range(4)]
        for reporter in reporters:
            reporter.start()
        for reporter in reporters:
            reporter.join()
    finally:
        stop.set()
        drawer.join()
        sys.setswitchinterval(switch)
    assert errors == [] and len(board.hosts) == 12000
