"""Issue 5, "A lifecycle that survives faults", on the multi-host test bed: every fault is caused for
real (kill -9, a stopped sshd, an unplugged cable, Ctrl-C, two commands at once) and every test ends
with each host's namespace empty.

The scheduler runs on h1, one worker per host on h2 and h3 (h4 for added workers). Each test has its
own cluster name and its own run directory per host, so no test sees another's pid files.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from distributed import Client

from clusterctl.state import LOCK_WAIT_SECONDS
from testbed import Testbed
from testbed.client_env import SshEnv
from tests.helpers.bed_cluster import BedCluster, process_groups
from tests.helpers.cluster import CliResult, Running, error_lines, wait_until

pytestmark = pytest.mark.netns

PORT = 8786
TIMEOUT = "60"  # --timeout for up and add-worker: generous, the bed shares two cores with the tests
CLI_TIMEOUT = 150.0  # seconds before a hung command fails the test
HOSTS = ("h1", "h2", "h3", "h4")


class FaultCluster(BedCluster):
    """One test's cluster on the bed, with the commands these tests run on it."""

    cli_timeout = CLI_TIMEOUT

    def up(self, *args: str) -> CliResult:
        return self.cli("up", str(self.config), "--timeout", TIMEOUT, "--json", *args)

    def status(self) -> CliResult:
        return self.cli("status", str(self.config), "--json")

    def down(self) -> CliResult:
        return self.cli("down", str(self.config), "--grace", "3")

    def leftovers(self) -> dict[str, list[int]]:
        """Each host's processes that outlive the wait (sshd excluded): {} when nothing is orphaned."""
        left = {alias: self.bed.wait_for_no_pids(alias) for alias in HOSTS}
        return {alias: pids for alias, pids in left.items() if pids}


MakeCluster = Callable[..., FaultCluster]


@pytest.fixture
def bed_cluster(testbed: Testbed, ssh_env: SshEnv, tmp_path: Path) -> Iterator[MakeCluster]:
    """``make(name, **inventory_sections)`` -> a FaultCluster. At teardown, whatever a test left broken is
    mended (links up, sshd running), every cluster is taken down, and any survivor is killed by pid."""
    made: list[FaultCluster] = []

    def make(name: str, workers: list[dict[str, Any]] | None = None, **sections: Any) -> FaultCluster:
        cluster = FaultCluster.write(
            testbed, tmp_path / name, name, ssh_env,
            security={"tls": "off"},  # the tests' own Client connects over plain TCP
            scheduler={"host": "h1", "port": PORT, "dashboard_address": None, **sections.pop("scheduler", {})},
            workers=workers if workers is not None else [
                {"name": "h2", "host": "h2", "nworkers": 1, "nthreads": 1},
                {"name": "h3", "host": "h3", "nworkers": 1, "nthreads": 1},
            ],
            **sections,
        )
        made.append(cluster)
        return cluster

    try:
        yield make
    finally:
        try:
            for host in testbed.hosts:
                testbed.link_up(host)
                if host.sshd is None:
                    testbed.start_sshd(host)
        finally:
            for cluster in made:
                cluster.tear_down("--grace", "1")


def addresses(document: dict[str, Any]) -> dict[str, str]:
    """Worker name -> address, from a `status --json` document."""
    return {w["name"]: w["address"] for w in document["workers"]}


def worker_children(testbed: Testbed, host: str, group: int) -> list[int]:
    """The worker processes a nanny spawned: multiprocessing children in the `dask worker` session ``group``."""
    children = []
    for pid in testbed.pids_in(host):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            pgid = os.getpgid(pid)
        except (OSError, ProcessLookupError):
            continue
        # Not "multiprocessing" alone: the group's resource tracker runs multiprocessing.resource_tracker.
        if pgid == group and pid != group and "spawn_main" in cmdline:
            children.append(pid)
    return children


def status_until(cluster: FaultCluster, exit_code: int, timeout: float = 30.0) -> CliResult:
    """Poll `status` until it exits with ``exit_code``; the last result either way."""
    last: list[CliResult] = []

    def reached() -> bool:
        last.append(cluster.status())
        return last[-1].exit_code == exit_code

    wait_until(reached, timeout=timeout, interval=0.5)
    return last[-1]


def precondition(ok: bool, why: str) -> None:
    """For xfail tests: a failure on the way to the bug is a real failure, not the expected one
    (they expect AssertionError; pytest.fail raises something else)."""
    if not ok:
        pytest.fail(why)


