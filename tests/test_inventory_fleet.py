"""The fleet syntax of the inventory: host ranges, groups, worker groups over several hosts, GPUs and the
`dask worker` options; each mistake one line with file:line and key path."""

from __future__ import annotations

import pytest

from clusterctl.errors import InvalidInputError
from clusterctl.inventory import Inventory, dask_config_env, expand_range, parse_inventory, select_hosts
from clusterctl.launch import SchedulerEndpoint, plan_cluster, plan_worker_processes
from clusterctl.records import Gpu

SOURCE = "lab.yaml"
LAB = """\
name: lab
hosts:
  head: {address: 10.0.0.10}
  node[01:16]: {address: "10.0.0.[11:26]"}
  gpu[1:4]: {}
groups:
  cpu: {hosts: ["node[01:16]"], user: compute}
  gpu: {hosts: ["gpu*"], python: /opt/rapids/bin/python}
scheduler: {host: head}
workers:
  - name: cpu
    hosts: cpu
    nworkers: 4
    nthreads: 2
  - name: gpu
    hosts: gpu
    gpus: auto
    worker_class: mylab.GPUWorker
"""


def parse(text: str) -> Inventory:
    return parse_inventory(text, SOURCE)


def rejection(text: str) -> str:
    with pytest.raises(InvalidInputError) as caught:
        parse(text)
    assert caught.value.exit_code == 2
    return caught.value.message


def test_the_issues_lab_expands_to_one_entry_per_host() -> None:
    inventory = parse(LAB)
    assert len(inventory.hosts) == 21
    assert inventory.host("node01").address == "10.0.0.11" and inventory.host("node16").address == "10.0.0.26"
    assert inventory.host("node07").user == "compute" and inventory.host("head").user is None
    assert inventory.host("gpu3").python == "/opt/rapids/bin/python"
    assert [(w.name, w.host, w.group) for w in inventory.workers[:2]] == [
        ("cpu-node01", "node01", "cpu"), ("cpu-node02", "node02", "cpu")]
    assert inventory.workers[0].worker_names() == ["cpu-node01-0", "cpu-node01-1", "cpu-node01-2", "cpu-node01-3"]
    assert [w.name for w in inventory.workers[16:]] == ["gpu-gpu1", "gpu-gpu2", "gpu-gpu3", "gpu-gpu4"]


@pytest.mark.parametrize(("text", "expected"), [
    ("node[01:03]", ["node01", "node02", "node03"]),
    ("n[8:10]x", ["n8x", "n9x", "n10x"]),
    ("rack[007:009]", ["rack007", "rack008", "rack009"]),
    ("plain", None),
])
def test_ranges_are_inclusive_and_keep_zero_padding(text: str, expected: list[str] | None) -> None:
    assert expand_range(text) == expected


def test_precedence_is_defaults_then_groups_in_file_order_then_host_then_worker_group() -> None:
    inventory = parse("""\
name: t
defaults: {env: {A: defaults, B: defaults, C: defaults, D: defaults}, death_timeout: 10s}
hosts:
  n[1:2]: {env: {C: host}}
groups:
  first: {hosts: ["n*"], env: {A: first, B: first}, death_timeout: 20s}
  second: {hosts: [n1], env: {B: second}}
scheduler: {host: n1}
workers:
  - {name: w, hosts: "n[1:2]", env: {D: worker}}
""")
    one, two = inventory.workers
    assert inventory.process_settings("n1", one).env == {"A": "first", "B": "second", "C": "host", "D": "worker"}
    assert inventory.process_settings("n2", two).env == {"A": "first", "B": "first", "C": "host", "D": "worker"}
    assert inventory.worker_options(one) == {"death_timeout": "20s"}


def test_select_hosts_takes_groups_and_ranges_too_and_keeps_aliases_globs_and_addresses() -> None:
    inventory = parse(LAB + "elastic: {hosts: [gpu, \"node[15:16]\"]}\n")
    assert select_hosts(inventory, ["gpu", "node[02:03]", "head", "node1?", "10.9.9.9"]) == [
        "gpu1", "gpu2", "gpu3", "gpu4", "node02", "node03", "head",
        *[f"node{i}" for i in range(10, 17)], "10.9.9.9"]
    assert select_hosts(inventory, inventory.elastic.hosts if inventory.elastic else []) == [
        "gpu1", "gpu2", "gpu3", "gpu4", "node15", "node16"]
    assert select_hosts(inventory, ["zz*"]) == []


