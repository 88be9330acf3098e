"""The operator's view, through the real CLI and real dask processes: `logs` (last lines, targets,
following), `status` uptime and --watch, `check` (all good, a busy port, a missing python),
`init`, `schema`, `-v` with secrets masked, and shell completion with the console script."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from distributed import Client

from clusterctl import state
from clusterctl.commands.init import STARTER
from clusterctl.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_INVALID, EXIT_OK
from clusterctl.inventory import load_inventory
from clusterctl.remote_log import AGENT_PLACEHOLDER, describe
from clusterctl.state import ClusterState, ProcessRecord
from tests.helpers.cluster import PYTHON, REPO, Running, clusterctl, error_lines, local_inventory, write_inventory

# --- snapshots: volatile values (addresses, times, versions) are replaced by their type -------------

STATUS_SNAPSHOT = {
    "schema": 1,
    "cluster": "t",
    "healthy": True,
    "scheduler": {"address": "<str>", "dashboard": "<str|None>", "dashboard_note": "off", "answers": True, "error": None,
                  "started": "<float>", "uptime_seconds": "<float>"},
    "workers": [
        {"name": name, "host": "me", "group": group, "gpu": None, "address": "<str>", "nthreads": 1,
         "memory_limit": "<int>", "memory": "<int>", "resources": {"GPU": gpus}, "processing": 0, "in_memory": 0,
         "extra": False}
        for name, group, gpus in (("gpu1", "gpu1", 1.0), ("gpu2-0", "gpu2", 2.0), ("gpu2-1", "gpu2", 2.0))
    ],
    "missing": [],
    "extra": [],
    "tasks": {"waiting": 0, "processing": 0, "in_memory": 0, "erred": 0},
    "waiting_on_resources": [],
    "adaptive": None,  # no `clusterctl adapt` supervisor
}
# distributed 2026 reports its HTTP server as "dashboard" even under --no-dashboard: either may come.
STATUS_VOLATILE = {("scheduler", "address"): str, ("scheduler", "dashboard"): (str, type(None)),
                   ("scheduler", "started"): float,
                   ("scheduler", "uptime_seconds"): float, ("workers", "*", "address"): str,
                   ("workers", "*", "memory_limit"): int, ("workers", "*", "memory"): int}

CHECK_NAMES = ("reachable", "python", "versions", "port_free", "reaches_scheduler")
PASSED = {"status": "ok", "reason": None, "hint": None}
# The fingerprint: python, then what `Client.get_versions(check=True)` compares (lz4, pandas may be missing).
VERSIONS = {"python": "<str>", "dask": "<str>", "distributed": "<str>", "msgpack": "<str>", "cloudpickle": "<str>",
            "toolz": "<str>", "tornado": "<str>", "lz4": "<str|None>", "numpy": "<str|None>", "pandas": "<str|None>"}
CHECK_SNAPSHOT = {
    "schema": 1,
    "cluster": "t",
    "config": "<str>",
    "ok": True,
    "scheduler": {"host": "me", "address": "<str>"},
    "hosts": [{"host": "me", "roles": ["scheduler", "worker"], "address": "127.0.0.1", "ok": True,
               "versions": VERSIONS, "gpus": None, "checks": dict.fromkeys(CHECK_NAMES, PASSED)}],
    "warnings": [],
}
CHECK_VOLATILE = {("config",): str, ("scheduler", "address"): str,
                  **{("hosts", "*", "versions", p): str for p in ("python", "dask", "distributed", "msgpack",
                                                                  "cloudpickle", "toolz", "tornado")},
                  **{("hosts", "*", "versions", p): (str, type(None)) for p in ("lz4", "numpy", "pandas")}}

MISSING_PYTHON_SNAPSHOT = {
    "host": "bad",
    "roles": ["worker"],
    "address": "127.0.0.1",
    "ok": False,
    "versions": {},
    "gpus": None,
    "checks": {
        "reachable": PASSED,
        "python": {"status": "failed", "reason": "command not found: /nonexistent/python3",
                   "hint": "install it or set `python:` in the inventory to an interpreter that exists"},
        "versions": {"status": "skipped", "reason": "python did not run", "hint": None},
        "reaches_scheduler": {"status": "skipped", "reason": "python did not run", "hint": None},
    },
}

UNKNOWN_TARGET_SNAPSHOT = (
    "error: unknown logs target 'gpu9' in cluster 't'; valid targets: scheduler, gpu2, gpu1, gpu2-0, gpu2-1, me\n"
    "hint: name a process, a worker or a host alias as `clusterctl status --processes` shows them, "
    "or give none for every log\n"
)
INIT_REFUSES_SNAPSHOT = (
    "error: <tmp>/cluster.yaml already exists; not overwriting it\n"
    "hint: pass --force to replace it, or give another PATH\n"
)


def normalise(document: Any, volatile: dict[tuple[str, ...], Any], path: tuple[Any, ...] = ()) -> Any:
    """``document`` with the values at ``volatile`` paths (``*`` matches any key or index) replaced
    by ``<type>``, after checking that they have that type."""
    for pattern, kind in volatile.items():
        if len(pattern) == len(path) and all(p in ("*", q) for p, q in zip(pattern, path, strict=True)):
            kinds = kind if isinstance(kind, tuple) else (kind,)
            assert isinstance(document, kinds) and not isinstance(document, bool), (path, document)
            return "<" + "|".join("None" if k is type(None) else k.__name__ for k in kinds) + ">"
    if isinstance(document, dict):
        return {key: normalise(value, volatile, (*path, key)) for key, value in document.items()}
    if isinstance(document, list):
        return [normalise(value, volatile, (*path, index)) for index, value in enumerate(document)]
    return document


def shout(marker: str) -> str:
    """A task that writes a line to its worker's log."""
    print(marker, flush=True)
    return marker


