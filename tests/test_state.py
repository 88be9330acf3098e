"""Local state: what runs where, written atomically and privately, and the per-cluster lock."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from clusterctl import state
from clusterctl.errors import ClusterctlError, InvalidInputError, LockedError
from clusterctl.state import ClusterState, ProcessRecord
from tests.helpers.cluster import local_inventory, write_inventory


def make_state(name: str = "lab", **changes) -> ClusterState:
    values = dict(
        name=name,
        inventory=local_inventory(name=name, port=8786),
        config_path="/srv/cluster.yaml",
        scheduler_address="tcp://10.0.0.1:8786",
        dashboard_url="http://10.0.0.1:8787/status",
        processes=[
            ProcessRecord(role="scheduler", name="scheduler", host="me", pid=101, start_time=5000, log="/r/scheduler.log"),
            ProcessRecord(role="worker", name="gpu2", host="me", pid=102, start_time=None, log="/r/gpu2.log",
                          worker_names=["gpu2-0", "gpu2-1"]),
            ProcessRecord(role="worker", name="localhost-add1", host="localhost", pid=103, start_time=5002,
                          log="/r/add1.log", worker_names=["localhost-add1"], added=True,
                          spec={"resources": {"GPU": 3.0}}),
        ],
        versions={"python": "3.11.7", "distributed": "2024.1.0"},
    )
    values.update(changes)
    return ClusterState(**values)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- save and load ---------------------------------------------------------------------------------


def test_save_then_load_gives_back_the_same_state(clusterctl_home: Path) -> None:
    saved = make_state()
    state.save(saved)
    loaded = state.load("lab")

    assert loaded == saved
    assert all(isinstance(p, ProcessRecord) for p in loaded.processes)
    assert loaded.expected_workers() == {"gpu2-0": "me", "gpu2-1": "me", "localhost-add1": "localhost"}
    assert loaded.process("gpu2").pid == 102 and loaded.process("nope") is None
    assert [n for g in loaded.inventory.workers for n in g.worker_names()] == ["gpu2-0", "gpu2-1", "gpu1"]
    assert (clusterctl_home / "clusters" / "lab" / "state.json").is_file()


def test_an_existing_home_open_to_others_is_made_private(clusterctl_home: Path) -> None:
    clusterctl_home.mkdir(mode=0o755)
    clusterctl_home.chmod(0o755)
    state.save(make_state())
    assert mode(clusterctl_home) == 0o700


def test_load_of_an_unknown_cluster_is_none(clusterctl_home: Path) -> None:
    assert state.load("never-started") is None


def test_state_files_are_private(clusterctl_home: Path) -> None:
    state.save(make_state())
    state.set_current("lab")

    assert mode(clusterctl_home) == 0o700
    assert mode(clusterctl_home / "clusters" / "lab") == 0o700
    assert mode(clusterctl_home / "clusters" / "lab" / "state.json") == 0o600
    assert mode(clusterctl_home / "current") == 0o600


def test_save_leaves_no_temporary_files(clusterctl_home: Path) -> None:
    for pid in (1, 2, 3):
        state.save(make_state(processes=[ProcessRecord("scheduler", "scheduler", "me", pid, None, "/r/s.log")]))
    state.set_current("lab")

    assert sorted(p.name for p in (clusterctl_home / "clusters" / "lab").iterdir()) == ["state.json"]
    assert sorted(p.name for p in clusterctl_home.iterdir()) == ["clusters", "current"]
    assert state.load("lab").processes[0].pid == 3


def test_a_failed_save_keeps_the_previous_state(clusterctl_home: Path) -> None:
    state.save(make_state())
    before = (clusterctl_home / "clusters" / "lab" / "state.json").read_bytes()

    with pytest.raises(TypeError):
        state.save(make_state(versions={"not json": object()}))

    assert (clusterctl_home / "clusters" / "lab" / "state.json").read_bytes() == before
    assert state.load("lab") == make_state()
    assert os.listdir(clusterctl_home / "clusters" / "lab") == ["state.json"]


def test_a_write_that_fails_midway_removes_its_temporary_file(clusterctl_home: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    state.save(make_state())
    before = (clusterctl_home / "clusters" / "lab" / "state.json").read_bytes()

    def disk_full(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(state.os, "replace", disk_full)
    with pytest.raises(OSError, match="No space left"):
        state.save(make_state(scheduler_address="tcp://10.9.9.9:1"))
    monkeypatch.undo()

    assert (clusterctl_home / "clusters" / "lab" / "state.json").read_bytes() == before
    assert os.listdir(clusterctl_home / "clusters" / "lab") == ["state.json"]


def test_unreadable_state_is_an_error_with_a_hint(state_file: Path) -> None:
    state_file.write_text("{not json")
    with pytest.raises(ClusterctlError) as caught:
        state.load("lab")
    assert str(state_file) in caught.value.message
    assert caught.value.hint and str(state_file) in caught.value.hint


@pytest.fixture
def state_file(clusterctl_home: Path) -> Iterator[Path]:
    """lab's state.json, removed before conftest's safety net reads every state file."""
    path = clusterctl_home / "clusters" / "lab" / "state.json"
    path.parent.mkdir(parents=True)
    yield path
    path.unlink(missing_ok=True)


@pytest.mark.parametrize("content", [
    "[]",
    '{"name": "lab", "surprise": 1}',
    '{"name": "../../etc", "inventory": {}}',  # a name that is not the directory's
    '{"name": "lab", "inventory": {"name": "lab"}, "config_path": null, "scheduler_address": "tcp://x:1", '
    '"dashboard_url": null}',  # an invalid inventory
    '{"name": "lab", "processes": [{"pid": "1"}]}',
    "[" * 100000,  # nesting beyond the parser's depth
], ids=["list", "unknown-key", "foreign-name", "invalid-inventory", "bad-process", "deep"])
def test_state_of_the_wrong_shape_is_an_error_with_a_hint(state_file: Path, content: str) -> None:
    state_file.write_text(content)
    with pytest.raises(ClusterctlError) as caught:
        state.load("lab")
    assert str(state_file) in caught.value.message
    assert caught.value.hint and str(state_file.parent) in caught.value.hint


# --- the current cluster -----------------------------------------------------------------------------


def test_current_set_current_and_remove(clusterctl_home: Path) -> None:
    assert state.current() is None
    state.save(make_state("lab"))
    state.save(make_state("other"))
    state.set_current("lab")
    assert state.current() == "lab"
    assert state.known_clusters() == ["lab", "other"]

    state.remove("other")  # not the current one: current stays
    assert state.current() == "lab"
    assert not (clusterctl_home / "clusters" / "other").exists()

    state.remove("lab")
    assert state.current() is None
    assert state.load("lab") is None
    assert state.known_clusters() == []
    state.remove("lab")  # harmless twice


def test_a_garbled_current_file_means_no_current_cluster(clusterctl_home: Path) -> None:
    clusterctl_home.mkdir(mode=0o700)
    (clusterctl_home / "current").write_text("../../etc\n")
    assert state.current() is None


def test_resolve_name_prefers_cluster_option_then_config_then_current(tmp_path: Path, clusterctl_home: Path) -> None:
    config = str(write_inventory(tmp_path / "cluster.yaml", local_inventory(name="from-config")))
    state.set_current("the-current")

    assert state.resolve_name("from-option", config) == "from-option"
    assert state.resolve_name(None, config) == "from-config"
    assert state.resolve_name(None, None) == "the-current"


def test_resolve_name_rejects_an_invalid_cluster_option(clusterctl_home: Path) -> None:
    with pytest.raises(InvalidInputError, match="--cluster"):
        state.resolve_name("../etc", None)


def test_resolve_name_without_a_current_cluster_says_how_to_start_one(clusterctl_home: Path) -> None:
    with pytest.raises(ClusterctlError) as caught:
        state.resolve_name(None, None)
    assert caught.value.message == "no current cluster"
    assert "clusterctl up" in caught.value.hint


def test_resolve_name_without_a_current_cluster_lists_the_known_ones(clusterctl_home: Path) -> None:
    state.save(make_state("lab"))
    state.save(make_state("prod"))
    with pytest.raises(ClusterctlError) as caught:
        state.resolve_name(None, None)
    assert "--cluster" in caught.value.hint and "lab, prod" in caught.value.hint


# --- the lock ------------------------------------------------------------------------------------------

HOLDER = """
import sys, time
from clusterctl import state
with state.locked(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


@pytest.fixture
def lock_held_elsewhere(clusterctl_home: Path) -> Iterator[subprocess.Popen]:
    """Another process holds the lock of cluster 'lab' through ``state.locked``, as a concurrent command would."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, "lab"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        yield holder
    finally:
        holder.kill()
        holder.wait()


def test_locked_refuses_within_its_wait_while_another_process_holds_the_lock(lock_held_elsewhere: subprocess.Popen) -> None:
    started = time.monotonic()
    with pytest.raises(LockedError) as caught, state.locked("lab", wait=0.3):
        pytest.fail("entered a lock another process holds")
    elapsed = time.monotonic() - started

    assert 0.3 <= elapsed < 10, elapsed  # waited its 0.3 s, then refused instead of waiting for the holder
    assert "'lab'" in caught.value.message and caught.value.hint


def test_locked_is_per_cluster(lock_held_elsewhere: subprocess.Popen) -> None:
    with state.locked("other", wait=0.3):
        pass
    with pytest.raises(LockedError), state.locked("lab", wait=0.3):
        pytest.fail("entered a lock another process holds")


def test_locked_is_taken_once_the_other_holder_is_gone(lock_held_elsewhere: subprocess.Popen) -> None:
    lock_held_elsewhere.kill()
    lock_held_elsewhere.wait()
    with state.locked("lab", wait=2):
        pass


def test_locked_is_released_on_exit_even_after_an_error(clusterctl_home: Path) -> None:
    with pytest.raises(RuntimeError), state.locked("lab", wait=0.3):
        raise RuntimeError("the command failed")
    probe = subprocess.run(
        [sys.executable, "-c", "import fcntl, sys; fcntl.flock(open(sys.argv[1], 'a+'), fcntl.LOCK_EX | fcntl.LOCK_NB)",
         str(clusterctl_home / "locks" / "lab.lock")], capture_output=True, text=True, timeout=30)
    assert probe.returncode == 0, probe.stderr


def test_the_state_json_is_plain_json_for_humans(clusterctl_home: Path) -> None:
    state.save(make_state())
    document = json.loads((clusterctl_home / "clusters" / "lab" / "state.json").read_text())
    assert document["version"] == state.STATE_VERSION
    assert [p["pid"] for p in document["processes"]] == [101, 102, 103]
