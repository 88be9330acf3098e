"""The lecture's cluster on four separate hosts of the test bed, over SSH, through the real CLI.

The scheduler runs on h1; h2 runs two GPU=2 workers, h3 one GPU=1 worker. The client runs in
the root namespace and reaches the scheduler over the bridge, like a laptop on the cluster's
network. The tests follow the lecture in order on one cluster (started once for the module):
the layout, GPU=2 tasks, GPU=3 tasks that wait for `add-worker`, a MEMORY=256e9 group, a word
count; the last test takes the cluster down and checks that every host is empty.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from distributed import Client, get_task_stream, wait
from distributed.comm import get_address_host as address_host

from testbed import Testbed
from testbed.client_env import SshEnv
from tests.helpers.bed_cluster import BedCluster
from tests.helpers.cluster import is_running
from tests.workloads import count_words, howmany_within_range, stdlib_corpus, trace_of_constant_matrix

pytestmark = pytest.mark.netns

CLUSTER = "lecture"
SCHEDULER_PORT = 8786  # the default, on every host that runs a scheduler: each host has its own ports


class Lecture(BedCluster):
    """The running cluster; its isolated environment is this process's while the module runs."""

    @property
    def address(self) -> str:
        """The scheduler's."""
        return f"tcp://{self.bed.host('h1').address}:{SCHEDULER_PORT}"

    def status(self) -> dict[str, Any]:
        result = self.cli("status", "--cluster", CLUSTER, "--json")
        assert result.exit_code == 0, result.stderr
        return result.json()

    def workers_on(self, alias: str) -> set[str]:
        """Addresses of the workers the scheduler knows on host ``alias``."""
        return {w["address"] for w in self.status()["workers"] if w["host"] == alias}


@pytest.fixture(scope="module")
def lecture(testbed: Testbed, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lecture]:
    base = tmp_path_factory.mktemp("lecture")
    # Our own run directories: `down` also stops whatever the pid files of its run directories
    # name, and other tests use the bed's default ones.
    lecture = Lecture.write(
        testbed, base, CLUSTER, SshEnv.under(base),
        scheduler={"host": "h1", "port": SCHEDULER_PORT, "dashboard_address": None},
        workers=[
            {"name": "gpu2", "host": "h2", "nworkers": 2, "nthreads": 1, "resources": {"GPU": 2}},
            {"name": "gpu1", "host": "h3", "nworkers": 1, "nthreads": 1, "resources": "GPU=1"},
        ],
    )
    with lecture.env.applied():
        try:
            started = lecture.cli("up", str(lecture.config))
            if started.exit_code != 0:
                sockets = testbed.run_in("h1", ["ss", "-atnp"]).stdout  # a busy port 8786 shows here
                pytest.fail(f"clusterctl up failed ({started.exit_code}):\n{started.stderr}\nh1: {sockets}")
            yield lecture
        finally:
            lecture.tear_down()  # the last test has taken it down: then only the safety net runs


def test_the_scheduler_is_on_h1_and_each_worker_on_its_own_host(lecture: Lecture) -> None:
    bed = lecture.bed
    document = lecture.status()
    assert document["healthy"] and document["missing"] == [] and document["extra"] == []
    assert document["scheduler"]["address"] == lecture.address == f"tcp://{bed.host('h1').address}:8786"

    workers = {w["name"]: w for w in document["workers"]}
    assert {name: (w["host"], w["nthreads"], w["resources"]) for name, w in workers.items()} == {
        "gpu2-0": ("h2", 1, {"GPU": 2.0}),
        "gpu2-1": ("h2", 1, {"GPU": 2.0}),
        "gpu1": ("h3", 1, {"GPU": 1.0}),
    }
    for worker in workers.values():
        assert address_host(worker["address"]) == bed.host(worker["host"]).address, worker
    assert workers["gpu2-0"]["address"] != workers["gpu2-1"]["address"], "two processes, two listeners"

    # And the processes really live in those hosts' network namespaces.
    recorded = {p["name"]: p for p in lecture.recorded()}
    assert {name: p["host"] for name, p in recorded.items()} == {"scheduler": "h1", "gpu2": "h2", "gpu1": "h3"}
    for process in recorded.values():
        assert process["pid"] in bed.pids_in(process["host"]), process


def test_gpu2_tasks_give_the_traces_and_run_only_on_h2(lecture: Lecture) -> None:
    h2_workers = lecture.workers_on("h2")
    assert len(h2_workers) == 2
    with Client(lecture.address, timeout=30) as client, get_task_stream(client) as stream:
        futures = [client.submit(trace_of_constant_matrix, m, resources={"GPU": 2}, pure=False) for m in range(11)]
        assert client.gather(futures) == [0, 3, 6, 9, 12, 15, 18, 21, 24, 27, 30]
        held_by = set().union(*client.who_has(futures).values())
    keys = {future.key for future in futures}
    executed_on = {task["worker"] for task in stream.data if task["key"] in keys}
    assert held_by and held_by <= h2_workers
    assert executed_on and executed_on <= h2_workers