def test_worker_options_and_dask_config_become_argv_elements_and_dask_variables() -> None:
    inventory = parse("""\
name: t
hosts: {n1: {worker_port: 40000, dask_config: {distributed: {worker: {daemon: false}}}}}
scheduler: {host: n1, idle_timeout: 1h, preload: [sched_plugin]}
workers:
  - host: n1
    name: w
    preload: [/opt/lab/setup.py, mylab.preload]
    local_directory: /scratch/dask
    lifetime: 1h
    lifetime_stagger: 5m
    lifetime_restart: true
    nanny_port: "41000:41100"
    interface: ib0
    dask_config: {fleet.label: "7"}
""")
    scheduler, worker = plan_cluster(inventory, SchedulerEndpoint("n1", 8786))
    assert scheduler.argv[-6:-2] == ["--preload", "sched_plugin", "--idle-timeout", "1h"]
    assert worker.argv[worker.argv.index("--nanny") + 1:] == [
        "--local-directory", "/scratch/dask", "--lifetime", "1h", "--lifetime-stagger", "5m",
        "--worker-port", "40000", "--nanny-port", "41000:41100", "--interface", "ib0",
        "--preload", "/opt/lab/setup.py", "--preload", "mylab.preload", "--lifetime-restart"]
    assert worker.env == {"DASK_DISTRIBUTED__WORKER__DAEMON": "False", "DASK_FLEET__LABEL": "'7'"}
    assert dask_config_env({"distributed.scheduler.work-stealing": True}) == {
        "DASK_DISTRIBUTED__SCHEDULER__WORK_STEALING": "True"}


def test_an_unquoted_a_colon_b_is_the_text_written_not_a_base_60_number() -> None:
    inventory = parse("name: t\nhosts: {n1: {}}\nscheduler: {host: n1}\n"
                      "workers:\n  - {name: w, host: n1, worker_port: 4:30, nanny_port: 1:05}\n")
    assert (inventory.workers[0].worker_port, inventory.workers[0].nanny_port) == ("4:30", "1:5")  # not 270, 65


def test_one_process_per_gpu_each_seeing_its_own_gpu_first() -> None:
    inventory = parse(LAB)
    group = next(w for w in inventory.workers if w.host == "gpu2")
    found = [Gpu(i, f"GPU-{i}", "A100", 40960) for i in range(3)]
    plans = plan_worker_processes(inventory, group, "tcp://10.0.0.10:8786", None, found)
    assert [p.name for p in plans] == ["gpu-gpu2-gpu0", "gpu-gpu2-gpu1", "gpu-gpu2-gpu2"]
    assert [p.env["CUDA_VISIBLE_DEVICES"] for p in plans] == ["0,1,2", "1,2,0", "2,0,1"]
    assert all(p.argv[p.argv.index("--resources") + 1] == "GPU=1" and p.group == "gpu" for p in plans)
    assert all(p.argv[p.argv.index("--nthreads") + 1] == "1" for p in plans)
    chosen = group.model_copy(update={"gpus": [2, 0]})
    assert [p.env["CUDA_VISIBLE_DEVICES"] for p in plan_worker_processes(
        inventory, chosen, "tcp://x:1", None, found)] == ["2,0", "0,2"]


