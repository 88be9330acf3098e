"""`--limit PATTERN` on `up`, `down`, `check`, `status` and `logs`, on one machine: three local hosts
(a: the scheduler, b and c: a worker group each), each with its own run directory.

The story: a pattern that names no host is one error line, exit 2, for every command; each command
looks only at the selected hosts; `down --limit c` stops c's processes (workers added by
`add-worker` and by `scale` included)
and keeps the rest running and recorded; the scheduler's host cannot go alone; with b and c
stopped, `up --limit c` starts c's group again and leaves b as it is; a dead scheduler is started
again only by an `up` whose --limit covers every host with workers. (`test_testbed_limit.py` does the same over SSH,
with data that must survive.)
"""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path
from typing import Any

import pytest

from clusterctl.commands.scale import scale
from clusterctl.errors import InvalidInputError
from clusterctl.inventory import parse_inventory
from clusterctl.limit import cluster_hosts, limit_hosts
from clusterctl.progress import SilentProgress
from tests.helpers.cluster import (
    WORKER_ENV,
    clusterctl,
    error_lines,
    free_port,
    is_running,
    wait_until,
    write_inventory,
)


def three_hosts(tmp_path: Path, name: str = "lim") -> Path:
    hosts = {alias: {"connection": "local", "run_dir": str(tmp_path / alias)} for alias in ("a", "b", "c")}
    return write_inventory(tmp_path / "cluster.yaml", {
        "name": name, "defaults": {"env": WORKER_ENV}, "hosts": hosts,
        "scheduler": {"host": "a", "port": free_port(), "dashboard_address": None},
        "workers": [{"name": "wb", "host": "b", "nworkers": 1, "nthreads": 1},
                    {"name": "wc", "host": "c", "nworkers": 1, "nthreads": 1}],
        "elastic": {"hosts": ["c"], "worker": {"nthreads": 1}, "maximum": 5},
    })


def test_limit_hosts_takes_aliases_and_globs_in_cluster_order_and_refuses_a_pattern_naming_none() -> None:
    inventory = parse_inventory("name: x\nhosts: {node01: {}, node02: {}, node10: {}, gpu1: {}}\n"
                                "scheduler: {host: node01}\nworkers: [{name: g, host: gpu1}]\n", "x.yaml")
    hosts = cluster_hosts(inventory, ["10.0.0.9"])
    assert hosts == ["node01", "node02", "node10", "gpu1", "10.0.0.9"]
    assert limit_hosts(inventory, hosts, []) == hosts
    assert limit_hosts(inventory, hosts, ["gpu1", "node0*"]) == ["node01", "node02", "gpu1"]
    assert limit_hosts(inventory, hosts, ["10.0.0.*"]) == ["10.0.0.9"]  # an added worker's bare address
    for pattern in ("node3*", "nope", "10.0.0.1"):
        with pytest.raises(InvalidInputError, match=re.escape(f"--limit {pattern!r} matches no host of the cluster")):
            limit_hosts(inventory, hosts, ["gpu1", pattern])


def test_limit_takes_the_fleet_syntax_groups_and_ranges() -> None:
    inventory = parse_inventory("""\
name: lab
hosts:
  head: {}
  node[01:04]: {}
  gpu[1:2]: {}
groups:
  cpu: {hosts: ["node[01:04]"]}
  gpu: {hosts: ["gpu*"]}
scheduler: {host: head}
workers:
  - {name: cpu, hosts: cpu}
  - {name: gpu, hosts: gpu}
""", "lab.yaml")
    hosts = cluster_hosts(inventory)
    assert limit_hosts(inventory, hosts, ["gpu"]) == ["gpu1", "gpu2"]
    assert limit_hosts(inventory, hosts, ["node[02:03]", "gpu2"]) == ["node02", "node03", "gpu2"]
    assert limit_hosts(inventory, hosts, ["cpu"]) == ["node01", "node02", "node03", "node04"]
    with pytest.raises(InvalidInputError, match=re.escape("--limit 'tpu' matches no host of the cluster")):
        limit_hosts(inventory, hosts, ["tpu"])


def unmatched(*args: str) -> None:
    refused = clusterctl(*args, "--limit", "b", "--limit", "zz*")
    assert refused.exit_code == 2, (args, refused.stderr)
    assert error_lines(refused.stderr) == ["error: --limit 'zz*' matches no host of the cluster"], refused.stderr


def pids_by_name(status: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: p["pid"] for p in status["processes"]}


