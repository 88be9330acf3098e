"""The inventory's `elastic:` section and the decisions scaling makes from it (pure, no hosts).

Where a new worker goes (the least-loaded allowed host, chosen by alias or glob), which workers
leave (the newest elastic ones; never a fixed group's), and the bounds (`minimum`, `maximum`).
"""

from __future__ import annotations

import pytest

from clusterctl import elastic
from clusterctl.errors import ClusterctlError, InvalidInputError
from clusterctl.inventory import parse_inventory, select_hosts
from clusterctl.records import ProcessRecord

FLEET = """\
name: fleet
hosts: {head: {}, node01: {}, node02: {}, gpu1: {}, gpu2: {}}
scheduler: {host: head}
workers:
  - {name: fixed, host: node01}
"""


def fleet(section: str = "") -> object:
    return parse_inventory(FLEET + section, "cluster.yaml")


def rejection(section: str) -> str:
    with pytest.raises(InvalidInputError) as caught:
        fleet(section)
    return caught.value.message


def worker(name: str, host: str, names: list[str] | None = None, is_elastic: bool = True) -> ProcessRecord:
    return ProcessRecord("worker", name, host, 1, None, "", names or [name], added=is_elastic, elastic=is_elastic)


def test_the_elastic_section_reads_as_the_issue_writes_it() -> None:
    inventory = fleet("elastic:\n  hosts: [node02, 'gpu*']\n"
                      "  worker: {nworkers: 1, nthreads: 2, memory_limit: 4GB, resources: {GPU: 1}}\n"
                      "  minimum: 0\n  maximum: 16\n")
    spec = inventory.elastic
    assert spec.hosts == ["node02", "gpu*"] and (spec.minimum, spec.maximum) == (0, 16)
    assert (spec.worker.nthreads, spec.worker.memory_limit, spec.worker.resources) == (2, "4GB", {"GPU": 1.0})
    assert select_hosts(inventory, spec.hosts) == ["node02", "gpu1", "gpu2"]


def test_select_hosts_takes_aliases_globs_and_bare_addresses_in_order_without_repeats() -> None:
    inventory = fleet()
    assert select_hosts(inventory, ["gpu2", "node*", "gpu?", "10.0.0.7"]) == [
        "gpu2", "node01", "node02", "gpu1", "10.0.0.7"]
    assert select_hosts(inventory, ["zz*"]) == []


@pytest.mark.parametrize(("section", "expected"), [
    ("elastic:\n  hosts: ['zz*']\n", "cluster.yaml:7: elastic.hosts[0]: 'zz*' matches no host"),
    ("elastic:\n  hosts: []\n", "cluster.yaml:7: elastic.hosts: name at least one host"),
    ("elastic:\n  hosts: [gpu1]\n  worker: {host: gpu1}\n", "cluster.yaml:8: elastic.worker: no `host` here"),
    ("elastic:\n  hosts: [gpu1]\n  minimum: 3\n  maximum: 2\n", "cluster.yaml:9: elastic.maximum: maximum 2 is below minimum 3"),
    ("elastic:\n  hosts: [gpu1]\n  wroker: {}\n", "cluster.yaml:8: elastic.wroker: unknown key 'wroker' (did you mean 'worker'?"),
    ("elastic:\n  hosts: [gpu1]\n  worker: {nthread: 2}\n", "cluster.yaml:8: elastic.worker.nthread: unknown key"),
])
def test_mistakes_in_the_elastic_section_are_one_line_with_file_line_and_key(section: str, expected: str) -> None:
    assert rejection(section).startswith(expected)


def test_a_fixed_group_may_not_take_the_names_elastic_workers_get() -> None:
    message = rejection("  - {name: elastic-1, host: node02}\nelastic: {hosts: [gpu1]}\n")
    assert message.startswith("cluster.yaml:6: workers[1].name: names like elastic-1 are left to elastic workers")


def test_new_workers_go_to_the_least_loaded_allowed_host_with_the_next_free_names() -> None:
    inventory = fleet("elastic: {hosts: [node01, node02, 'gpu*'], worker: {nthreads: 2}}\n")
    present = [worker("fixed", "node01", is_elastic=False), worker("elastic-1", "node02"), worker("elastic-3", "gpu1")]
    groups = elastic.additions(inventory, present, 4)
    # gpu2 is empty; then node01, node02 and gpu1 hold one each, and gpu2 one: the pool's order decides.
    assert [(g.name, g.host, g.nthreads) for g in groups] == [
        ("elastic-2", "gpu2", 2), ("elastic-4", "node01", 2), ("elastic-5", "node02", 2), ("elastic-6", "gpu1", 2)]


def test_a_group_of_several_workers_counts_them_all() -> None:
    inventory = fleet("elastic: {hosts: ['gpu*'], worker: {nworkers: 2}}\n")
    groups = elastic.additions(inventory, [], 3)
    assert [(g.host, g.worker_names()) for g in groups] == [
        ("gpu1", ["elastic-1-0", "elastic-1-1"]), ("gpu2", ["elastic-2-0", "elastic-2-1"])]


def test_removal_takes_the_newest_elastic_workers_and_never_a_fixed_or_added_one() -> None:
    processes = [worker("fixed", "node01", ["fixed-0", "fixed-1"], is_elastic=False), worker("elastic-1", "gpu1"),
                 ProcessRecord("worker", "by-hand", "gpu2", 1, None, "", ["by-hand"], added=True),
                 worker("elastic-2", "gpu2")]
    assert elastic.removals(processes, 1) == {"elastic-2"}
    assert elastic.removals(processes, 5) == {"elastic-1", "elastic-2"}
    assert elastic.fixed_workers(processes) == 3


def test_targets_stay_within_minimum_maximum_and_the_fixed_workers() -> None:
    inventory = fleet("elastic: {hosts: [gpu1], minimum: 2, maximum: 5}\n")
    assert [elastic.bounded(inventory, n, fixed=1) for n in (0, 1, 3, 9)] == [2, 2, 3, 5]
    assert elastic.bounded(inventory, 0, fixed=7) == 7  # fixed workers are never removed


def test_scaling_a_cluster_without_an_elastic_section_names_the_fix() -> None:
    with pytest.raises(ClusterctlError) as caught:
        elastic.additions(fleet(), [], 1)
    assert "has no `elastic:` section" in caught.value.message and "elastic:" in (caught.value.hint or "")