HEAD = 'name: t\nhosts:\n  head: {}\n  node[01:04]: {address: "10.0.0.[11:14]"}\n'
REJECTIONS = [
    pytest.param(HEAD + "scheduler: {host: head}\nworkers:\n  - name: cpu\n    hosts: cpux\n",
                 f"{SOURCE}:8: workers[0].hosts:", "'cpux' is neither a group", id="unknown-group"),
    pytest.param('name: t\nhosts:\n  node[01:04]: {address: "10.0.0.[11:13]"}\nscheduler: {host: node01}\n',
                 f"{SOURCE}:3: hosts.node[01:04].address:", "has 3 value(s) but 'node[01:04]' has 4", id="sizes"),
    pytest.param(HEAD + "scheduler: {host: head}\nworkers:\n  - name: cpu\n    hosts: [\"gpu*\"]\n",
                 f"{SOURCE}:8: workers[0].hosts[0]:", "the glob 'gpu*' matches no host", id="glob-no-match"),
    pytest.param(HEAD + "  node03: {}\nscheduler: {host: head}\n",
                 f"{SOURCE}:5: hosts.node03:", "host 'node03' is defined twice", id="host-collision"),
    pytest.param(HEAD + "scheduler: {host: head}\nworkers:\n  - {name: cpu, hosts: \"node[01:02]\"}\n"
                 "  - {name: cpu-node01, host: head}\n",
                 f"{SOURCE}:8: workers[1].name:", "'cpu-node01' is already used by workers[0]", id="name-collision"),
    pytest.param("name: t\nhosts:\n  node[16:01]: {}\nscheduler: {host: node01}\n",
                 f"{SOURCE}:3: hosts.node[16:01]:", "is inverted: write [01:16]", id="inverted"),
    pytest.param(HEAD + "groups:\n  g:\n    hosts: [\"node*\"]\n    user: 'a b'\nscheduler: {host: head}\n",
                 f"{SOURCE}:8: groups.g.user:", "not a valid user name", id="group-var"),
    pytest.param(HEAD + "groups:\n  head: {hosts: [node01]}\nscheduler: {host: head}\n",
                 f"{SOURCE}:6: groups.head:", "has the name of a host", id="group-named-like-host"),
    pytest.param(HEAD + "scheduler: {host: head}\nworkers:\n  - {name: w, hosts: \"node[03:09]\"}\n",
                 f"{SOURCE}:7: workers[0].hosts:", "names 'node05', which is not in `hosts`", id="range-beyond"),
    pytest.param(HEAD + "scheduler: {host: head}\nworkers:\n  - {name: w, host: head, hosts: head}\n",
                 f"{SOURCE}:7: workers[0].hosts:", "not both", id="host-and-hosts"),
    pytest.param(HEAD + "scheduler: {host: head}\nworkers:\n  - {name: w, hosts: node01, gpus: 2, nworkers: 2}\n",
                 f"{SOURCE}:7: workers[0].nworkers:", "each GPU gets one worker process", id="gpus-nworkers"),
    pytest.param(HEAD + "scheduler: {host: head}\nworkers:\n  - {name: w, host: head, gpus: [0, 0]}\n",
                 f"{SOURCE}:7: workers[0].gpus:", "distinct", id="gpus-repeated"),
    pytest.param(HEAD + "scheduler: {host: head}\nworkers:\n  - {name: w, host: head, worker_port: 2000:30}\n",
                 f"{SOURCE}:7: workers[0].worker_port:", "(low:high)", id="unquoted-port-range-is-text-not-base-60"),
    pytest.param(HEAD + "scheduler: {host: head}\nworkers:\n  - {name: w, host: head, worker_port: '9:1'}\n",
                 f"{SOURCE}:7: workers[0].worker_port:", "(low:high)", id="port-range-backwards"),
    pytest.param(HEAD + "scheduler: {host: head}\nworkers:\n  - {name: w, host: head, preload: ['x; rm -rf /']}\n",
                 f"{SOURCE}:7: workers[0].preload:", "without spaces or shell characters", id="preload-shell"),
    pytest.param(HEAD + "scheduler: {host: head}\nworkers:\n  - {name: w, host: head, local_directory: '$(id)'}\n",
                 f"{SOURCE}:7: workers[0].local_directory:", "shell characters", id="directory-shell"),
    pytest.param(HEAD + "scheduler: {host: head}\nworkers:\n  - {name: w, host: head, worker_class: 'a b'}\n",
                 f"{SOURCE}:7: workers[0].worker_class:", "dotted Python name", id="worker-class"),
    pytest.param(HEAD + "scheduler: {host: head, idle_timeout: soon}\n",
                 f"{SOURCE}:5: scheduler.idle_timeout:", "not a duration", id="idle-timeout"),
    pytest.param(HEAD + "scheduler: {host: head}\nworkers:\n  - {name: w, host: head, dask_config: {'a b': 1}}\n",
                 f"{SOURCE}:7: workers[0].dask_config:", "not a dask config key", id="dask-config-key"),
    pytest.param(HEAD + "scheduler: {host: head}\nworkers:\n  - {name: w, host: head, interface: 'eth0;x'}\n",
                 f"{SOURCE}:7: workers[0].interface:", "not a network interface", id="interface"),
    pytest.param(HEAD + "scheduler: {host: head}\nelastic:\n  hosts: [\"node[04:02]\"]\n",
                 f"{SOURCE}:7: elastic.hosts[0]:", "is inverted", id="elastic-inverted"),
    pytest.param(HEAD + "scheduler: {host: head}\nelastic: {hosts: [gpu], worker: {gpus: auto}}\n",
                 f"{SOURCE}:6: elastic.worker:", "no `gpus` here", id="elastic-gpus"),
]


@pytest.mark.parametrize(("text", "prefix", "fragment"), REJECTIONS)
def test_fleet_mistakes_are_one_line_with_file_line_and_key(text: str, prefix: str, fragment: str) -> None:
    message = rejection(text)
    assert "\n" not in message
    assert message.startswith(prefix + " "), message
    assert fragment in message, message


def test_the_fleet_example_is_accepted_by_a_dry_run_host_by_host() -> None:
    from tests.helpers.cluster import REPO, clusterctl

    dry = clusterctl("up", str(REPO / "examples" / "fleet.yaml"), "--dry-run", "--json")
    assert dry.exit_code == 0, dry.stderr
    hosts = dry.json()["hosts"]
    assert list(hosts) == ["head", *(f"node{i:02d}" for i in range(1, 17)), "gpu1", "gpu2", "gpu3", "gpu4"]
    assert hosts["node16"]["address"] == "10.0.0.26"
    assert [p["name"] for p in hosts["node16"]["processes"]] == ["cpu-node16"]
    assert hosts["node16"]["processes"][0]["worker_names"] == [f"cpu-node16-{i}" for i in range(4)]
    assert hosts["gpu4"]["processes"] == [] and "one worker per GPU" in hosts["gpu4"]["notes"][0]