def test_each_command_looks_only_at_the_hosts_limit_selects(tmp_path: Path, clusterctl_home: Path) -> None:
    config = three_hosts(tmp_path)
    unmatched("check", str(config))
    unmatched("up", str(config))
    assert not (clusterctl_home / "clusters" / "lim").exists(), "a refused `up --limit` starts nothing"

    up = clusterctl("up", str(config))
    assert up.exit_code == 0, up.stderr
    added = clusterctl("add-worker", "--host", "c", "--name", "extra")
    assert added.exit_code == 0, added.stderr
    assert scale(SilentProgress(), 4, cluster="lim").added == ["elastic-1"]  # on c, the one elastic host
    for command in (["status"], ["logs"], ["down"]):
        unmatched(*command)

    everything = clusterctl("status", "--processes", "--json").json()
    assert sorted(pids_by_name(everything)) == ["elastic-1", "extra", "scheduler", "wb", "wc"]
    only_c = clusterctl("status", "--processes", "--json", "--limit", "c")
    assert only_c.exit_code == 0, only_c.stderr
    document = only_c.json()
    assert sorted(w["name"] for w in document["workers"]) == ["elastic-1", "extra", "wc"]
    assert sorted(p["name"] for p in document["processes"]) == ["elastic-1", "extra", "wc"]
    assert set(document) == set(everything), "--limit keeps the document's shape"

    logs = clusterctl("logs", "-n", "1", "--limit", "c")
    assert logs.exit_code == 0, logs.stderr
    assert {line.split("]")[0] + "]" for line in logs.stdout.splitlines()} == {"[wc]", "[extra]", "[elastic-1]"}
    assert clusterctl("logs", "scheduler", "--limit", "b").exit_code == 2  # the scheduler runs on a

    check = clusterctl("check", str(config), "--json", "--limit", "b")
    assert [h["host"] for h in check.json()["hosts"]] == ["b"], check.stdout

    alone = clusterctl("down", "--limit", "a")
    assert alone.exit_code == 2 and "the scheduler's host" in alone.stderr, alone.stderr

    before = clusterctl("status", "--processes", "--json").json()
    down = clusterctl("down", "--limit", "c", "--json")
    assert down.exit_code == 0, down.stderr
    stopped = down.json()["stopped"]
    assert sorted(p["name"] for p in stopped) == ["elastic-1", "extra", "wc"] and {p["host"] for p in stopped} == {"c"}
    assert not any(is_running({"pid": p["pid"]}) for p in stopped), "c's processes are verified gone"
    state = json.loads((clusterctl_home / "clusters" / "lim" / "state.json").read_text())
    assert sorted(p["name"] for p in state["processes"]) == ["scheduler", "wb"]
    after = clusterctl("status", "--processes", "--json")
    assert after.exit_code == 0, after.stderr  # healthy: nothing expected is missing
    assert pids_by_name(after.json()) == {n: p for n, p in pids_by_name(before).items() if n in ("scheduler", "wb")}
    assert [w["name"] for w in after.json()["workers"]] == ["wb"]

    assert clusterctl("down", "--limit", "b").exit_code == 0  # now b and c run nothing
    again = clusterctl("up", str(config), "--limit", "c")
    assert again.exit_code == 0, again.stderr
    restarted = clusterctl("status", "--processes", "--json").json()
    assert sorted(pids_by_name(restarted)) == ["scheduler", "wc"], "b, outside --limit, was left as it was"
    assert pids_by_name(restarted)["scheduler"] == pids_by_name(before)["scheduler"]
    assert all(p["alive"] for p in restarted["processes"]) and restarted["missing"] == []

    whole = clusterctl("up", str(config))
    assert whole.exit_code == 0, whole.stderr
    assert sorted(pids_by_name(clusterctl("status", "--processes", "--json").json())) == ["scheduler", "wb", "wc"]

    scheduler = clusterctl("status", "--processes", "--json").json()["processes"][0]
    assert scheduler["name"] == "scheduler"
    os.killpg(scheduler["pid"], signal.SIGKILL)  # a scheduler started again takes every worker with it:
    assert wait_until(lambda: not is_running(scheduler), timeout=30)
    outside = clusterctl("up", str(config), "--limit", "c")
    assert outside.exit_code == 2 and error_lines(outside.stderr) == [
        "error: the scheduler of cluster 'lim' must be started again on a, which --limit leaves out"], outside.stderr
    inside = clusterctl("up", str(config), "--limit", "a")
    assert inside.exit_code == 2 and "those on b, c (outside --limit) would stop too" in inside.stderr, inside.stderr

    final = clusterctl("down", "--limit", "*")  # the scheduler's host with every other: a full down
    assert final.exit_code == 0, final.stderr
    assert "the whole cluster went down" in final.stdout and "cluster lim is down" in final.stdout, final.stdout
    assert not (clusterctl_home / "clusters" / "lim" / "state.json").exists()