# --- a running cluster: logs, status, -v ------------------------------------------------------------


def test_logs_status_and_verbose_on_a_running_cluster(tmp_path: Path, clusterctl_home: Path) -> None:
    inventory = local_inventory()
    inventory["defaults"]["env"]["DB_PASSWORD"] = "hunter2"
    config = write_inventory(tmp_path / "cluster.yaml", inventory)

    started = clusterctl("-v", "up", str(config))
    assert started.exit_code == EXIT_OK, started.stderr
    try:
        # -v: every agent call logged, the agent abbreviated, the secret masked.
        assert f"me: {PYTHON} -c {AGENT_PLACEHOLDER} " in started.stderr
        assert '"DB_PASSWORD": "***"' in started.stderr
        assert "hunter2" not in started.stderr and "The host side of clusterctl" not in started.stderr

        document = _status_shows_uptime_and_matches_its_snapshot()
        _logs_show_the_last_lines_of_each_target()
        _logs_follow_a_line_written_after_it_started(document)
        _status_watch_reprints_until_ctrl_c()
        _an_unreadable_log_is_a_warning_and_exit_1(clusterctl_home)
        _down_ends_a_follow_after_its_last_lines()
    finally:
        assert clusterctl("down").exit_code == EXIT_OK  # harmless when the cluster is down already


def _status_shows_uptime_and_matches_its_snapshot() -> dict[str, Any]:
    document = clusterctl("status", "--json").json()
    assert normalise(document, STATUS_VOLATILE) == STATUS_SNAPSHOT
    assert 0 <= document["scheduler"]["uptime_seconds"] < 120
    assert abs(time.time() - document["scheduler"]["uptime_seconds"] - document["scheduler"]["started"]) < 60
    human = clusterctl("status")
    assert re.search(r"^scheduler  tcp://\S+  answers, up \d+s$", human.stdout, re.MULTILINE), human.stdout
    return document


def _logs_show_the_last_lines_of_each_target() -> None:
    worker = clusterctl("logs", "gpu1")  # default: the last 50 lines, no prefix for one process
    assert worker.exit_code == EXIT_OK, worker.stderr
    assert re.search(r"distributed\.worker - INFO - +Registered to: +tcp://", worker.stdout)
    assert not worker.stdout.startswith("[")

    three = clusterctl("logs", "gpu1", "-n", "3")
    assert len(three.stdout.splitlines()) == 3
    assert three.stdout.splitlines() == worker.stdout.splitlines()[-3:]

    by_worker, by_process = clusterctl("logs", "gpu2-1", "-n", "5"), clusterctl("logs", "gpu2", "-n", "5")
    assert by_worker.exit_code == EXIT_OK and by_worker.stdout == by_process.stdout
    assert len(by_worker.stdout.splitlines()) == 5

    for args in (["me"], []):  # a host alias, and no target: every process, scheduler first, prefixed
        every = clusterctl("logs", *args, "-n", "2")
        assert every.exit_code == EXIT_OK, every.stderr
        prefixes = [line.split("]")[0] + "]" for line in every.stdout.splitlines()]
        assert prefixes == ["[scheduler]"] * 2 + ["[gpu2]"] * 2 + ["[gpu1]"] * 2
        assert every.stdout.splitlines()[2].startswith("[gpu2]      ")  # aligned after the longest name

    unknown = clusterctl("logs", "gpu9")
    assert unknown.exit_code == EXIT_INVALID
    assert unknown.stderr == UNKNOWN_TARGET_SNAPSHOT


