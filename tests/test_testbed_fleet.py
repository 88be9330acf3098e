"""A fleet in a few lines, on a bed of twelve hosts: host ranges, groups and globs expand as documented,
one worker per GPU (a fake `nvidia-smi` that answers by the host's address), worker options that
reach `dask worker`, `dask_config` every worker reads, and a scheduler that an idle timeout takes down.

The machine is small and shared: the twelve hosts serve the expansion (a dry run starts nothing);
only one cluster of a few workers really runs.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from distributed import Client

from testbed import Testbed, TestbedError, create_testbed, destroyed_at_exit, prune_stale_beds, unavailable_reason
from testbed.client_env import SshEnv
from tests.helpers.bed_cluster import BedCluster
from tests.helpers.cluster import PYTHON, clusterctl, error_lines, wait_until

pytestmark = pytest.mark.netns

HOSTS = 12
PORT = 8797  # each host has its own ports; not the other bed tests' 8786/8796
SETTLE_WITHIN = 120.0  # generous: the machine is shared


@pytest.fixture(scope="module")
def fleet_bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Testbed]:
    """Twelve hosts h1..h12 of their own (the session's bed has four)."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    with contextlib.suppress(TestbedError, OSError):
        prune_stale_beds()
    with destroyed_at_exit(create_testbed(HOSTS, tmp_path_factory.mktemp("fleet"), owner_pid=os.getpid())) as bed:
        yield bed


def connection(bed: Testbed) -> dict[str, Any]:
    """How every bed host is reached (the same for all but the address)."""
    settings = dict(bed.inventory()["hosts"]["h1"])
    del settings["address"], settings["run_dir"]
    return settings


def address_range(bed: Testbed, first: int, last: int) -> str:
    """``10.x.y.[a:b]``: the addresses of bed hosts h<first>..h<last>, which the bed numbers in a row."""
    addresses = [ipaddress.ip_address(bed.host(f"h{i}").address) for i in range(first, last + 1)]
    assert [int(a) - int(addresses[0]) for a in addresses] == list(range(len(addresses)))
    prefix, _, low = str(addresses[0]).rpartition(".")
    return f"{prefix}.[{low}:{str(addresses[-1]).rpartition('.')[2]}]"


def fleet_yaml(bed: Testbed, group_key: str = "") -> str:
    """Twelve bed hosts in three lines of `hosts`; two groups, four worker groups."""
    reach = connection(bed)
    return textwrap.dedent(f"""\
        name: fleet
        defaults: {{python: {PYTHON}, env: {{LEVEL: defaults}}, port: {reach["port"]}, user: root,
                    identity_file: {reach["identity_file"]}, host_key_policy: accept-new}}
        hosts:
          head: {{address: {bed.host("h1").address}}}
          node[01:10]: {{address: "{address_range(bed, 2, 11)}"}}
          big: {{address: {bed.host("h12").address}, env: {{LEVEL: host}}}}
        groups:
          cpu: {{hosts: ["node[01:10]", big], env: {{LEVEL: group}}{group_key}}}
          odd: {{hosts: ["node0[13579]"], env: {{LEVEL: odd}}}}
        scheduler: {{host: head, port: {PORT}, dashboard_address: null}}
        workers:
          - {{name: cpu, hosts: cpu, nthreads: 2}}
          - {{name: extra, hosts: ["node1?", big], nworkers: 2, env: {{LEVEL: worker}}}}
          - {{name: pair, hosts: "node[02:03]"}}
          - {{host: head}}
        """)


def test_ranges_groups_and_globs_expand_per_host_in_the_dry_run(fleet_bed: Testbed, tmp_path: Path) -> None:
    config = tmp_path / "fleet.yaml"
    config.write_text(fleet_yaml(fleet_bed, ", nthreads_hint: 1"))
    rejected = clusterctl("up", str(config), "--dry-run")  # group vars are host settings: a typo is caught
    assert rejected.exit_code == 2
    assert error_lines(rejected.stderr) == [f"error: {config}:9: groups.cpu.nthreads_hint: unknown key 'nthreads_hint'"]

    config.write_text(fleet_yaml(fleet_bed))
    dry = clusterctl("up", str(config), "--dry-run", "--json")
    assert dry.exit_code == 0, dry.stderr
    document = dry.json()
    listed = {host: entry["processes"] for host, entry in document["hosts"].items()}
    processes = {host: [p["name"] for p in mine] for host, mine in listed.items()}
    nodes = [f"node{i:02d}" for i in range(1, 11)]
    assert processes == {
        "head": ["scheduler", "head-g3"],
        **{node: [f"cpu-{node}"] + ([f"pair-{node}"] if node in ("node02", "node03") else []) for node in nodes[:9]},
        "node10": ["cpu-node10", "extra-node10"],
        "big": ["cpu-big", "extra-big"],
    }
    groups = {p["name"]: p["group"] for mine in listed.values() for p in mine}
    assert groups["cpu-node07"] == "cpu" and groups["extra-big"] == "extra" and groups["pair-node03"] == "pair"
    extra = next(p for p in listed["big"] if p["name"] == "extra-big")
    assert extra["worker_names"] == ["extra-big-0", "extra-big-1"]
    argv = extra["argv"]
    assert argv[argv.index("--nworkers") + 1] == "2" and argv[argv.index("--name") + 1] == "extra-big"
    cpu = next(p for p in listed["node05"] if p["name"] == "cpu-node05")["argv"]
    assert cpu[cpu.index("--nthreads") + 1] == "2" and cpu[0] == PYTHON
    # defaults < groups (in file order) < host < worker group
    level = {host: [line.split("LEVEL=")[1].split()[0] for line in lines]
             for host, lines in document["commands"].items()}
    assert level["head"] == ["defaults", "defaults"]
    assert level["node01"] == ["odd"] and level["node02"] == ["group", "group"] and level["node09"] == ["odd"]
    assert level["big"] == ["host", "worker"] and level["node10"] == ["group", "worker"]
    # node[01:10] pairs with the address range by position, zero padding kept
    assert "--name cpu-node10" in document["commands"]["node10"][0]
    assert document["hosts"]["node01"]["address"] == fleet_bed.host("h2").address
    assert document["hosts"]["node10"]["address"] == fleet_bed.host("h11").address
    assert f"node10 {fleet_bed.host('h11').address} (cpu-node10, extra-node10)" in clusterctl(
        "up", str(config), "--dry-run").stdout


FAKE_NVIDIA_SMI = """\
#!/bin/sh
# A fake nvidia-smi: the GPUs of the host it runs on, by the host's address.
[ "$*" = "--query-gpu=index,uuid,name,memory.total --format=csv,noheader,nounits" ] || exit 2
for address in $(hostname -I); do
  if [ -f "{gpus}/$address.csv" ]; then exec cat "{gpus}/$address.csv"; fi
done
echo "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver." >&2
exit 9
"""

PRELOAD = """\
from pathlib import Path


def dask_setup(worker):
    Path({markers!r}, worker.name).write_text(str(worker.port))
"""


def fake_gpus(base: Path, bed: Testbed, boards: dict[str, list[str]]) -> Path:
    """A directory holding the fake nvidia-smi; ``boards``: bed alias -> its GPUs' names."""
    (base / "gpus").mkdir(parents=True)
    for alias, names in boards.items():
        lines = [f"{i}, GPU-{alias}-{i:04d}, {name}, 16384" for i, name in enumerate(names)]
        (base / "gpus" / f"{bed.host(alias).address}.csv").write_text("\n".join(lines) + "\n")
    (base / "bin").mkdir()
    script = base / "bin" / "nvidia-smi"
    script.write_text(FAKE_NVIDIA_SMI.format(gpus=base / "gpus"))
    script.chmod(0o755)
    return base / "bin"


def test_one_worker_per_gpu_with_options_and_dask_config(fleet_bed: Testbed, tmp_path: Path) -> None:
    fake_bin = fake_gpus(tmp_path / "nvidia", fleet_bed, {"h5": ["Tesla T4", "Tesla T4"],
                                                           "h6": ["A100", "A100", "A100"]})
    markers = tmp_path / "markers"
    markers.mkdir()
    preload = tmp_path / "mark.py"
    preload.write_text(PRELOAD.format(markers=str(markers)))
    cluster = BedCluster.write(
        fleet_bed, tmp_path / "cluster", "gpufleet", SshEnv.under(tmp_path / "cluster"),
        groups={"gpu": {"hosts": ["h[5:6]"], "env": {"PATH": f"{fake_bin}:/usr/bin:/bin"}},
                "cpu": {"hosts": ["h2"], "dask_config": {"fleet": {"label": "7", "level": "group"}}}},
        scheduler={"host": "h1", "port": PORT, "dashboard_address": None},
        workers=[
            {"name": "gpu", "hosts": "gpu", "gpus": "auto", "resources": {"FAST": 1}},
            {"name": "cpu", "hosts": ["cpu"], "preload": [str(preload)], "worker_port": "41000:41010",
             "dask_config": {"fleet.level": "worker"}},
        ])
    with cluster.env.applied():
        try:
            up = cluster.cli("up", str(cluster.config))
            assert up.exit_code == 0, up.stderr
            status = cluster.cli("status", "--cluster", "gpufleet", "--json")
            assert status.exit_code == 0, status.stderr
            workers = {w["name"]: w for w in status.json()["workers"]}
            assert {name: (w["group"], w["host"], w["gpu"] and w["gpu"]["index"]) for name, w in workers.items()} == {
                "gpu-h5-gpu0": ("gpu", "h5", 0), "gpu-h5-gpu1": ("gpu", "h5", 1),
                "gpu-h6-gpu0": ("gpu", "h6", 0), "gpu-h6-gpu1": ("gpu", "h6", 1), "gpu-h6-gpu2": ("gpu", "h6", 2),
                "cpu-h2": ("cpu", "h2", None)}
            assert workers["gpu-h6-gpu2"]["gpu"]["name"] == "A100"
            assert all(w["resources"] == {"FAST": 1, "GPU": 1} for n, w in workers.items() if n.startswith("gpu"))
            assert "GPU 1: Tesla T4" in cluster.cli("status", "--cluster", "gpufleet").stdout

            with Client(f"tcp://{fleet_bed.host('h1').address}:{PORT}", timeout=30) as client:
                by_name = {w["name"]: a for a, w in client.scheduler_info()["workers"].items()}
                visible = client.run(lambda: os.environ.get("CUDA_VISIBLE_DEVICES"))
                for host, count in (("h5", 2), ("h6", 3)):
                    seen = [visible[by_name[f"gpu-{host}-gpu{i}"]] for i in range(count)]
                    assert [devices.split(",")[0] for devices in seen] == [str(i) for i in range(count)]
                    assert all(sorted(d.split(",")) == [str(i) for i in range(count)] for d in seen)
                assert client.submit(lambda: os.environ["CUDA_VISIBLE_DEVICES"], resources={"GPU": 1},
                                     pure=False).result(timeout=SETTLE_WITHIN)

                cpu = by_name["cpu-h2"]
                assert 41000 <= int(cpu.rsplit(":", 1)[1]) <= 41010  # inside the range
                assert (markers / "cpu-h2").read_text() == cpu.rsplit(":", 1)[1]  # the preload ran there
                assert not (markers / "gpu-h5-gpu0").exists()  # and only there

                import dask

                assert client.run(dask.config.get, "fleet", workers=[cpu])[cpu] == {"label": "7", "level": "worker"}
        finally:
            cluster.tear_down()
    assert all(fleet_bed.wait_for_no_pids(f"h{i}") == [] for i in (1, 2, 5, 6))


def test_a_gpu_host_without_nvidia_smi_is_refused_before_anything_starts(fleet_bed: Testbed, tmp_path: Path) -> None:
    fake_bin = fake_gpus(tmp_path / "nvidia", fleet_bed, {"h7": ["Tesla T4"]})
    cluster = BedCluster.write(
        fleet_bed, tmp_path / "cluster", "nogpu", SshEnv.under(tmp_path / "cluster"),
        scheduler={"host": "h1", "port": PORT, "dashboard_address": None},
        workers=[{"name": "gpu", "hosts": "h7", "gpus": "auto", "env": {"PATH": f"{fake_bin}:/usr/bin:/bin"}},
                 {"name": "bare", "hosts": "h8", "gpus": "auto", "env": {"PATH": "/usr/bin:/bin"}}])
    try:
        refused = cluster.cli("up", str(cluster.config))
        assert refused.exit_code == 1
        assert error_lines(refused.stderr) == [
            "error: h8: its worker group has `gpus:` but nvidia-smi: command not found"]
        assert "put nvidia-smi on the group's PATH" in refused.stderr
        assert cluster.state() is None and cluster.pid_files() == []  # nothing started, on any host
    finally:
        cluster.tear_down()


def test_idle_timeout_takes_the_scheduler_down_and_status_says_so(fleet_bed: Testbed, tmp_path: Path) -> None:
    cluster = BedCluster.write(fleet_bed, tmp_path / "cluster", "idle", SshEnv.under(tmp_path / "cluster"),
                               scheduler={"host": "h3", "port": PORT, "dashboard_address": None,
                                          "idle_timeout": "2s"})
    try:
        up = cluster.cli("up", str(cluster.config))
        assert up.exit_code == 0, up.stderr
        scheduler = cluster.pids()["scheduler"]
        assert wait_until(lambda: scheduler not in fleet_bed.pids_in("h3"), timeout=SETTLE_WITHIN)
        status = cluster.cli("status", "--cluster", "idle")
        assert status.exit_code == 3
        assert "idle_timeout" in status.stdout + status.stderr
        down = cluster.cli("down", "--cluster", "idle")
        assert down.exit_code == 0, down.stderr
        assert cluster.state() is None and cluster.pid_files() == []
    finally:
        cluster.tear_down()
