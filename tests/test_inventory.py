"""The inventory file: what parses, what it means, and how every mistake is reported.

Every rejection is one line, ``file:LINE: key.path: message``; the tests assert the exact prefix,
so a message that points at the wrong line or key fails here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from clusterctl.errors import EXIT_INVALID, InvalidInputError
from clusterctl.inventory import load_inventory, parse_inventory
from tests.helpers.cluster import REPO, clusterctl, error_lines, local_inventory, write_inventory

SOURCE = "cluster.yaml"

# Line numbers below refer to this layout: 1 name, 2 hosts, 3 me, 4 scheduler, 5 host, 6 workers, 7 "- host".
BASE = """\
name: t
hosts:
  me: {connection: local}
scheduler:
  host: me
workers:
  - host: me
"""


def parse(text: str):
    return parse_inventory(text, SOURCE)


def rejection(text: str) -> str:
    with pytest.raises(InvalidInputError) as caught:
        parse(text)
    return caught.value.message


# --- what parses ----------------------------------------------------------------------------------


def test_the_shipped_local_config_describes_two_gpu2_workers_and_one_gpu1_worker() -> None:
    inventory = load_inventory(REPO / "configs" / "local.yaml")

    assert inventory.name == "local"
    assert [n for g in inventory.workers for n in g.worker_names()] == ["gpu2-0", "gpu2-1", "gpu1"]
    gpu2, gpu1 = inventory.workers
    assert (gpu2.name, gpu2.nworkers, gpu2.nthreads, gpu2.resources) == ("gpu2", 2, 1, {"GPU": 2.0})
    assert (gpu1.name, gpu1.nworkers, gpu1.nthreads, gpu1.resources) == ("gpu1", 1, 1, {"GPU": 1.0})
    assert gpu1.memory_limit == "2GB" and gpu2.memory_limit is None
    assert inventory.scheduler.port == 8786 and inventory.scheduler.dashboard_address == ":8787"
    assert inventory.host("me").connection == "local"
    assert inventory.process_settings("me", gpu2).env == {"OMP_NUM_THREADS": "1"}


def test_nprocs_is_accepted_as_an_alias_of_nworkers() -> None:
    inventory = parse(BASE + "    name: w\n    nprocs: 3\n")
    assert inventory.workers[0].nworkers == 3
    assert [n for g in inventory.workers for n in g.worker_names()] == ["w-0", "w-1", "w-2"]


@pytest.mark.parametrize("resources", [
    "{GPU: 2, MEMORY: 256e9}",
    "{GPU: 2, MEMORY: 256000000000}",
    '"GPU=2 MEMORY=256e9"',
    '"GPU=2,MEMORY=256e9"',
    '"GPU=2, MEMORY=256e9"',
    '"  GPU=2   MEMORY=256000000000 "',
])
def test_resources_as_mapping_or_dask_string_mean_the_same(resources: str) -> None:
    inventory = parse(BASE + f"    resources: {resources}\n")
    assert inventory.workers[0].resources == {"GPU": 2.0, "MEMORY": 256e9}


def test_env_numbers_become_strings() -> None:
    inventory = parse(BASE + "    env: {OMP_NUM_THREADS: 1, RATIO: 0.5, NAME: text}\n")
    assert inventory.workers[0].env == {"OMP_NUM_THREADS": "1", "RATIO": "0.5", "NAME": "text"}


def test_defaults_host_and_group_settings_merge_innermost_wins() -> None:
    inventory = parse("""\
name: t
defaults:
  python: /usr/bin/python3
  user: alice
  env: {A: from-defaults, B: from-defaults}
  setup: [echo defaults]
hosts:
  node1:
    python: /opt/conda/bin/python
    env: {B: from-host, C: from-host}
    setup: [echo host]
  node2: {}
scheduler:
  host: node2
workers:
  - host: node1
    env: {C: from-group, D: from-group}
    setup: [echo group]
  - host: node1
    python: /srv/venv/bin/python
