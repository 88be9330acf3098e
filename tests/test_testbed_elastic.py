"""Scale and adapt on the test bed: elastic workers started on allowed hosts, retired with their data
moved, stopped and verified gone on their hosts; `clusterctl adapt --detach` outliving its client.

Every cluster has a fixed worker `fixed` on h2, which scaling counts and never removes. The machine
running the tests is shared and loaded: every wait is on a condition, with generous bounds. The
issue's speed goal (at least 3 more workers within 15 s of 200 half-second tasks) is a figure of
`make bench` (benchmarks/adapt.py), not a timed assertion.
"""

from __future__ import annotations

import os
import signal
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from distributed import Client, wait

from clusterctl import Cluster
from testbed import Testbed
from testbed.client_env import SshEnv
from tests.helpers.bed_cluster import BedCluster
from tests.helpers.cluster import PYTHON, REPO, clusterctl, kill_recorded, wait_until

pytestmark = pytest.mark.netns

PORT = 8796  # not the lecture's 8786: each test's cluster has its scheduler on h1
# 200 tasks of sleep(0.5) are 100 s of work for the one fixed worker: adapt must grow well before they end.
# The 15 s figure is a speed goal, measured by `make bench` (benchmarks/adapt.py); here we wait on the condition.
SCALE_UP_WITHIN = 90.0
SETTLE_WITHIN = 120.0  # generous: the machine is shared


@pytest.fixture
def bed_config(testbed: Testbed, ssh_env: SshEnv, tmp_path: Path) -> Iterator[Any]:
    """A factory of bed inventories (scheduler on h1, `fixed` on h2, an elastic section); all cleaned up after."""
    made: list[BedCluster] = []

    def make(name: str, **elastic: Any) -> Path:
        cluster = BedCluster.write(
            testbed, tmp_path / name, name, ssh_env,
            scheduler={"host": "h1", "port": PORT, "dashboard_address": None},
            workers=[{"name": "fixed", "host": "h2", "nworkers": 1, "nthreads": 1}],
            elastic={"worker": {"nthreads": 1}, **elastic})
        made.append(cluster)
        return cluster.config

    try:
        yield make
    finally:
        for state_file in ssh_env.clusterctl_home.glob("clusters/*/state.json"):
            clusterctl("down", "--cluster", state_file.parent.name)
        kill_recorded(ssh_env.clusterctl_home)
        for cluster in made:
            cluster.kill_leftovers()


def elastic_processes(cluster: str, home: Path) -> list[dict[str, Any]]:
    status = clusterctl("status", "--cluster", cluster, "--processes", "--json")
    return [p for p in status.json()["processes"] if p["name"].startswith("elastic-")]


def gone_from_their_hosts(testbed: Testbed, processes: list[dict[str, Any]]) -> bool:
    return all(p["pid"] not in testbed.pids_in(p["host"]) for p in processes)


def test_scale_to_four_uses_allowed_hosts_only_and_back_to_one_keeps_the_data(
        testbed: Testbed, ssh_env: SshEnv, bed_config: Any) -> None:
    cluster = Cluster(bed_config("scaled", hosts=["h3", "h4"], maximum=6))
    allowed = {testbed.host(alias).address for alias in ("h3", "h4")}
    with cluster, Client(cluster) as client:
        assert cluster.scale(4).added == ["elastic-1", "elastic-2", "elastic-3"]
        cluster.wait_for_workers(4, timeout=SETTLE_WITHIN)
        workers = {w["name"]: w["host"] for w in client.scheduler_info()["workers"].values()}
        assert sorted(workers) == ["elastic-1", "elastic-2", "elastic-3", "fixed"]
        assert {host for name, host in workers.items() if name != "fixed"} == allowed  # least-loaded: h3, h4, h3
        assert workers["fixed"] == testbed.host("h2").address
        added = elastic_processes("scaled", ssh_env.clusterctl_home)
        assert {p["host"] for p in added} == {"h3", "h4"} and all(p["alive"] for p in added)

        elastic_addresses = [a for a, w in client.scheduler_info()["workers"].items() if w["name"] != "fixed"]
        squares = client.map(lambda i: i * i, range(30), workers=elastic_addresses, allow_other_workers=False,
                             pure=False)
        wait(squares, timeout=SETTLE_WITHIN)
        assert set().union(*client.who_has(squares).values()) <= set(elastic_addresses)

        result = cluster.scale(1)
        assert sorted(result.removed) == ["elastic-1", "elastic-2", "elastic-3"] and result.after == 1
        wait(squares, timeout=30)  # lost data could not be computed again: only the gone workers may run them
        assert client.gather(squares) == [i * i for i in range(30)]  # retired first: the data moved
        fixed = [a for a, w in client.scheduler_info()["workers"].items() if w["name"] == "fixed"]
        assert set().union(*client.who_has(squares).values()) == set(fixed)
        assert wait_until(lambda: gone_from_their_hosts(testbed, added), timeout=SETTLE_WITHIN)
        assert cluster.scale(0).after == 1, "the fixed worker is never scaled away"
    status = clusterctl("status", "--cluster", "scaled", "--json")
    assert status.exit_code == 0 and [w["name"] for w in status.json()["workers"]] == ["fixed"]
    down = clusterctl("down", "--cluster", "scaled")
    assert down.exit_code == 0, down.stderr
    assert all(testbed.wait_for_no_pids(host) == [] for host in testbed.hosts)


