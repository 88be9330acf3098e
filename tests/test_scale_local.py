"""Scaled workers on this machine are ordinary recorded processes, and `clusterctl adapt` is a recorded supervisor.

`up` keeps `elastic.minimum` and restarts a dead elastic worker as elastic; `status`, the stateless
`down CONFIG` and `list` see what scaling did; `down` stops a detached supervisor before anything else.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path
from typing import Any

from clusterctl import Cluster
from tests.helpers.cluster import clusterctl, is_running, local_inventory, wait_until, write_inventory


def elastic_config(tmp_path: Path, name: str, **elastic: Any) -> Path:
    inventory = local_inventory(name, workers=[{"name": "fixed", "host": "me"}])
    inventory["hosts"]["me"]["run_dir"] = str(tmp_path / "run")  # pid files that outlive the state
    inventory["elastic"] = {"hosts": ["me"], "worker": {"nthreads": 1, "memory_limit": "1GB"}, **elastic}
    return write_inventory(tmp_path / f"{name}.yaml", inventory)


def processes(name: str) -> dict[str, dict[str, Any]]:
    status = clusterctl("status", "--cluster", name, "--processes", "--json")
    return {p["name"]: p for p in status.json()["processes"]}


def test_up_keeps_the_minimum_restarts_elastic_workers_as_elastic_and_stateless_down_finds_them(
        tmp_path: Path, clusterctl_home: Path) -> None:
    config = elastic_config(tmp_path, "el", minimum=2, maximum=4)
    assert clusterctl("up", str(config)).exit_code == 0
    assert sorted(processes("el")) == ["elastic-1", "fixed", "scheduler"]  # minimum 2: one elastic worker

    cluster = Cluster.from_name("el")
    try:
        assert cluster.scale(cores=3).added == ["elastic-2"]  # 1 thread each: 3 workers
        status = clusterctl("status", "--cluster", "el", "--json")
        assert status.exit_code == 0 and {w["name"] for w in status.json()["workers"]} == {
            "fixed", "elastic-1", "elastic-2"}

        os.killpg(processes("el")["elastic-2"]["pid"], signal.SIGKILL)
        assert wait_until(lambda: clusterctl("status", "--cluster", "el").exit_code == 1, timeout=60)
        healed = clusterctl("up", str(config), "--json")
        assert healed.exit_code == 0 and healed.json()["started"] == ["elastic-2"]

        shrunk = cluster.scale(0)  # not below the minimum; the newest elastic worker goes first
        assert (shrunk.target, shrunk.removed, shrunk.after) == (2, ["elastic-2"], 2)
        assert sorted(processes("el")) == ["elastic-1", "fixed", "scheduler"]
        assert cluster.scale(memory="3.5GB").added == ["elastic-2", "elastic-3"]  # 1GB each: 4 workers
    finally:
        cluster.close()
    recorded = list(processes("el").values())
    assert len(recorded) == 5

    shutil.rmtree(clusterctl_home / "clusters" / "el")  # the state is lost: the hosts' pid files remain
    down = clusterctl("down", str(config))
    assert down.exit_code == 0, down.stderr
    assert not any(is_running(p) for p in recorded)


def test_a_detached_adapt_is_shown_by_status_and_list_kept_by_up_and_stopped_first_by_down(
        tmp_path: Path, clusterctl_home: Path) -> None:
    config = elastic_config(tmp_path, "ad", maximum=3)
    assert clusterctl("up", str(config)).exit_code == 0
    detached = clusterctl("adapt", str(config), "--detach", "--minimum", "1", "--json")
    assert detached.exit_code == 0, detached.stderr
    pid = detached.json()["supervisor"]["pid"]
    log = detached.json()["supervisor"]["log"]
    assert log == str(clusterctl_home / "clusters" / "ad" / "adapt.log")

    again = clusterctl("adapt", str(config), "--detach")
    assert again.exit_code == 1 and f"already adapts (supervisor pid {pid})" in again.stderr
    assert clusterctl("up", str(config)).exit_code == 0  # reconciling keeps the record
    shown = clusterctl("status", "--cluster", "ad")
    assert f"adaptive   supervisor pid {pid}, minimum 1, maximum 3, log {log}" in shown.stdout
    listed = clusterctl("list", "--json").json()["clusters"]
    assert [(c["name"], c["adaptive"]) for c in listed] == [("ad", True)]
    assert "on" in clusterctl("list").stdout.splitlines()[1].split()

    assert wait_until(lambda: "Adaptive scaling started" in Path(log).read_text(), timeout=30)
    recorded = json.loads((clusterctl_home / "clusters" / "ad" / "state.json").read_text())["processes"]
    down = clusterctl("down", "--cluster", "ad", "--json")
    assert down.exit_code == 0, down.stderr
    assert down.json()["stopped"][0] == {"host": "localhost", "name": "adapt supervisor", "pid": pid}  # first
    assert not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] == "Z"
    assert not any(is_running(p) for p in recorded)


def test_list_shows_a_running_cluster_and_one_whose_scheduler_was_killed(tmp_path: Path, clusterctl_home: Path) -> None:
    for name in ("left", "right"):
        (tmp_path / name).mkdir()
        assert clusterctl("up", str(elastic_config(tmp_path / name, name))).exit_code == 0
    os.killpg(processes("right")["scheduler"]["pid"], signal.SIGKILL)

    def listed() -> dict[str, dict[str, Any]]:
        return {c["name"]: c for c in clusterctl("list", "--json").json()["clusters"]}

    # Its workers close once their scheduler is gone: the cluster ends up `gone` (`scheduler down` until then).
    assert wait_until(lambda: {n: c["state"] for n, c in listed().items()} == {"left": "running", "right": "gone"},
                      timeout=120), listed()
    clusters = listed()
    assert (clusters["left"]["answers"], clusters["left"]["adaptive"]) == (True, False)
    assert clusters["right"]["answers"] is False and clusters["right"]["workers"] == {"present": 0, "expected": 1}
    assert "clusterctl down --cluster right" in clusters["right"]["note"]
    for name in ("left", "right"):
        assert clusterctl("down", "--cluster", name).exit_code == 0