def wait_for_line(command: Running, text: str, timeout: float = 90.0) -> int:
    """Wait until ``command`` prints a line containing ``text`` on stderr; how many lines it had printed then."""
    printed = command.wait_for(command.stderr, lambda lines: any(text in line for line in lines), timeout)
    assert printed, f"never printed {text!r}: {command.stderr}"
    return next(index for index, line in enumerate(command.stderr) if text in line) + 1


# ---- reconcile ---------------------------------------------------------------------------------------


def test_up_starts_only_what_is_missing_keeps_added_workers_and_restart_renews_all(bed_cluster: MakeCluster) -> None:
    cluster = bed_cluster("reconcile")
    bed = cluster.bed
    started = cluster.up()
    assert started.exit_code == 0, started.stderr
    added = cluster.cli("add-worker", str(cluster.config), "--host", "h4", "--timeout", TIMEOUT)
    assert added.exit_code == 0, added.stderr
    before = cluster.pids()
    assert set(before) == {"scheduler", "h2", "h3", "h4-add1"}
    h1_before, h2_before, h4_before = bed.pids_in("h1"), bed.pids_in("h2"), bed.pids_in("h4")

    # The `dask worker` parent on h3 dies; its worker child follows it (the nanny's pipe closes).
    os.kill(before["h3"], signal.SIGKILL)
    assert bed.wait_for_no_pids("h3") == []
    degraded = status_until(cluster, 1)
    assert degraded.exit_code == 1, degraded.stdout + degraded.stderr
    assert degraded.json()["missing"] == ["h3"]

    healed = cluster.up()
    assert healed.exit_code == 0, healed.stderr
    assert healed.json()["started"] == ["h3"]
    assert healed.json()["extra"] == ["h4-add1"]
    after = cluster.pids()
    assert {name: after[name] for name in ("scheduler", "h2", "h4-add1")} == \
           {name: before[name] for name in ("scheduler", "h2", "h4-add1")}
    assert after["h3"] != before["h3"]
    # Untouched means untouched: not one process of the healthy hosts was replaced.
    assert (bed.pids_in("h1"), bed.pids_in("h2"), bed.pids_in("h4")) == (h1_before, h2_before, h4_before)
    healthy = cluster.status()
    assert healthy.exit_code == 0, healthy.stdout
    assert healthy.json()["extra"] == ["h4-add1"] and healthy.json()["missing"] == []

    restarted = cluster.up("--restart")
    assert restarted.exit_code == 0, restarted.stderr
    renewed = cluster.pids()
    assert set(renewed) == set(after)
    assert all(renewed[name] != after[name] for name in after), (after, renewed)
    assert sorted(restarted.json()["started"]) == ["h2", "h3", "h4-add1", "scheduler"]
    assert restarted.json()["extra"] == ["h4-add1"] and restarted.json()["missing"] == []

    down = cluster.down()
    assert down.exit_code == 0, down.stderr
    assert cluster.leftovers() == {}
    assert cluster.state() is None


def test_up_restarts_a_worker_the_scheduler_lost_although_its_process_lives(bed_cluster: MakeCluster) -> None:
    # A hung worker (stopped: alive to the kernel, silent to the scheduler) is dropped after worker-ttl,
    # shortened from 5 minutes; without a nanny the scheduler drops it at once instead of restarting it.
    cluster = bed_cluster("hung", scheduler={"env": {"DASK_DISTRIBUTED__SCHEDULER__WORKER_TTL": "2s"}},
                                      workers=[{"name": "h2", "host": "h2", "nanny": False}])
    started = cluster.up()
    precondition(started.exit_code == 0, started.stderr)
    hung = cluster.pids()["h2"]
    os.killpg(hung, signal.SIGSTOP)
    lost = status_until(cluster, 1, timeout=45)
    precondition(lost.exit_code == 1 and lost.json()["missing"] == ["h2"], lost.stdout + lost.stderr)

    healed = cluster.cli("up", str(cluster.config), "--timeout", "15", "--json")
    assert healed.exit_code == 0, healed.stderr
    assert healed.json()["started"] == ["h2"]
    assert "h2 started again: alive but not registered with the scheduler" in healed.stderr, healed.stderr
    assert process_groups(cluster.bed, "h2") == {cluster.pids()["h2"]} != {hung}
    assert cluster.down().exit_code == 0
    assert cluster.leftovers() == {}


# ---- remove-worker -------------------------------------------------------------------------------------