""")
    node1 = inventory.host("node1")
    assert node1.python == "/opt/conda/bin/python"  # the host overrides defaults
    assert node1.user == "alice"  # what the host does not set comes from defaults
    assert node1.connection == "ssh"  # the default transport
    assert node1.env == {"A": "from-defaults", "B": "from-host", "C": "from-host"}
    assert node1.setup == ["echo defaults", "echo host"]

    first = inventory.process_settings("node1", inventory.workers[0])
    assert first.python == "/opt/conda/bin/python"
    assert first.env == {"A": "from-defaults", "B": "from-host", "C": "from-group", "D": "from-group"}
    assert first.setup == ["echo defaults", "echo host", "echo group"]
    assert inventory.process_settings("node1", inventory.workers[1]).python == "/srv/venv/bin/python"

    node2 = inventory.host("node2")
    assert node2.python == "/usr/bin/python3" and node2.setup == ["echo defaults"]
    assert node2.env == {"A": "from-defaults", "B": "from-defaults"}


def test_localhost_needs_no_hosts_entry_and_is_local_and_runs_clusterctls_own_python() -> None:
    import sys

    inventory = parse("name: t\nscheduler: {host: localhost}\nworkers: [{host: localhost}, {host: node9}]\n")
    assert inventory.host("localhost").connection == "local"
    assert inventory.process_settings("localhost", inventory.workers[0]).python == sys.executable
    assert inventory.process_settings("node9", inventory.workers[1]).python == "python3", "an ssh host: python3"


def test_groups_without_a_name_are_named_after_host_and_index() -> None:
    inventory = parse(BASE + "    nworkers: 2\n  - host: me\n    name: named\n  - host: 10.0.0.5\n")
    assert [group.name for group in inventory.workers] == ["me-g0", "named", "10.0.0.5-g2"]
    assert [n for g in inventory.workers for n in g.worker_names()] == ["me-g0-0", "me-g0-1", "named", "10.0.0.5-g2"]


# --- what is rejected, and where it is reported ------------------------------------------------------

SCHEDULER_AT = "  host: me\nworkers"  # to insert scheduler keys after line 5

REJECTIONS = [
    pytest.param("name: t\nscheduler:\n  host: me\n   port: 1\n", f"{SOURCE}:4: a `key: value` where none can be:",
                 "indented further than the key above it", id="malformed-yaml"),
    pytest.param("name: t\nscheduler: [me\n", f"{SOURCE}:3: malformed YAML:", "expected", id="unclosed-flow"),
    pytest.param(BASE + "wrokers: []\n", f"{SOURCE}:8: wrokers:", "unknown key 'wrokers' (did you mean 'workers'?)",
                 id="unknown-top-level-key"),
    pytest.param(BASE.replace("{connection: local}", "{conection: local}"), f"{SOURCE}:3: hosts.me.conection:",
                 "did you mean 'connection'?", id="unknown-key-in-host"),
    pytest.param(BASE.replace("  me: {connection: local}", "  me:\n    connection: local\n    adress: 10.0.0.1"),
                 f"{SOURCE}:5: hosts.me.adress:", "did you mean 'address'?", id="unknown-key-in-host-block"),
    pytest.param(BASE + "    nthread: 2\n", f"{SOURCE}:8: workers[0].nthread:", "did you mean 'nthreads'?",
                 id="unknown-key-in-worker"),
    pytest.param(BASE.replace(SCHEDULER_AT, "  host: me\n  prot: 1\nworkers"), f"{SOURCE}:6: scheduler.prot:",
                 "did you mean 'port'?", id="unknown-key-in-scheduler"),
    pytest.param("name: t\ndefaults: {pyhton: python3}\nscheduler: {host: localhost}\n", f"{SOURCE}:2: defaults.pyhton:",
                 "did you mean 'python'?", id="unknown-key-in-defaults"),
    pytest.param(BASE + "    nthreads: many\n", f"{SOURCE}:8: workers[0].nthreads:", "integer", id="wrong-type"),
    pytest.param(BASE + "    nthreads: 0\n", f"{SOURCE}:8: workers[0].nthreads:", "greater than or equal to 1",
                 id="nthreads-0"),
    pytest.param(BASE + "    nworkers: 0\n", f"{SOURCE}:8: workers[0].nworkers:", "greater than or equal to 1",
                 id="nworkers-0"),
    pytest.param(BASE + "    nprocs: 0\n", f"{SOURCE}:8: workers[0].nprocs:", "greater than or equal to 1",
                 id="nprocs-0-reported-on-its-line"),
    pytest.param(BASE + "    resources: {GPU: -1}\n", f"{SOURCE}:8: workers[0].resources:", ">= 0",
                 id="negative-resource"),
    pytest.param(BASE + "    resources: {GPU: two}\n", f"{SOURCE}:8: workers[0].resources:", "'two' is not a number",
                 id="non-numeric-resource"),
    pytest.param(BASE + '    resources: "GPU"\n', f"{SOURCE}:8: workers[0].resources:", "NAME=AMOUNT",
                 id="resource-string-without-amount"),
    pytest.param(BASE + "    resources: {1GPU: 1}\n", f"{SOURCE}:8: workers[0].resources:", "not an identifier",
                 id="resource-name-not-identifier"),
    pytest.param(BASE + '    resources: "GPU-X=1"\n', f"{SOURCE}:8: workers[0].resources:", "not an identifier",
                 id="resource-name-with-dash"),
    pytest.param(BASE + "    resources: {GPU: true}\n", f"{SOURCE}:8: workers[0].resources:", "must be a number",
                 id="bool-resource"),
    pytest.param(BASE + "  - host: me\n    name: me-g0\n", f"{SOURCE}:9: workers[1].name:",
                 "'me-g0' is already used by workers[0]", id="duplicate-worker-name"),
    pytest.param(BASE + "    name: a\n    nworkers: 2\n  - host: me\n    name: a-0\n", f"{SOURCE}:11: workers[1].name:",
                 "'a-0' is already used by workers[0]", id="duplicate-made-by-nworkers-suffix"),
    pytest.param(BASE.replace("  - host: me", "  - host: bad host"), f"{SOURCE}:7: workers[0].host:",
                 "'bad host' is neither an alias", id="worker-host-with-space"),
    pytest.param(BASE.replace("  - host: me", "  - host: '$(touch x)'"), f"{SOURCE}:7: workers[0].host:",
                 "'$(touch x)' is neither an alias", id="worker-host-command-substitution"),
    pytest.param(BASE.replace("  - host: me", "  - host: -oProxyCommand=x"), f"{SOURCE}:7: workers[0].host:",
                 "neither an alias", id="worker-host-ssh-option"),
    pytest.param(BASE.replace("scheduler:\n  host: me", "scheduler:\n  host: bad host"), f"{SOURCE}:5: scheduler.host:",
                 "'bad host' is neither an alias from `hosts` (known: me)", id="scheduler-host-with-space"),
    pytest.param(BASE.replace("name: t", "name: -bad/"), f"{SOURCE}:1: name:", "cluster name '-bad/' is not valid",
                 id="invalid-cluster-name"),
    pytest.param(BASE.replace("name: t", "name: a b"), f"{SOURCE}:1: name:", "is not valid", id="cluster-name-space"),
    pytest.param(BASE + "    name: ../x\n", f"{SOURCE}:8: workers[0].name:", "worker group name '../x' is not valid",
                 id="invalid-group-name"),
    pytest.param(BASE + "    memory_limit: lots\n", f"{SOURCE}:8: workers[0].memory_limit:", "'lots' is not a size",
                 id="bad-memory-limit"),
    pytest.param(BASE + "    memory_limit: -1\n", f"{SOURCE}:8: workers[0].memory_limit:", "must be a finite number >= 0",
                 id="negative-memory-limit"),
    pytest.param(BASE.replace(SCHEDULER_AT, "  host: me\n  dashboard_address: 'x:y'\nworkers"),
                 f"{SOURCE}:6: scheduler.dashboard_address:", "must look like ':8787'", id="bad-dashboard-address"),
    pytest.param(BASE.replace(SCHEDULER_AT, "  host: me\n  dashboard_address: ':99999'\nworkers"),
                 f"{SOURCE}:6: scheduler.dashboard_address:", "must look like ':8787'", id="dashboard-port-out-of-range"),
    pytest.param(BASE.replace(SCHEDULER_AT, "  host: me\n  port: 70000\nworkers"), f"{SOURCE}:6: scheduler.port:",
                 "less than or equal to 65535", id="scheduler-port-out-of-range"),
    pytest.param(BASE.replace("{connection: local}", "{connection: ssh, port: 0}"), f"{SOURCE}:3: hosts.me.port:",
                 "greater than or equal to 1", id="ssh-port-out-of-range"),
    pytest.param(BASE + "    env: {1BAD: x}\n", f"{SOURCE}:8: workers[0].env:", "environment variable name '1BAD'",
                 id="env-name-starts-with-digit"),
    pytest.param(BASE + "    env: {'A-B': x}\n", f"{SOURCE}:8: workers[0].env:", "environment variable name 'A-B'",
                 id="env-name-with-dash"),
    pytest.param(BASE.replace("{connection: local}", "{connection: ssh, address: 'a;b'}"),
                 f"{SOURCE}:3: hosts.me.address:", "address 'a;b' is not a hostname", id="address-semicolon"),
    pytest.param(BASE.replace("{connection: local}", "{connection: ssh, address: 'node1 && rm'}"),
                 f"{SOURCE}:3: hosts.me.address:", "is not a hostname", id="address-and-and"),
    pytest.param(BASE.replace("{connection: local}", "{connection: ssh, address: '`id`'}"),
                 f"{SOURCE}:3: hosts.me.address:", "is not a hostname", id="address-backticks"),
    pytest.param(BASE.replace("{connection: local}", "{connection: telnet}"), f"{SOURCE}:3: hosts.me.connection:",
                 "'ssh' or 'local'", id="unknown-connection"),
    pytest.param(BASE.replace("scheduler:\n  host: me\n", ""), f"{SOURCE}:1: scheduler:", "required",
                 id="missing-scheduler"),
]


@pytest.mark.parametrize(("text", "prefix", "fragment"), REJECTIONS)
def test_rejections_name_file_line_and_key(text: str, prefix: str, fragment: str) -> None:
    message = rejection(text)
    assert message.startswith(prefix + " "), message
    assert fragment in message, message
    assert "\n" not in message


def test_a_document_that_is_not_a_mapping_is_rejected() -> None:
    assert rejection("- just\n- a list\n").startswith(f"{SOURCE}: the inventory must be a YAML mapping")


def test_a_missing_file_is_invalid_input_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(InvalidInputError) as caught:
        load_inventory(missing)
    assert caught.value.message == f"{missing}: no such file"


@pytest.mark.parametrize("key", ["nworkers", "nthreads"])
def test_a_boolean_count_is_rejected(key: str) -> None:
    assert rejection(BASE + f"    {key}: true\n").startswith(f"{SOURCE}:8: workers[0].{key}: ")


def test_no_nanny_with_several_workers_is_rejected_before_anything_starts() -> None:
    message = rejection(BASE + "    nworkers: 2\n    nanny: false\n")
    assert message.startswith(f"{SOURCE}:9: workers[0].nanny: ") or message.startswith(f"{SOURCE}:8: workers[0].")


# --- through the real command line ---------------------------------------------------------------


@pytest.mark.parametrize("breakage", [
    pytest.param({"nthreads": 0}, id="nthreads-0"),
    pytest.param({"host": "$(touch canary)"}, id="host-command-substitution"),
])
def test_up_with_a_bad_inventory_exits_2_with_one_line_and_starts_nothing(
        tmp_path: Path, clusterctl_home: Path, breakage: dict) -> None:
    inventory = local_inventory(name="broken")
    inventory["workers"][1].update(breakage)
    path = write_inventory(tmp_path / "cluster.yaml", inventory)

    result = clusterctl("up", str(path), timeout=60)

    assert result.exit_code == EXIT_INVALID, result.stderr
    errors = error_lines(result.stderr)
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith(f"error: {path}:") and "workers[1]." in errors[0]
    assert "Traceback" not in result.stderr
    assert not (clusterctl_home / "clusters" / "broken").exists()
    assert not (tmp_path / "canary").exists() and not (Path.cwd() / "canary").exists()


def test_up_with_a_missing_file_exits_2(tmp_path: Path, clusterctl_home: Path) -> None:
    missing = tmp_path / "absent.yaml"
    result = clusterctl("up", str(missing), timeout=60)
    assert result.exit_code == EXIT_INVALID
    errors = error_lines(result.stderr)
    assert errors == [f"error: {missing}: no such file"], result.stderr
    assert not (clusterctl_home / "clusters").exists()