def test_gpu3_tasks_wait_until_add_worker_gives_them_a_worker_on_h4(lecture: Lecture) -> None:
    with Client(lecture.address, timeout=30) as client:
        client.wait_for_workers(3, timeout=10)
        futures = client.map(trace_of_constant_matrix, range(100), resources={"GPU": 3}, pure=False)
        with pytest.raises(TimeoutError):
            wait(futures, timeout=3)
        assert {future.status for future in futures} == {"pending"}

        added = lecture.cli("add-worker", "--cluster", CLUSTER, "--host", "h4", "--resources", "GPU=3", "--json")
        assert added.exit_code == 0, added.stderr

        assert client.gather(futures) == [3 * m for m in range(100)]
        held_by = set().union(*client.who_has(futures).values())
    (new_worker,) = (w for w in added.json()["workers"] if w["resources"] == {"GPU": 3.0})
    assert new_worker["host"] == "h4" and new_worker["extra"]
    assert address_host(new_worker["address"]) == lecture.bed.host("h4").address
    assert held_by == {new_worker["address"]}


def test_a_memory_group_counts_values_within_range_like_the_sequential_loop(lecture: Lecture) -> None:
    added = lecture.cli("add-worker", "--cluster", CLUSTER, "--host", "h3", "--name", "bigmem", "--nworkers", "2",
                        "--resources", "MEMORY=256e9", "--json")
    assert added.exit_code == 0, added.stderr
    bigmem = {w["name"]: w for w in added.json()["workers"] if w["name"].startswith("bigmem")}
    assert sorted(bigmem) == ["bigmem-0", "bigmem-1"]
    assert all(w["resources"] == {"MEMORY": 256e9} and w["host"] == "h3" for w in bigmem.values())

    rows = np.random.RandomState(42).randint(0, 100, size=(100, 10)).tolist()
    with Client(lecture.address, timeout=30) as client:
        futures = [client.submit(howmany_within_range, row, 4, 8, resources={"MEMORY": 256e9}, pure=False)
                   for row in rows]
        results = client.gather(futures)
        held_by = set().union(*client.who_has(futures).values())
    assert results == [howmany_within_range(row, 4, 8) for row in rows]
    assert sum(results) > 0, "the data does have values in [4, 8]"
    assert held_by and held_by <= {w["address"] for w in bigmem.values()}


def test_the_word_count_of_5000_documents_equals_the_sequential_count(lecture: Lecture) -> None:
    corpus = stdlib_corpus(5000)
    with Client(lecture.address, timeout=30) as client:
        counts = [client.submit(count_words, document, pure=False) for document in corpus]
        total = client.submit(sum, counts).result(timeout=120)
    assert total == sum(count_words(document) for document in corpus)
    assert total > 100_000


def test_a_second_cluster_uses_port_8786_on_another_host_at_the_same_time(
        lecture: Lecture, testbed: Testbed, ssh_env: SshEnv, tmp_path: Path) -> None:
    cluster = BedCluster.write(  # ssh_env's own CLUSTERCTL_HOME: another user, say
        testbed, tmp_path, "lecture-h2", ssh_env,
        scheduler={"host": "h2", "port": SCHEDULER_PORT, "dashboard_address": None},
        workers=[],  # a scheduler alone is enough to hold the port
    )
    second = f"tcp://{testbed.host('h2').address}:{SCHEDULER_PORT}"
    try:
        started = cluster.cli("up", str(cluster.config))
        assert started.exit_code == 0, f'{started.stderr}\nh2: {testbed.run_in("h2", ["ss", "-atnp"]).stdout}'
        assert cluster.cli("status", "--json").json()["scheduler"]["address"] == second
        assert lecture.status()["scheduler"]["address"] == lecture.address  # still there, same port on h1
        assert address_host(lecture.address) != address_host(second)
        with Client(second, timeout=30) as one, Client(lecture.address, timeout=30) as other:
            assert one.scheduler_info()["address"] == second
            assert other.scheduler_info()["address"] == lecture.address
        processes = cluster.recorded()
    finally:
        down = cluster.cli("down", "--cluster", "lecture-h2")
        cluster.kill_leftovers()
    assert down.exit_code == 0, down.stderr
    assert not any(is_running(p) for p in processes)
    assert not any(p["pid"] in testbed.pids_in(p["host"]) for p in processes)
    assert cluster.pid_files() == []


def test_down_leaves_no_process_on_any_host_and_no_pid_file(lecture: Lecture) -> None:
    # Runs last: it takes the module's cluster down.
    bed = lecture.bed
    recorded = lecture.recorded()
    assert {p["host"] for p in recorded} >= {"h1", "h2", "h3"}  # and h4, after the add-worker test
    assert lecture.pid_files(), "the running cluster has pid files on its hosts"

    down = lecture.cli("down", "--cluster", CLUSTER)
    assert down.exit_code == 0, down.stderr
    assert "verified gone" in down.stdout

    for host in bed.hosts:
        assert bed.wait_for_no_pids(host) == [], f"{host.alias} still runs processes"
    assert not any(is_running(p) for p in recorded)
    assert lecture.pid_files() == []
    assert not lecture.state_path.exists()
    assert lecture.cli("status", "--cluster", CLUSTER).exit_code == 1  # not running