def _logs_follow_a_line_written_after_it_started(document: dict[str, Any]) -> None:
    address = next(w["address"] for w in document["workers"] if w["name"] == "gpu1")
    marker = f"written-after-follow-started-{uuid.uuid4().hex}"
    follow = Running("logs", "-f", "gpu1", "-n", "0")
    try:
        assert follow.wait_for(follow.stderr, lambda lines: any("following 1 log(s)" in x for x in lines)), follow.stderr
        time.sleep(0.3)  # the first read (which set the starting offset) follows that line at once
        with Client(document["scheduler"]["address"], timeout=30) as client:
            assert client.submit(shout, marker, workers=[address], pure=False).result(timeout=30) == marker
        assert follow.wait_for(follow.stdout, lambda lines: marker in lines, timeout=15), follow.stdout
        assert follow.stdout == [marker]  # -n 0: only what was written after it started; one process: no prefix
    finally:
        code = follow.interrupt()
    assert code == EXIT_INTERRUPTED, follow.stderr


def _status_watch_reprints_until_ctrl_c() -> None:
    watch = Running("status", "--watch", "0.5")
    try:
        assert watch.wait_for(watch.stdout, lambda lines: sum(x.startswith("--- ") for x in lines) >= 2), watch.stderr
        assert sum(x.startswith("scheduler  ") and ", up " in x for x in watch.stdout) >= 2
    finally:
        code = watch.interrupt()
    assert code == EXIT_INTERRUPTED


def _an_unreadable_log_is_a_warning_and_exit_1(home: Path) -> None:
    log = Path(next(p["log"] for p in json.loads((home / "clusters" / "t" / "state.json").read_text())["processes"]
                    if p["name"] == "gpu1"))
    log.rename(log.with_suffix(".moved"))
    try:
        result = clusterctl("logs", "-n", "1")
    finally:
        log.with_suffix(".moved").rename(log)
    assert result.exit_code == EXIT_FAILED
    assert result.stderr == f"warning: me: cannot read {log}: No such file or directory\n"
    assert [line.split("]")[0] for line in result.stdout.splitlines()] == ["[scheduler", "[gpu2"]  # the others shown


def _down_ends_a_follow_after_its_last_lines() -> None:
    follow = Running("logs", "-f", "scheduler", "-n", "0")
    try:
        assert follow.wait_for(follow.stderr, lambda lines: any("following 1 log(s)" in x for x in lines))
        assert clusterctl("down").exit_code == EXIT_OK
        assert follow.wait_for(follow.stderr, lambda lines: any("was taken down" in x for x in lines), timeout=20)
        assert follow.process.wait(timeout=10) == EXIT_OK
    finally:
        follow.interrupt()
    # What the scheduler logged while going down may or may not be read before the state is gone:
    # timing, so not asserted.
    assert follow.stderr[-1] == "note: cluster 't' was taken down: stopped following"
    assert not any(line.startswith("warning:") for line in follow.stderr)  # no complaint about the removed logs


# --- check ----------------------------------------------------------------------------------------


@pytest.fixture
def inventory() -> dict[str, Any]:
    return local_inventory()


def _listening(port: int, reuse_address: bool = False) -> socket.socket:
    sock = socket.socket()
    if reuse_address:  # as dask's scheduler does: connections in TIME_WAIT do not make the port busy
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


def test_check_passes_on_a_local_cluster_and_leaves_nothing_behind(tmp_path: Path, inventory: dict) -> None:
    config = write_inventory(tmp_path / "cluster.yaml", inventory)
    result = clusterctl("check", str(config), "--json")
    assert result.exit_code == EXIT_OK, result.stderr
    document = result.json()
    assert normalise(document, CHECK_VOLATILE) == CHECK_SNAPSHOT
    assert document["scheduler"]["address"] == f"tcp://127.0.0.1:{inventory['scheduler']['port']}"
    assert document["hosts"][0]["versions"]["python"] == ".".join(map(str, sys.version_info[:3]))
    # The test listener is gone: the scheduler could listen on the port at once.
    _listening(inventory["scheduler"]["port"], reuse_address=True).close()
    assert not list((tmp_path / "clusterctl-home").glob("clusters/*/run"))  # check created nothing there

    human = clusterctl("check", str(config))
    assert human.exit_code == EXIT_OK
    assert re.search(r"^me +scheduler,worker +✓ +✓ +✓ +✓ +✓ *$", human.stdout, re.MULTILINE), human.stdout
    assert human.stdout.splitlines()[-1] == "✓ all 1 host(s) passed every check"


