"""How much `check`, `up` and `down` ask of each host, counted from the `-v` log (one `→ host:` line per
remote command; a `↳ host:` line is one more request to an agent already running there): one on each host
for `check`; one for `up` however long the wait — the agent that checks the host stays for the start
(`↳`), then stays attached to report an exit — and at most two for `down` (the issue's bound; it runs one).
A structural goal, not a timed one."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from testbed import Testbed
from testbed.client_env import SshEnv
from tests.helpers.bed_cluster import BedCluster, process_groups

pytestmark = pytest.mark.netns

PORT = 8797  # h1's own port space; no other bed test uses it
COMMAND = re.compile(r"^→ (h\d+): ", re.MULTILINE)
MORE = re.compile(r"^↳ (h\d+): ", re.MULTILINE)


def commands_per_host(verbose_log: str) -> Counter[str]:
    return Counter(COMMAND.findall(verbose_log))


def test_check_and_up_run_one_command_on_each_host_down_at_most_two(testbed: Testbed, tmp_path: Path) -> None:
    cluster = BedCluster.write(
        testbed, tmp_path, "counted", SshEnv.under(tmp_path),
        scheduler={"host": "h1", "port": PORT, "dashboard_address": None},
        workers=[{"name": "w2", "host": "h2", "nworkers": 2, "nthreads": 1},
                 {"name": "w3", "host": "h3", "nworkers": 1, "nthreads": 1}],
    )
    with cluster.env.applied():
        try:
            # check: one command per host, the versions with the port's experiment: the scheduler host
            # serves the port until each worker host's agent, asked at the same moment, connected.
            checked = cluster.cli("-v", "check", str(cluster.config))
            assert checked.exit_code == 0, checked.stdout + checked.stderr
            asked = commands_per_host(checked.stderr)
            assert set(asked) == {"h1", "h2", "h3"}, checked.stderr
            assert max(asked.values()) == 1, f"remote commands per host during check: {dict(asked)}\n{checked.stderr}"
            up = cluster.cli("-v", "up", str(cluster.config))
            assert up.exit_code == 0, up.stderr
            started = commands_per_host(up.stderr)
            assert set(started) == {"h1", "h2", "h3"}, up.stderr
            assert max(started.values()) == 1, f"remote commands per host during up: {dict(started)}\n{up.stderr}"
            # the start went to the agent that checked the host, on each host
            assert Counter(MORE.findall(up.stderr)) == {"h1": 1, "h2": 1, "h3": 1}, up.stderr
            # and no agent outlives `up`: every process on a host is in a group `up` recorded
            recorded = set(cluster.pids().values())
            for host in ("h1", "h2", "h3"):
                assert process_groups(testbed, host) <= recorded, (host, recorded, up.stderr)
            down = cluster.cli("-v", "down", "--cluster", "counted")
            assert down.exit_code == 0, down.stderr
            stopped = commands_per_host(down.stderr)
            assert set(stopped) == {"h1", "h2", "h3"}, down.stderr
            assert max(stopped.values()) <= 2, f"remote commands per host during down: {dict(stopped)}\n{down.stderr}"
        finally:
            cluster.tear_down()