def test_remove_worker_moves_the_data_off_then_stops_the_process(bed_cluster: MakeCluster) -> None:
    cluster = bed_cluster("remove")
    bed = cluster.bed
    assert cluster.up().exit_code == 0
    added = cluster.cli("add-worker", str(cluster.config), "--host", "h4", "--timeout", TIMEOUT)
    assert added.exit_code == 0, added.stderr
    document = cluster.status().json()
    workers = addresses(document)
    assert set(workers) == {"h2", "h3", "h4-add1"}

    with Client(document["scheduler"]["address"], timeout=30) as client:
        on_h2 = client.scatter("held by the inventory worker h2", workers=[workers["h2"]])
        on_h4 = client.scatter("held by the added worker", workers=[workers["h4-add1"]])
        assert client.who_has([on_h2, on_h4]) == {on_h2.key: (workers["h2"],), on_h4.key: (workers["h4-add1"],)}

        unknown = cluster.cli("remove-worker", "nosuch", "--config", str(cluster.config))
        assert unknown.exit_code == 2
        assert "no worker named 'nosuch'" in unknown.stderr and "known workers: h2, h3, h4-add1" in unknown.stderr

        by_name = cluster.cli("remove-worker", "h2", "--config", str(cluster.config))
        assert by_name.exit_code == 0, by_name.stderr
        assert bed.wait_for_no_pids("h2") == []
        assert on_h2.result(timeout=30) == "held by the inventory worker h2"
        assert workers["h2"] not in client.who_has(on_h2)[on_h2.key]

        by_address = cluster.cli("remove-worker", workers["h4-add1"], "--config", str(cluster.config))
        assert by_address.exit_code == 0, by_address.stderr
        assert bed.wait_for_no_pids("h4") == []
        assert on_h4.result(timeout=30) == "held by the added worker"
        assert client.who_has([on_h2, on_h4]) == {on_h2.key: (workers["h3"],), on_h4.key: (workers["h3"],)}

    remaining = cluster.status()
    assert remaining.exit_code == 0, remaining.stdout
    assert list(addresses(remaining.json())) == ["h3"] and remaining.json()["missing"] == []
    assert set(cluster.pids()) == {"scheduler", "h3"}
    assert cluster.down().exit_code == 0
    assert cluster.leftovers() == {}


# ---- down without state, with hosts missing ------------------------------------------------------------


def test_down_without_local_state_finds_the_processes_through_the_pid_files(bed_cluster: MakeCluster) -> None:
    cluster = bed_cluster("stateless")
    assert cluster.up().exit_code == 0
    assert {p["name"] for p in cluster.pid_files()} == {"scheduler", "h2", "h3"}
    shutil.rmtree(cluster.home / "clusters" / cluster.name)

    down = cluster.down()
    assert down.exit_code == 0, down.stderr
    assert "no local state" in down.stdout
    assert cluster.leftovers() == {}
    assert cluster.pid_files() == []


def test_down_without_local_state_also_stops_a_worker_added_on_another_host(bed_cluster: MakeCluster) -> None:
    cluster = bed_cluster("stateless-added", workers=[])  # the scheduler alone, on h1
    bed = cluster.bed
    started = cluster.up()
    precondition(started.exit_code == 0, started.stderr)
    added = cluster.cli("add-worker", str(cluster.config), "--host", "h4", "--timeout", TIMEOUT)
    precondition(added.exit_code == 0, added.stderr)
    # A hung worker: it cannot notice its scheduler going away and leave by itself, as a healthy one does.
    os.killpg(cluster.pids()["h4-add1"], signal.SIGSTOP)
    shutil.rmtree(cluster.home / "clusters" / cluster.name)

    down = cluster.down()
    assert down.exit_code == 0, down.stderr
    assert bed.wait_for_no_pids("h1") == []
    assert cluster.leftovers() == {}, "h4's run dir names the added worker: down must find it there"
    assert cluster.pid_files() == []