def submit_sleeps(client: Client) -> list[Any]:
    return client.map(time.sleep, [0.5] * 200, pure=False)


def worker_count(client: Client) -> int:
    return len(client.scheduler_info()["workers"])


def test_adapt_grows_under_200_sleeps_and_returns_to_the_minimum_with_processes_gone(
        testbed: Testbed, ssh_env: SshEnv, bed_config: Any) -> None:
    cluster = Cluster(bed_config("adaptive", hosts=["h*"], maximum=8))  # the pool: h1..h4
    with cluster, Client(cluster) as client:
        cluster.adapt(minimum=1, maximum=5, interval="500ms")
        sleeps = submit_sleeps(client)
        assert wait_until(lambda: worker_count(client) >= 4, timeout=SCALE_UP_WITHIN), worker_count(client)
        wait(sleeps, timeout=SETTLE_WITHIN)
        added = elastic_processes("adaptive", ssh_env.clusterctl_home)
        assert len(added) >= 3 and {p["host"] for p in added} <= {"h1", "h2", "h3", "h4"}
        del sleeps
        assert wait_until(lambda: worker_count(client) == 1 and not elastic_processes(
            "adaptive", ssh_env.clusterctl_home), timeout=SETTLE_WITHIN), client.scheduler_info()["workers"]
        assert [w["name"] for w in client.scheduler_info()["workers"].values()] == ["fixed"]
        assert wait_until(lambda: gone_from_their_hosts(testbed, added), timeout=SETTLE_WITHIN)


CLIENT = """
    import sys, time
    from distributed import Client, fire_and_forget
    client = Client(sys.argv[1], timeout=60)
    fire_and_forget(client.map(time.sleep, [0.5] * 200, pure=False))
    while client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)) < 200:
        time.sleep(0.1)  # the scheduler has them: the load no longer depends on this client
    print("submitted", flush=True)
    time.sleep(3600)
"""


def test_a_detached_adapt_supervisor_outlives_the_client_that_made_the_load(
        testbed: Testbed, ssh_env: SshEnv, bed_config: Any) -> None:
    config = bed_config("supervised", hosts=["h*"], minimum=1, maximum=5)
    assert clusterctl("up", str(config)).exit_code == 0
    detached = clusterctl("adapt", "--cluster", "supervised", "--detach", "--interval", "0.5", "--json")
    assert detached.exit_code == 0, detached.stderr
    supervisor = detached.json()["supervisor"]
    assert supervisor["minimum"] == 1 and supervisor["maximum"] == 5
    status = clusterctl("status", "--cluster", "supervised", "--json").json()
    assert status["adaptive"]["pid"] == supervisor["pid"] and status["adaptive"]["alive"]
    assert clusterctl("list", "--json").json()["clusters"][0]["adaptive"] is True

    address = status["scheduler"]["address"]
    submitter = subprocess.Popen([PYTHON, "-c", textwrap.dedent(CLIENT), address], stdout=subprocess.PIPE,
                                 text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, start_new_session=True)
    try:
        assert submitter.stdout is not None and submitter.stdout.readline().strip() == "submitted"
    finally:
        os.killpg(submitter.pid, signal.SIGKILL)
        submitter.wait()

    def workers() -> int:
        return len(clusterctl("status", "--cluster", "supervised", "--json").json()["workers"])

    assert wait_until(lambda: workers() >= 4, timeout=SCALE_UP_WITHIN), workers()
    added = elastic_processes("supervised", ssh_env.clusterctl_home)
    assert len(added) >= 3
    assert wait_until(lambda: workers() == 1 and not elastic_processes("supervised", ssh_env.clusterctl_home),
                      timeout=SETTLE_WITHIN)
    assert wait_until(lambda: gone_from_their_hosts(testbed, added), timeout=SETTLE_WITHIN)

    # SIGTERM: the supervisor stops adapting and leaves the cluster as it is.
    os.kill(supervisor["pid"], signal.SIGTERM)
    assert wait_until(lambda: clusterctl("status", "--cluster", "supervised", "--json").json()["adaptive"] is None,
                      timeout=SETTLE_WITHIN)
    assert not Path(f"/proc/{supervisor['pid']}").exists() or "Z" in Path(f"/proc/{supervisor['pid']}/stat").read_text()
    assert clusterctl("status", "--cluster", "supervised").exit_code == 0
