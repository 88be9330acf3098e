"""The pieces of the start path that a cluster cannot easily show: root causes from a log, the
error that names a dead process, the dashboard note, and a host group's per-host results."""

from __future__ import annotations

from pathlib import Path

import pytest

from clusterctl.errors import ClusterctlError, HostError, PartialFailureError
from clusterctl.group import HostGroup
from clusterctl.host import Host
from clusterctl.inventory import HostSettings, parse_inventory
from clusterctl.lifecycle import reason_from_log, start_failure
from clusterctl.records import ProcessRecord
from clusterctl.report import build_report
from clusterctl.state import ClusterState
from clusterctl.transport.local import LocalTransport
from tests.helpers.cluster import PYTHON

DASK_PORT_IN_USE = """\
2026-12-02 10:00:00,001 - distributed.scheduler - INFO - State start
Traceback (most recent call last):
  File ".../distributed/comm/tcp.py", line 600, in start
OSError: [Errno 98] Address already in use
2026-12-02 10:00:00,100 - distributed.scheduler - INFO - Scheduler closing due to failure-to-start-<Scheduler>
RuntimeError: Scheduler failed to start.
"""


@pytest.mark.parametrize(("log", "reason"), [
    (DASK_PORT_IN_USE, "OSError: [Errno 98] Address already in use"),
    ("loading\nModuleNotFoundError: No module named 'mylab'\nexiting\n", "ModuleNotFoundError: No module named 'mylab'"),
    ("start\nValueError: bad value\nmore output\n", "ValueError: bad value"),
    ("all fine\nnothing to see\n", ""),
    ("", ""),
], ids=["root-cause-above-the-last-error", "missing-module", "last-error-line", "no-error", "empty"])
def test_the_root_cause_is_found_above_the_final_failure_line(log: str, reason: str) -> None:
    assert reason_from_log(log) == reason


def test_a_very_long_cause_is_cut() -> None:
    assert len(reason_from_log("Error: " + "x" * 5000)) == 200


def local_host(tmp_path: Path, alias: str = "me") -> Host:
    settings = HostSettings(connection="local", python=PYTHON, run_dir=str(tmp_path))
    return Host(alias, settings, "t", LocalTransport(alias))


def test_a_dead_process_is_named_with_its_host_root_cause_and_log_tail(tmp_path: Path) -> None:
    log = tmp_path / "scheduler.log"
    log.write_text(DASK_PORT_IN_USE)
    record = ProcessRecord("scheduler", "scheduler", "me", 4194000, None, str(log))
    error = start_failure(HostGroup({"me": local_host(tmp_path)}), record, "exited during start-up")
    assert isinstance(error, HostError) and error.host == "me"
    assert error.message == ("me: scheduler scheduler (pid 4194000) exited during start-up: "
                             "OSError: [Errno 98] Address already in use")
    assert error.details is not None and "Scheduler failed to start." in error.details
    assert error.hint == f"full log: {log} on me"


INVENTORY = """
name: t
hosts: {me: {connection: local}}
scheduler: {host: me, dashboard_address: ":8787", dashboard: DASHBOARD}
workers: []
"""


@pytest.mark.parametrize(("dashboard", "note"), [
    ("local", "loopback only on me: run `clusterctl dashboard`"),
    ("public", None),
])
def test_the_dashboard_note_says_why_there_is_no_url(dashboard: str, note: str | None) -> None:
    inventory = parse_inventory(INVENTORY.replace("DASHBOARD", dashboard))
    st = ClusterState("t", inventory, None, "tcp://127.0.0.1:8786", None)
    assert build_report(st, None).dashboard_note == note


def test_no_dashboard_is_noted_as_off() -> None:
    inventory = parse_inventory(INVENTORY.replace('":8787"', "null").replace("DASHBOARD", "public"))
    assert build_report(ClusterState("t", inventory, None, "tcp://127.0.0.1:8786", None), None).dashboard_note == "off"


# --- a host group: one result per host ------------------------------------------------------------


def test_a_group_returns_every_hosts_value_or_error(tmp_path: Path) -> None:
    hosts = HostGroup({name: local_host(tmp_path, name) for name in ("a", "b", "c")})

    def step(host: Host) -> str:
        if host.alias == "b":
            raise ClusterctlError("no python here", "install one")  # not yet a HostError: the group adds the host
        return host.alias.upper()

    results = hosts.run(step)
    assert list(results) == ["a", "b", "c"]
    assert results.succeeded == {"a": "A", "c": "C"}
    assert set(results.failed) == {"b"}
    error = results.failed["b"]
    assert error.host == "b" and error.reason == "no python here" and error.message == "b: no python here"
    with pytest.raises(PartialFailureError) as caught:
        results.values_or_raise("preflight")
    assert caught.value.message == "preflight failed on 1 of 3 host(s): b: no python here (succeeded on a, c)"
    assert caught.value.hint == "install one" and caught.value.errors == {"b": error}


def test_a_group_of_one_raises_that_hosts_own_error(tmp_path: Path) -> None:
    def fail(host: Host) -> None:
        raise HostError(host.alias, "unreachable", "is it up?")

    with pytest.raises(HostError) as caught:
        HostGroup({"a": local_host(tmp_path, "a")}).run(fail).values_or_raise("start")
    assert caught.value.message == "a: unreachable" and caught.value.hint == "is it up?"


def test_run_each_hands_every_host_its_own_items(tmp_path: Path) -> None:
    hosts = HostGroup({name: local_host(tmp_path, name) for name in ("a", "b")})
    records = [ProcessRecord("worker", f"w{i}", host, i + 10, None, "") for i, host in enumerate("abab")]
    results = hosts.run_each(records, lambda host, mine: [r.name for r in mine])
    assert results.succeeded == {"a": ["w0", "w2"], "b": ["w1", "w3"]}


# --- logs: a log that is truncated, or disappears and comes back ---------------------------------


def test_following_a_log_says_when_it_was_truncated_unreadable_and_readable_again(tmp_path: Path) -> None:
    from clusterctl import state
    from clusterctl.commands.logs import logs

    log = tmp_path / "w.log"
    log.write_text("one\ntwo\n")
    inventory = parse_inventory(INVENTORY.replace("DASHBOARD", "public"))
    state.save(ClusterState("t", inventory, None, "tcp://127.0.0.1:8786", None,
                            processes=[ProcessRecord("worker", "w", "me", 4194001, None, str(log))]))
    stream = iter(logs(cluster="t", follow=True, poll_interval=0.01))
    try:
        assert next(stream).lines == ["one", "two"]
        log.write_text("three\n")  # shorter than what was read: truncated and rewritten
        truncated = next(stream)
        assert truncated.note == f"{log} was truncated or replaced: reading it from its start"
        assert next(stream).lines == ["three"]
        log.unlink()
        gone = next(stream)
        assert gone.failed and gone.note is not None and gone.note.startswith(f"me: cannot read {log}")
        log.write_text("four\n")
        assert next(stream).note == f"{log} on me is readable again"
        assert next(stream).note == f"{log} was truncated or replaced: reading it from its start"  # another inode
        assert next(stream).lines == ["four"]
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()