def test_down_with_hosts_cut_off_keeps_them_and_a_later_down_finishes(bed_cluster: MakeCluster) -> None:
    # The scheduler gives up on a silent worker after worker-ttl (5 minutes), and on its nanny after a
    # connect timeout (30 s): both shortened, so that `status` sees the unplugged host within seconds.
    cluster = bed_cluster("cutoff", scheduler={"env": {"DASK_DISTRIBUTED__SCHEDULER__WORKER_TTL": "2s",
                                                                   "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "2s"}})
    bed = cluster.bed
    assert cluster.up().exit_code == 0
    bed.stop_sshd("h2")
    bed.link_down("h3")
    try:
        cut = status_until(cluster, 1, timeout=45)
        assert cut.exit_code == 1, cut.stdout + cut.stderr
        assert cut.json()["missing"] == ["h3"]

        incomplete = cluster.down()
        assert incomplete.exit_code == 1, incomplete.stdout
        (error,) = error_lines(incomplete.stderr)
        assert "h2: not verified" in error and "connection refused" in error
        assert "h3: not verified" in error
        assert bed.wait_for_no_pids("h1") == [], "the scheduler's host was reachable: it is clean"
        kept = cluster.state()
        assert kept is not None and {p["host"] for p in kept["processes"]} == {"h2", "h3"}
    finally:
        bed.link_up("h3")
        bed.start_sshd("h2")

    finished = cluster.down()
    assert finished.exit_code == 0, finished.stderr
    assert cluster.leftovers() == {}
    assert cluster.state() is None


# ---- process faults ------------------------------------------------------------------------------------


def test_a_killed_worker_comes_back_and_a_killed_scheduler_leaves_nothing_for_down(bed_cluster: MakeCluster) -> None:
    cluster = bed_cluster("processes", workers=[{"name": "h2", "host": "h2"}])
    bed = cluster.bed
    assert cluster.up().exit_code == 0
    nanny = cluster.pids()["h2"]
    (child,) = worker_children(bed, "h2", nanny)
    address = addresses(cluster.status().json())["h2"]

    os.kill(child, signal.SIGKILL)

    def restarted() -> bool:
        result = cluster.status()
        return result.exit_code == 0 and addresses(result.json()).get("h2") not in (None, address)

    assert wait_until(restarted, timeout=60, interval=0.5), cluster.status().stdout
    assert cluster.pids()["h2"] == nanny
    assert [pid for pid in worker_children(bed, "h2", nanny) if pid != child]

    os.kill(cluster.pids()["scheduler"], signal.SIGKILL)
    assert bed.wait_for_no_pids("h1") == []
    headless = cluster.status()
    assert headless.exit_code == 3, headless.stdout
    assert headless.json()["scheduler"]["answers"] is False

    down = cluster.down()
    assert down.exit_code == 0, down.stderr
    assert "does not answer" in down.stdout
    assert cluster.leftovers() == {}


# ---- Ctrl-C --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("moment", ["starting", "waiting for"])
def test_ctrl_c_during_up_leaves_nothing_that_down_cannot_reach(bed_cluster: MakeCluster, moment: str) -> None:
    cluster = bed_cluster("interrupted-" + moment.split()[0])
    up = Running("up", str(cluster.config), "--timeout", TIMEOUT, env=cluster.env.variables())
    try:
        progress = wait_for_line(up, moment)
        code = up.interrupt(timeout=CLI_TIMEOUT)  # what Ctrl-C sends
    finally:
        up.kill()
    assert code == 130, up.stderr
    assert any("interrupted" in line for line in up.stderr[progress:]), up.stderr

    status = cluster.status()
    assert status.exit_code in (0, 1, 3) and "internal error" not in status.stderr, status.stderr
    down = cluster.down()
    assert down.exit_code == 0, down.stderr
    assert cluster.leftovers() == {}


# ---- locking -------------------------------------------------------------------------------------------


def test_a_second_command_waits_briefly_then_refuses_and_nothing_starts_twice(bed_cluster: MakeCluster,
                                                                               tmp_path: Path) -> None:
    release = tmp_path / "release"
    # h3's worker starts only once the test says so: the first `up` holds the lock until then.
    hold = f"while [ ! -e {release} ]; do sleep 0.1; done"
    cluster = bed_cluster("locked", workers=[
        {"name": "h2", "host": "h2"},
        {"name": "h3", "host": "h3", "setup": [hold]},
    ])
    bed = cluster.bed
    first = Running("up", str(cluster.config), "--timeout", TIMEOUT, env=cluster.env.variables())
    try:
        wait_for_line(first, "waiting for")
        config = str(cluster.config)

        def contend(*args: str) -> tuple[CliResult, float]:
            began = time.monotonic()
            return cluster.cli(*args), time.monotonic() - began

        with ThreadPoolExecutor(3) as pool:
            contenders = list(pool.map(lambda args: contend(*args), [
                ("up", config, "--timeout", TIMEOUT), ("add-worker", config, "--host", "h4"), ("down", config)]))
        for contender, seconds in contenders:
            assert contender.exit_code == 1, contender.stdout + contender.stderr
            assert "busy" in contender.stderr
            assert seconds >= LOCK_WAIT_SECONDS, "it waits for the lock briefly before it refuses"
    finally:
        release.touch()
        try:
            code = first.wait(timeout=CLI_TIMEOUT)
        finally:
            first.kill()
    assert code == 0

    pids = cluster.pids()
    assert set(pids) == {"scheduler", "h2", "h3"}
    for alias, name in (("h1", "scheduler"), ("h2", "h2"), ("h3", "h3")):
        assert process_groups(bed, alias) == {pids[name]}, f"{alias} runs one process tree, the recorded one"
    assert bed.pids_in("h4") == []
    assert cluster.down().exit_code == 0
    assert cluster.leftovers() == {}
