"""Issue 11, item 0 on the multi-host bed: two clusters of one user, over SSH. Cluster B given the
scheduler host and port that cluster A holds (h1:8786) refuses before starting anything, naming the
port, the key to change and that A holds it; `down` of B then touches nothing of A. Moved to another
port, B runs alongside A, and taking either down leaves the other as it was."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from distributed import Client

from testbed import Testbed
from testbed.client_env import SshEnv
from testbed.proc import all_pids
from tests.helpers.bed_cluster import BedCluster
from tests.helpers.cluster import error_lines, is_running

pytestmark = pytest.mark.netns

PORT = 8786  # the default, the one two clusters of one user are most likely to share


def write(bed: Testbed, base: Path, env: SshEnv, name: str, worker_host: str, port: int) -> BedCluster:
    return BedCluster.write(
        bed, base, name, env, scheduler={"host": "h1", "port": port, "dashboard_address": None},
        workers=[{"name": f"{name.lower()}-w", "host": worker_host, "nworkers": 1, "nthreads": 1}])


def answers_with(cluster: BedCluster, port: int) -> set[str]:
    """The workers registered with the scheduler on h1:``port`` (it must answer)."""
    with Client(f"tcp://{cluster.bed.host('h1').address}:{port}", timeout=20) as client:
        return {worker["name"] for worker in client.scheduler_info()["workers"].values()}


def processes_of(cluster: str) -> list[int]:
    """Pids of any process, on any host of the bed (they share this pid namespace), that is the
    scheduler or a worker of ``cluster``: the scheduler's identity or a worker's name in its argv."""
    found = []
    for pid in all_pids():
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        named = any(a == "--name" and b == f"{cluster.lower()}-w" for a, b in itertools.pairwise(argv))
        if named or any(f"clusterctl:{cluster}:" in arg for arg in argv):
            found.append(pid)
    return found


def intact(cluster: BedCluster, port: int, pids: dict[str, int]) -> None:
    """Every process ``cluster`` recorded still runs as it was, and its scheduler has its worker."""
    assert cluster.pids() == pids
    assert all(is_running(p) for p in cluster.recorded())
    assert answers_with(cluster, port) == {f"{cluster.name.lower()}-w"}


def test_a_second_cluster_on_the_first_ones_port_refuses_and_neither_down_touches_the_other(
        testbed: Testbed, tmp_path: Path) -> None:
    env = SshEnv.under(tmp_path / "user")  # one user, one CLUSTERCTL_HOME, two clusters
    a = write(testbed, tmp_path / "a", env, "A", "h2", PORT)
    b = write(testbed, tmp_path / "b", env, "B", "h3", PORT)
    with env.applied():
        try:
            started = a.cli("up", str(a.config))
            assert started.exit_code == 0, started.stderr
            pids_a = a.pids()
            assert len(processes_of("A")) >= 2, "the scheduler and the worker's nanny are found by their argv"

            refused = b.cli("up", str(b.config))
            assert refused.exit_code == 1, refused.stdout + refused.stderr
            (line,) = error_lines(refused.stderr)
            assert line.startswith(f"error: h1: the scheduler port {PORT} is in use on h1: cluster 'A' listens there"), line
            assert "nothing was started" in line
            assert "set another `scheduler.port`" in refused.stderr
            assert "starting" not in refused.stderr
            assert b.state() is None and b.pid_files() == [] and processes_of("B") == []
            intact(a, PORT, pids_a)

            down = b.cli("down", str(b.config))  # a user's reflex after a failed up: it must not touch A
            assert down.exit_code == 0, down.stderr
            intact(a, PORT, pids_a)

            b = write(testbed, tmp_path / "b", env, "B", "h3", PORT + 2)  # moved: it runs alongside A
            started = b.cli("up", str(b.config))
            assert started.exit_code == 0, started.stderr
            intact(a, PORT, pids_a)
            intact(b, PORT + 2, b.pids())
            assert b.cli("down", str(b.config)).exit_code == 0
            assert processes_of("B") == [] and b.pid_files() == []
            intact(a, PORT, pids_a)

            started = b.cli("up", str(b.config))  # again, for A's down to leave it as it was
            assert started.exit_code == 0, started.stderr
            pids_b = b.pids()
            assert a.cli("down", str(a.config)).exit_code == 0
            assert processes_of("A") == [] and a.pid_files() == []
            intact(b, PORT + 2, pids_b)
            assert b.cli("down", str(b.config)).exit_code == 0
            assert processes_of("B") == []
        finally:
            b.tear_down()
            a.tear_down()