def test_check_reports_a_scheduler_port_in_use(tmp_path: Path, inventory: dict) -> None:
    config = write_inventory(tmp_path / "cluster.yaml", inventory)
    port = inventory["scheduler"]["port"]
    with _listening(port):
        result = clusterctl("check", str(config))
    assert result.exit_code == EXIT_FAILED
    # port free ✗, and so nothing to reach from the worker host: skipped.
    assert re.search(r"^me +scheduler,worker +✓ +✓ +✓ +✗ +- *$", result.stdout, re.MULTILINE), result.stdout
    assert f"✗ me: port free: port {port} is in use on me" in result.stdout.splitlines()
    assert "  hint: is the cluster already running (`clusterctl status`)? else stop what holds the port, or choose " \
           "another `scheduler.port`" in result.stdout.splitlines()
    assert result.stdout.splitlines()[-1] == "✗ 1 check(s) failed on 1 of 1 host(s)"


def test_check_names_a_host_whose_python_is_missing(tmp_path: Path, inventory: dict) -> None:
    inventory["hosts"]["bad"] = {"connection": "local", "python": "/nonexistent/python3"}
    inventory["workers"].append({"name": "far", "host": "bad"})
    config = write_inventory(tmp_path / "cluster.yaml", inventory)
    result = clusterctl("check", str(config), "--json")
    assert result.exit_code == EXIT_FAILED
    hosts = {h["host"]: h for h in result.json()["hosts"]}
    assert hosts["bad"] == MISSING_PYTHON_SNAPSHOT
    assert hosts["me"]["ok"] is True  # one host's failure does not hide the others' results

    human = clusterctl("check", str(config))
    assert "✗ bad: python: command not found: /nonexistent/python3" in human.stdout.splitlines()
    assert re.search(r"^bad +worker +✓ +✗ +- +- *$", human.stdout, re.MULTILINE), human.stdout


def test_check_rejects_an_invalid_inventory_with_exit_2(tmp_path: Path, inventory: dict) -> None:
    inventory["workers"][0]["nthreads"] = 0
    result = clusterctl("check", str(write_inventory(tmp_path / "cluster.yaml", inventory)))
    assert result.exit_code == EXIT_INVALID
    errors = error_lines(result.stderr)
    assert len(errors) == 1
    assert re.fullmatch(rf"error: {re.escape(str(tmp_path))}/cluster\.yaml:\d+: workers\[0\]\.nthreads: "
                        r"Input should be greater than or equal to 1 \(got 0\)", errors[0]), errors


# --- init and schema --------------------------------------------------------------------------------


