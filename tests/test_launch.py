"""Command lines for `dask scheduler` and `dask worker`, checked against distributed's own parsers."""

from __future__ import annotations

import click
import pytest
from distributed.cli import dask_scheduler, dask_worker

from clusterctl.errors import InvalidInputError
from clusterctl.inventory import Inventory, WorkerGroup, format_resources, parse_inventory
from clusterctl.launch import (
    SCHEDULER_MODULE,
    WORKER_MODULE,
    SchedulerEndpoint,
    plan_cluster,
    scheduler_address,
    scheduler_argv,
    worker_argv,
)

PYTHON = "/opt/venv/bin/python"
SCHEDULER = "tcp://10.0.0.1:8786"


def _plan(inventory: Inventory, listen_host: str) -> list:
    return plan_cluster(inventory, SchedulerEndpoint(listen_host, inventory.scheduler.port))


def group(**settings) -> WorkerGroup:
    return WorkerGroup.model_validate({"name": "gpu2", "host": "node1", **settings})


def parse_worker(argv: list[str]) -> click.Context:
    """What `dask worker` would run with, without running it."""
    assert argv[1:3] == ["-m", WORKER_MODULE]
    return dask_worker.main.make_context("dask-worker", argv[3:])


def parse_scheduler(argv: list[str]) -> click.Context:
    assert argv[1:3] == ["-m", SCHEDULER_MODULE]
    return dask_scheduler.main.make_context("dask-scheduler", argv[3:])


def resources_as_dask_reads_them(value: str | None) -> dict[str, float] | None:
    # The exact parsing in distributed.cli.dask_worker.main.
    if not value:
        return None
    return {name: float(amount) for name, amount in (pair.split("=") for pair in value.replace(",", " ").split())}


def assert_all_str(argv: list[str]) -> None:
    assert isinstance(argv, list)
    assert all(type(part) is str for part in argv), argv


# --- the scheduler ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("host", "port", "expected"), [
    ("10.0.0.1", 8786, "tcp://10.0.0.1:8786"),
    ("node1.example.org", 9000, "tcp://node1.example.org:9000"),
    ("::1", 8786, "tcp://[::1]:8786"),
    ("fd00::2", 1, "tcp://[fd00::2]:1"),
])
def test_scheduler_address_brackets_ipv6(host: str, port: int, expected: str) -> None:
    assert scheduler_address(host, port) == expected


def test_scheduler_address_keeps_the_protocol() -> None:
    assert scheduler_address("::1", 8786, protocol="tls") == "tls://[::1]:8786"


def test_scheduler_argv_with_dashboard() -> None:
    argv = scheduler_argv(PYTHON, "10.0.0.1", 8786, ":8787")
    assert argv == [PYTHON, "-m", SCHEDULER_MODULE, "--host", "10.0.0.1", "--port", "8786", "--dashboard-address", ":8787"]
    assert_all_str(argv)


def test_scheduler_argv_without_dashboard() -> None:
    argv = scheduler_argv(PYTHON, "10.0.0.1", 8786, None)
    assert argv == [PYTHON, "-m", SCHEDULER_MODULE, "--host", "10.0.0.1", "--port", "8786", "--no-dashboard"]
    assert "--dashboard-address" not in argv


@pytest.mark.parametrize("dashboard", [":8787", "127.0.0.1:9999", None])
def test_scheduler_argv_means_what_we_intend_to_dask(dashboard: str | None) -> None:
    params = parse_scheduler(scheduler_argv(PYTHON, "10.0.0.1", 8786, dashboard)).params
    assert params["host"] == "10.0.0.1"
    assert params["port"] == "8786"
    assert params["dashboard"] is (dashboard is not None)
    if dashboard is not None:
        assert params["dashboard_address"] == dashboard
    assert params["preload_argv"] == ()  # nothing was left over as an unknown option


# --- workers --------------------------------------------------------------------------------------------


def test_worker_argv_for_a_full_group() -> None:
    argv = worker_argv(PYTHON, SCHEDULER, group(nworkers=2, nthreads=4, memory_limit="8GB",
                                                resources={"GPU": 2, "MEMORY": 256e9}, dashboard=True, nanny=True))
    assert argv == [
        PYTHON, "-m", WORKER_MODULE, SCHEDULER, "--name", "gpu2", "--nworkers", "2", "--nthreads", "4",
        "--memory-limit", "8GB", "--resources", "GPU=2 MEMORY=256000000000", "--dashboard", "--nanny",
    ]
    assert_all_str(argv)


def test_worker_argv_for_a_minimal_group_leaves_dask_defaults_alone() -> None:
    argv = worker_argv(PYTHON, SCHEDULER, group(nanny=False))
    assert argv == [PYTHON, "-m", WORKER_MODULE, SCHEDULER, "--name", "gpu2", "--nworkers", "1", "--nthreads", "1",
                    "--no-dashboard", "--no-nanny"]
    assert "--memory-limit" not in argv and "--resources" not in argv


