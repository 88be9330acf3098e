"""`down --limit` and `up --limit` on the multi-host bed, over SSH, through the real CLI.

The scheduler runs on h1 and one worker group on each of h2, h3 and h4; a client holds persisted
data on every worker. `down --limit h3` retires h3's workers (the data moves), stops its processes
and verifies them gone: the data survives, h3 runs nothing, h1, h2 and h4 keep the very same
processes. `up --limit h3` then starts h3's group again and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from distributed import Client, wait

from testbed import Testbed
from testbed.client_env import SshEnv
from tests.helpers.bed_cluster import BedCluster

pytestmark = pytest.mark.netns

PORT = 8797  # not the lecture's 8786 nor the elastic tests' 8796
SETTLE_WITHIN = 120.0  # generous: the machine is shared
WORKER_HOSTS = ("h2", "h3", "h4")


@pytest.fixture
def fleet(testbed: Testbed, tmp_path: Path) -> Iterator[BedCluster]:
    cluster = BedCluster.write(
        testbed, tmp_path, "limited", SshEnv.under(tmp_path),
        scheduler={"host": "h1", "port": PORT, "dashboard_address": None},
        workers=[{"name": f"w{alias[1]}", "host": alias, "nworkers": 2, "nthreads": 1} for alias in WORKER_HOSTS])
    with cluster.env.applied():
        try:
            started = cluster.cli("up", str(cluster.config))
            assert started.exit_code == 0, started.stderr
            yield cluster
        finally:
            cluster.tear_down()


def processes(cluster: BedCluster) -> dict[str, tuple[str, int]]:
    """Process name -> (host, pid), as `status --processes` sees them, every one alive."""
    status = cluster.cli("status", "--processes", "--json")
    assert status.exit_code == 0, status.stderr
    found = status.json()["processes"]
    assert all(p["alive"] for p in found), found
    return {p["name"]: (p["host"], p["pid"]) for p in found}


def test_down_limit_one_host_keeps_the_data_and_the_rest_then_up_limit_brings_only_it_back(
        testbed: Testbed, fleet: BedCluster) -> None:
    added = fleet.cli("add-worker", "--host", "h3", "--name", "extra")  # recorded in the state: goes with h3
    assert added.exit_code == 0, added.stderr
    before = processes(fleet)
    assert {name: host for name, (host, _) in before.items()} == {
        "scheduler": "h1", "w2": "h2", "w3": "h3", "w4": "h4", "extra": "h3"}
    address = f"tcp://{testbed.host('h1').address}:{PORT}"
    with Client(address, timeout=30) as client:
        workers = {w["name"]: a for a, w in client.scheduler_info()["workers"].items()}
        assert sorted(workers) == ["extra", "w2-0", "w2-1", "w3-0", "w3-1", "w4-0", "w4-1"]
        # Ten numbers kept on each worker, h3's included: what must move when h3 goes.
        held = [client.map(lambda i: i * i, range(10 * k, 10 * k + 10), workers=[a], allow_other_workers=False,
                           pure=False) for k, a in enumerate(workers.values())]
        data = [future for futures in held for future in futures]
        wait(data, timeout=SETTLE_WITHIN)
        on_h3 = {workers["w3-0"], workers["w3-1"], workers["extra"]}
        assert set().union(*client.who_has(data).values()) & on_h3

        down = fleet.cli("down", "--limit", "h3")
        assert down.exit_code == 0, down.stderr
        assert "2 process(es) on h3 stopped and verified gone" in down.stdout, down.stdout

        wait(data, timeout=SETTLE_WITHIN)  # lost data could not be computed again: only h3's workers may
        assert sum(client.gather(data)) == sum(i * i for i in range(70)), "retired first: the data moved"
        assert not set().union(*client.who_has(data).values()) & on_h3
        assert sorted(w["name"] for w in client.scheduler_info()["workers"].values()) == [
            "w2-0", "w2-1", "w4-0", "w4-1"]

    assert testbed.wait_for_no_pids("h3", timeout=SETTLE_WITHIN) == [], "h3 runs nothing"
    after = processes(fleet)
    assert after == {name: before[name] for name in ("scheduler", "w2", "w4")}, "the others are untouched"
    for host, pid in after.values():
        assert pid in testbed.pids_in(host)
    assert sorted(p["name"] for p in fleet.recorded()) == ["scheduler", "w2", "w4"]

    up = fleet.cli("up", str(fleet.config), "--limit", "h3")
    assert up.exit_code == 0, up.stderr
    again = processes(fleet)
    assert {name: again[name] for name in ("scheduler", "w2", "w4")} == after, "only h3 was started"
    assert again["w3"][0] == "h3" and again["w3"][1] != before["w3"][1]
    assert again["w3"][1] in testbed.pids_in("h3")
    status = fleet.cli("status", "--json")
    assert status.exit_code == 0 and len(status.json()["workers"]) == 6, status.stdout