def test_init_writes_a_starter_that_loads_and_never_overwrites_unasked(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    written = clusterctl("init", str(path))
    assert written.exit_code == EXIT_OK, written.stderr
    inventory = load_inventory(path)
    assert inventory.scheduler.host == "me" and [n for g in inventory.workers for n in g.worker_names()] == ["cpu-0", "cpu-1"]
    assert path.read_text() == STARTER and "#" in STARTER

    path.write_text("name: mine\n")
    refused = clusterctl("init", str(path))
    assert refused.exit_code == EXIT_INVALID
    assert refused.stderr.replace(str(tmp_path), "<tmp>") == INIT_REFUSES_SNAPSHOT
    assert path.read_text() == "name: mine\n"

    assert clusterctl("init", str(path), "--force").exit_code == EXIT_OK
    assert path.read_text() == STARTER
    assert clusterctl("init", "-").stdout == STARTER


def test_schema_describes_the_inventory_for_editors() -> None:
    result = clusterctl("schema")
    assert result.exit_code == EXIT_OK
    schema = result.json()
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert schema["title"] == "clusterctl inventory (cluster.yaml)"
    assert set(schema["required"]) == {"name", "scheduler"}
    assert schema["additionalProperties"] is False
    _uses_only_draft_07(schema)
    worker = schema["$defs"]["WorkerGroup"]["properties"]
    assert {"type": "string"} in worker["resources"]["anyOf"]  # resources: "GPU=1"
    assert "nprocs" in worker
    # Every key of the starter, of the repository's example and of the test inventory is one the schema knows.
    for text in (STARTER, (REPO / "configs" / "local.yaml").read_text(), yaml.safe_dump(local_inventory()),
                 (REPO / "examples" / "fleet.yaml").read_text()):
        _keys_are_known(yaml.safe_load(text), schema, schema)


DRAFT_07_KEYWORDS = {"$schema", "$ref", "$defs", "title", "description", "type", "properties", "required",
                     "additionalProperties", "items", "anyOf", "enum", "const", "default", "minimum", "maximum",
                     "pattern"}


def _uses_only_draft_07(node: Any, under_properties: bool = False) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if not under_properties:
                assert key in DRAFT_07_KEYWORDS, key
            _uses_only_draft_07(value, under_properties=key in ("properties", "$defs") and not under_properties)
    elif isinstance(node, list):
        for item in node:
            _uses_only_draft_07(item)


def _resolve(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = root["$defs"][node["$ref"].rsplit("/", 1)[1]]
    return node


def _keys_are_known(value: Any, node: dict[str, Any], root: dict[str, Any]) -> None:
    node = _resolve(node, root)
    if isinstance(value, dict) and "properties" in node:
        for key, item in value.items():
            assert key in node["properties"], key
            _keys_are_known(item, node["properties"][key], root)
    elif isinstance(value, dict) and isinstance(node.get("additionalProperties"), dict):
        for item in value.values():
            _keys_are_known(item, node["additionalProperties"], root)
    elif isinstance(value, list) and "items" in node:
        for item in value:
            _keys_are_known(item, node["items"], root)


# --- -v and shell completion --------------------------------------------------------------------------


def test_verbose_lines_abbreviate_the_agent_and_mask_secrets() -> None:
    request = {"op": "start", "processes": [{"name": "gpu1", "env": {"API_TOKEN": "t0k", "OMP_NUM_THREADS": "1"},
                                             "setup": ["export AWS_SECRET_ACCESS_KEY='s3cret'; conda activate x"]}]}
    line = describe(["/bin/sh", "-c", "export DB_PASSWORD=pw\nexec \"$@\"", "clusterctl-agent",
                     "python3", "-c", AGENT_PLACEHOLDER, json.dumps(request)])
    assert f"-c {AGENT_PLACEHOLDER} " in line
    assert "DB_PASSWORD=***" in line and "pw\n" not in line
    assert '"API_TOKEN": "***"' in line and '"OMP_NUM_THREADS": "1"' in line
    assert "AWS_SECRET_ACCESS_KEY=***; conda activate x" in line
    assert not any(secret in line for secret in ("t0k", "s3cret"))


def test_shell_completion_through_the_console_script(clusterctl_home: Path) -> None:
    script = Path(PYTHON).parent / "clusterctl"
    assert script.exists(), "the console script is installed next to the test python"

    def complete(words: str, shell: str = "bash") -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "_CLUSTERCTL_COMPLETE": f"{shell}_complete", "COMP_WORDS": words,
               "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1))}
        return subprocess.run([str(script)], env=env, capture_output=True, text=True, timeout=60)

    source = subprocess.run([str(script)], env={**os.environ, "_CLUSTERCTL_COMPLETE": "bash_source"},
                            capture_output=True, text=True, timeout=60)
    assert source.returncode == 0
    assert "complete -o nosort -F _clusterctl_completion clusterctl" in source.stdout
    assert complete("clusterctl lo").stdout.split() == ["plain,logs"]
    assert complete("clusterctl status --wa").stdout.split() == ["plain,--watch"]

    # `logs TARGET` completes from the current cluster's recorded processes.
    state.save(ClusterState(name="t", inventory=local_inventory(), config_path=None,
                            scheduler_address="tcp://127.0.0.1:1", dashboard_url=None, processes=[
                                ProcessRecord("scheduler", "scheduler", "me", 4194999, 1, "/nonexistent/s.log"),
                                ProcessRecord("worker", "gpu2", "me", 4194998, 1, "/nonexistent/g.log",
                                              worker_names=["gpu2-0", "gpu2-1"])]))
    state.set_current("t")
    assert complete("clusterctl logs gpu").stdout.split() == ["plain,gpu2", "plain,gpu2-0", "plain,gpu2-1"]