def test_nprocs_is_never_on_the_command_line() -> None:
    inventory = parse_inventory("name: t\nscheduler: {host: localhost}\n"
                                "workers: [{host: localhost, nprocs: 3}, {host: localhost, nworkers: 2}]\n")
    for plan in _plan(inventory, "127.0.0.1"):
        assert not any(part.startswith("--nprocs") for part in plan.argv), plan.argv
    assert _plan(inventory, "127.0.0.1")[1].argv[7] == "3"  # --nworkers 3


@pytest.mark.parametrize(("resources", "expected"), [
    ({"GPU": 2.0, "MEMORY": 256e9}, "GPU=2 MEMORY=256000000000"),
    ({"GPU": 0.5}, "GPU=0.5"),
    ({"GPU": 0.0}, "GPU=0"),
])
def test_resources_are_formatted_as_dask_parses_them(resources: dict[str, float], expected: str) -> None:
    assert format_resources(resources) == expected
    assert resources_as_dask_reads_them(expected) == resources


@pytest.mark.parametrize(("settings", "names"), [
    ({"nworkers": 1}, ["gpu2"]),
    ({"nworkers": 3, "nthreads": 2, "resources": "GPU=2 MEMORY=256e9", "memory_limit": "2GB"},
     ["gpu2-0", "gpu2-1", "gpu2-2"]),
    ({"nworkers": 1, "nanny": False, "dashboard": True, "resources": {"GPU": 0.5}}, ["gpu2"]),
])
def test_worker_argv_means_what_we_intend_to_dask(settings: dict, names: list[str]) -> None:
    intended = group(**settings)
    params = parse_worker(worker_argv(PYTHON, SCHEDULER, intended)).params

    assert params["scheduler"] == SCHEDULER
    assert int(params["n_workers"]) == intended.nworkers
    assert params["nthreads"] == intended.nthreads
    assert params["memory_limit"] == (intended.memory_limit or "auto")
    assert resources_as_dask_reads_them(params["resources"]) == (intended.resources or None)
    assert params["nanny"] is intended.nanny
    assert params["dashboard"] is intended.dashboard
    assert params["preload_argv"] == ()  # nothing was left over as an unknown option
    # dask's naming rule (dask_worker.main): the process number is appended when nworkers > 1.
    n = int(params["n_workers"])
    assert [params["name"] if n == 1 else f"{params['name']}-{i}" for i in range(n)] == names == intended.worker_names()


# --- the plan -------------------------------------------------------------------------------------------

INVENTORY = """\
name: lab
defaults:
  python: /usr/bin/python3
  env: {OMP_NUM_THREADS: 1}
hosts:
  node1: {python: /opt/conda/bin/python, setup: [source /etc/profile]}
scheduler:
  host: node1
  port: 9786
  dashboard_address: null
  setup: [echo scheduler]
workers:
  - name: gpu2
    host: node1
    nworkers: 2
    resources: {GPU: 2}
    env: {CUDA_VISIBLE_DEVICES: "0,1"}
  - host: 10.0.0.7
    setup: [echo worker]
"""


def test_plan_cluster_puts_the_scheduler_first_then_groups_in_order() -> None:
    plans = _plan(parse_inventory(INVENTORY), "10.0.0.1")

    assert [(p.role, p.name, p.host) for p in plans] == [
        ("scheduler", "scheduler", "node1"), ("worker", "gpu2", "node1"), ("worker", "10.0.0.7-g1", "10.0.0.7")]
    scheduler, gpu2, bare = plans
    assert scheduler.argv == ["/opt/conda/bin/python", "-m", SCHEDULER_MODULE, "--host", "10.0.0.1", "--port", "9786",
                              "--no-dashboard"]
    assert scheduler.worker_names == []
    assert gpu2.worker_names == ["gpu2-0", "gpu2-1"] and bare.worker_names == ["10.0.0.7-g1"]
    for worker in (gpu2, bare):
        assert worker.argv[3] == "tcp://10.0.0.1:9786"
    assert gpu2.argv[0] == "/opt/conda/bin/python" and bare.argv[0] == "/usr/bin/python3"
    assert gpu2.env == {"OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "0,1"}
    # Only the process's own setup lines: the host's run first, in the agent's wrapper.
    assert scheduler.setup == ["echo scheduler"] and gpu2.setup == [] and bare.setup == ["echo worker"]
    for plan in plans:
        assert_all_str(plan.argv)


def test_plan_cluster_on_ipv6_brackets_the_workers_scheduler_address() -> None:
    plans = _plan(parse_inventory(INVENTORY), "fd00::1")
    assert plans[0].argv[3:5] == ["--host", "fd00::1"]
    assert {p.argv[3] for p in plans[1:]} == {"tcp://[fd00::1]:9786"}


def test_process_names_are_unique_because_they_name_log_and_pid_files() -> None:
    text = "name: t\nscheduler: {host: localhost}\nworkers: [{host: localhost, name: scheduler}]\n"
    with pytest.raises(InvalidInputError, match="'scheduler' is the scheduler's own name"):
        parse_inventory(text)
