"""Hostile values in every string field of the inventory and in every option (issue 6).

Each value either is refused before anything runs (exit 2, one `error:` line, no state, no run
directory), or -- where the literal value is legitimate (an environment value, an interpreter or a
directory whose name happens to hold shell syntax) -- reaches the host byte for byte and executes
nothing. A canary file, which any executed `touch` would create, must never appear.

Refusals run in-process through the CLI's own entry point (`clusterctl.cli.run`): no process, no
connection. The accepted values are then proven on a real sshd, with a handful of real `up`s; one of
them also proves `security: {tls: {ca_file, cert, key}}` with the user's own files (issue 6, TLS).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from distributed import Client
from distributed.security import Security

from clusterctl import state, tls
from clusterctl.cli import run
from clusterctl.state import ClusterState
from testbed.client_env import SshEnv
from testbed.sshd import free_port
from tests.helpers.cluster import PYTHON, REPO, clusterctl, error_lines, is_running, write_inventory
from tests.helpers.fixtures import SshdTestBed

CANARY = "CANARY"  # in the corpus: replaced by the test's absolute canary path

HOSTILE: dict[str, Any] = {
    "semicolon": "x; touch CANARY",
    "ampersand": "x & touch CANARY",
    "pipe": "x | touch CANARY",
    "redirect-out": "x > CANARY",
    "redirect-in": "x < CANARY",
    "command-substitution": "$(touch CANARY)",
    "backticks": "`touch CANARY`",
    "newline": "x\ntouch CANARY",
    "trailing-newline": "x\n",
    "single-quote": "x'; touch CANARY; '",
    "double-quote": 'x"; touch CANARY; "',
    "leading-dashes": "--help",
    "ssh-option": "-oProxyCommand=touch CANARY",
    "oversized-number": 10**30,
    "fullwidth": "ｇｐｕ",
    "cyrillic": "d\u0430sk",  # a Cyrillic 'a' (U+0430) in a Latin word
    "nul": "x\0y",
}


def hostile(value: Any, canary: Path) -> Any:
    return value.replace(CANARY, str(canary)) if isinstance(value, str) else value


def invoke(*argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """The CLI in this process, exactly as `clusterctl` runs it, minus the interpreter start."""
    capsys.readouterr()
    code = run(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_refused(code: int, out: str, err: str) -> None:
    assert code == 2, (code, out, err)
    # clusterctl's own refusals say `error:`; click's (a non-integer --nthreads) say `Error:` after the usage.
    assert len([line for line in err.splitlines() if line.lower().startswith("error: ")]) == 1, err


# ---- the inventory: every string field -----------------------------------------------------------------


def base_inventory(run_dir: Path) -> dict[str, Any]:
    return {
        "name": "inj",
        "defaults": {"python": PYTHON},
        "hosts": {"node1": {"address": "127.0.0.1", "port": 22, "user": "root", "identity_file": "/no/such/key",
                            "run_dir": str(run_dir), "env": {"A": "1"}}},
        "scheduler": {"host": "node1", "port": 8786, "dashboard_address": ":8787"},
        "workers": [{"name": "w1", "host": "node1", "memory_limit": "1GB", "resources": {"GPU": 1}}],
    }


def _alias(inventory: dict[str, Any], value: Any) -> None:
    inventory["hosts"] = {value: inventory["hosts"]["node1"]}
    inventory["scheduler"]["host"] = inventory["workers"][0]["host"] = value


def _host(key: str) -> Callable[[dict[str, Any], Any], None]:
    return lambda inventory, value: inventory["hosts"]["node1"].__setitem__(key, value)


def _tls(key: str) -> Callable[[dict[str, Any], Any], None]:
    def put(inventory: dict[str, Any], value: Any) -> None:
        inventory["security"] = {"tls": {"ca_file": "/no/ca.pem", "cert": "/no/cert.pem", "key": "/no/key.pem",
                                         key: value}}
    return put


FIELDS: dict[str, Callable[[dict[str, Any], Any], None]] = {
    "name": lambda inventory, value: inventory.__setitem__("name", value),
    "hosts-alias": _alias,
    "address": _host("address"),
    "user": _host("user"),
    "port": _host("port"),
    "identity_file": _host("identity_file"),
    "python": _host("python"),
    "env-name": lambda inventory, value: inventory["hosts"]["node1"].__setitem__("env", {value: "1"}),
    "env-value": lambda inventory, value: inventory["hosts"]["node1"].__setitem__("env", {"A": value}),
    "run_dir": _host("run_dir"),
    "scheduler.host": lambda inventory, value: inventory["scheduler"].__setitem__("host", value),
    "scheduler.port": lambda inventory, value: inventory["scheduler"].__setitem__("port", value),
    "dashboard_address": lambda inventory, value: inventory["scheduler"].__setitem__("dashboard_address", value),
    "worker.name": lambda inventory, value: inventory["workers"][0].__setitem__("name", value),
    "worker.host": lambda inventory, value: inventory["workers"][0].__setitem__("host", value),
    "memory_limit": lambda inventory, value: inventory["workers"][0].__setitem__("memory_limit", value),
    "resources-name": lambda inventory, value: inventory["workers"][0].__setitem__("resources", {value: 1}),
    "resources-value": lambda inventory, value: inventory["workers"][0].__setitem__("resources", {"GPU": value}),
    "tls.ca_file": _tls("ca_file"),
    "tls.cert": _tls("cert"),
    "tls.key": _tls("key"),
}

# Fields whose value is a literal for the host (a path, an interpreter, an environment value): shell
# syntax in it is legitimate and must simply arrive. Which of the corpus each field refuses instead:
LITERAL_FIELDS: dict[str, set[str]] = {
    "identity_file": {"newline", "trailing-newline", "nul", "oversized-number"},
    "python": {"newline", "trailing-newline", "nul", "oversized-number"},
    "run_dir": {"newline", "trailing-newline", "nul", "oversized-number"},
    "env-value": {"nul"},
    "tls.ca_file": {"newline", "trailing-newline", "nul", "oversized-number"},
    "tls.cert": {"newline", "trailing-newline", "nul", "oversized-number"},
    "tls.key": {"newline", "trailing-newline", "nul", "oversized-number"},
}
NUMBERS = {"memory_limit", "resources-value"}  # 10**30 is a (silly but) valid amount: dask caps a memory limit


def _inventory_cases() -> list[Any]:
    cases = []
    for field in FIELDS:
        for case, value in HOSTILE.items():
            literal = (field in LITERAL_FIELDS and case not in LITERAL_FIELDS[field]) or (
                field in NUMBERS and case == "oversized-number")
            marks = []
            if field == "python" and str(value).startswith("-"):
                literal = False  # bash would read it as its own option: refused
            cases.append(pytest.param(field, value, literal, id=f"{field}-{case}", marks=marks))
    cases += [
        pytest.param("dashboard_address", "$(touch CANARY):8787", False, id="dashboard_address-host-substitution"),
        pytest.param("dashboard_address", "--help:8787", False, id="dashboard_address-host-dashes"),
        pytest.param("dashboard_address", ":8787; touch CANARY", False, id="dashboard_address-port-semicolon"),
        # Digits of another script (fullwidth) look like a port but are refused: ASCII only.
        pytest.param("dashboard_address", ":８７８７", False, id="dashboard_address-fullwidth-digits"),
        pytest.param("memory_limit", "4GB; touch CANARY", False, id="memory_limit-size-semicolon"),
        pytest.param("memory_limit", "-1", False, id="memory_limit-negative"),
        pytest.param("memory_limit", "nan", False, id="memory_limit-nan"),
        pytest.param("resources-value", "nan", False, id="resources-value-nan"),
        pytest.param("resources-value", "-1", False, id="resources-value-negative"),
        pytest.param("resources-name", "GPU=1 X", False, id="resources-name-equals"),
    ]
    return cases


def dry_run_words(stdout: str) -> list[str]:
    """Every shell word of every command line `up --dry-run --json` shows."""
    commands = json.loads(stdout)["commands"]
    return [word for lines in commands.values() for line in lines for word in shlex.split(line)]


@pytest.mark.parametrize(("field", "value", "literal"), _inventory_cases())
def test_a_hostile_inventory_value_is_refused_or_kept_literal(
        field: str, value: Any, literal: bool, ssh_env: SshEnv, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    canary, run_dir = tmp_path / CANARY, tmp_path / "run"
    value = hostile(value, canary)
    inventory = base_inventory(run_dir)
    FIELDS[field](inventory, value)
    config = write_inventory(tmp_path / "c.yaml", inventory)

    code, out, err = invoke("up", str(config), "--dry-run", "--json", capsys=capsys)

    if literal:
        assert code == 0, err
        words = dry_run_words(out)
        expected = {
            "python": lambda: value in words,
            "run_dir": lambda: f">>{value}/scheduler.log" in words,
            "env-value": lambda: f"A={value}" in words,
            "memory_limit": lambda: words[words.index("--memory-limit") + 1] == str(value),
            "resources-value": lambda: words[words.index("--resources") + 1] == f"GPU={int(float(value))}",
            "dashboard_address": lambda: words[words.index("--dashboard-address") + 1] == value,
        }.get(field, lambda: True)  # identity_file and TLS files are read on this machine, not shown
        assert expected(), words
    else:
        assert_refused(code, out, err)
        assert out == ""
    assert not (ssh_env.clusterctl_home / "clusters").exists(), "a dry run or a refusal records nothing"
    assert not run_dir.exists()
    assert not canary.exists()


@pytest.mark.parametrize("case", [c for c in HOSTILE if c not in LITERAL_FIELDS["identity_file"]])
def test_an_identity_file_is_only_ever_a_file_name(case: str, ssh_env: SshEnv, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    # A real `up`, not a dry run: the key is looked for before any connection is made.
    canary = tmp_path / CANARY
    value = hostile(HOSTILE[case], canary)
    inventory = base_inventory(tmp_path / "run")
    inventory["hosts"]["node1"]["identity_file"] = value
    code, _, err = invoke("up", str(write_inventory(tmp_path / "c.yaml", inventory)), capsys=capsys)
    assert code == 1, err
    assert error_lines(err) == [
        f"error: node1: identity_file {value} does not exist"]
    assert not (ssh_env.clusterctl_home / "clusters" / "inj").exists()
    assert not canary.exists()


# ---- options and --cluster -----------------------------------------------------------------------------


def record_cluster(tmp_path: Path, ssh_port: int) -> None:
    """A cluster `add-worker` can grow: its one SSH host is 127.0.0.1 on a port where nothing listens, so
    anything that gets past validation ends at 'connection refused' before starting anything."""
    inventory = base_inventory(tmp_path / "run")
    inventory["hosts"]["node1"].update(port=ssh_port, identity_file=None)
    state.save(ClusterState(name="inj", inventory=inventory, config_path=None,
                            scheduler_address="tcp://127.0.0.1:8786", dashboard_url=None))
    state.set_current("inj")


ADD_WORKER_OPTIONS = ("--name", "--host", "--resources", "--memory-limit", "--nthreads")
ADD_WORKER_EXTRA = [
    ("--resources", "GPU=1;touch CANARY", False), ("--resources", "GPU=1 $(touch CANARY)=1", False),
    ("--resources", "ｇｐｕ=1", False), ("--resources", "GPU=nan", False), ("--resources", "--help=1", False),
    ("--resources", f"GPU={10**30}", True), ("--memory-limit", "4GB; touch CANARY", False),
    ("--memory-limit", "nan", False),
]


def _add_worker_cases() -> list[Any]:
    cases = []
    for option in ADD_WORKER_OPTIONS:
        for case, value in HOSTILE.items():
            # An all-digit name or hostname is valid, and a huge memory limit is capped by dask.
            literal = case == "oversized-number" and option in ("--name", "--host", "--memory-limit")
            marks = []
            cases.append(pytest.param(option, str(value), literal, id=f"{option}-{case}", marks=marks))
    for option, value, literal in ADD_WORKER_EXTRA:
        cases.append(pytest.param(option, value, literal, id=f"{option}-{value}"))
    return cases


@pytest.mark.parametrize(("option", "value", "literal"), _add_worker_cases())
def test_a_hostile_add_worker_option_is_refused_or_kept_literal(
        option: str, value: str, literal: bool, ssh_env: SshEnv, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    canary = tmp_path / CANARY
    value = hostile(value, canary)
    port = free_port()
    record_cluster(tmp_path, port)
    # A bare hostname is looked up in the ssh config: point it at the same closed port, not at DNS.
    ssh_env.ssh_config.write_text(f"Host {10**30}\n  HostName 127.0.0.1\n  Port {port}\n")
    argv = ["add-worker", option, value] if option == "--host" else ["add-worker", "--host", "node1", option, value]

    code, out, err = invoke(*argv, "--timeout", "5", capsys=capsys)

    if literal:
        assert code == 1, err
        assert f"connection refused on 127.0.0.1:{port}" in err
    else:
        assert_refused(code, out, err)
    assert json.loads((ssh_env.clusterctl_home / "clusters" / "inj" / "state.json").read_text())["processes"] == []
    assert not (tmp_path / "run").exists()
    assert not canary.exists()


CLUSTER_COMMANDS = {
    "status": ["status"], "env": ["env"], "logs": ["logs"], "dashboard": ["dashboard"], "down": ["down"],
    "add-worker": ["add-worker"], "remove-worker": ["remove-worker", "w1"],
}


def _cluster_option_cases() -> list[Any]:
    cases = []
    for command in CLUSTER_COMMANDS:
        for case, value in HOSTILE.items():
            marks = []
            cases.append(pytest.param(command, str(value), case == "oversized-number", id=f"{command}-{case}",
                                      marks=marks))
    return cases


@pytest.mark.parametrize(("command", "value", "valid_name"), _cluster_option_cases())
def test_a_hostile_cluster_name_is_refused_by_every_command(
        command: str, value: str, valid_name: bool, ssh_env: SshEnv, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    canary = tmp_path / CANARY
    value = hostile(value, canary)
    home = ssh_env.clusterctl_home
    code, out, err = invoke(*CLUSTER_COMMANDS[command], "--cluster", value, capsys=capsys)
    if valid_name:  # all digits: a valid name, of a cluster that does not run
        assert code == (0 if command == "down" else 1), err
    else:
        assert_refused(code, out, err)
        assert not (home / "crash.log").exists()
        created = {p.relative_to(home) for p in home.rglob("*")} if home.exists() else set()
        assert created <= {Path("locks")}, f"a refused command created {created}"
    assert not canary.exists()


# ---- accepted values, on a real sshd -------------------------------------------------------------------

SHELL_SYNTAX = "; & | > < $(touch CANARY) `touch CANARY` 'q' \"d\" ｇｐｕ d\u0430sk"


def literal_env(canary: Path) -> dict[str, str]:
    """One variable per hostile value a variable may hold (all but NUL), plus a few combinations."""
    values = {f"HOSTILE_{i}": str(hostile(value, canary)) for i, (case, value) in enumerate(HOSTILE.items())
              if case != "nul"}
    values["HOSTILE_ASSIGNMENT"] = f"A=B; touch {canary}"
    values["HOSTILE_MIXED"] = hostile(SHELL_SYNTAX + "\n\t --x \\ \\n $HOME ${HOME} %s ~", canary)
    values["HOSTILE_EMPTY"] = ""
    return values


def own_tls_files(directory: Path, canary: Path) -> dict[str, str]:
    """The user's own CA, certificate and key (made here with clusterctl's generator, for another
    "cluster"), under file names a shell would act on."""
    pki = directory / "pki"
    pki.mkdir()
    tls.generate(pki, "mine", ["127.0.0.1"])
    own = tls.local_files(pki, "client")  # its certificate is good for servers and clients alike
    hostile_dir = directory / hostile(f"my pki {SHELL_SYNTAX}", canary)
    hostile_dir.mkdir(parents=True)
    files = {}
    for what, source in {"ca_file": own.ca_file, "cert": own.cert, "key": own.key}.items():
        files[what] = str(hostile_dir / f"--{what} | touch {CANARY} > x.pem")
        shutil.copyfile(source, files[what])
    return files


@pytest.mark.ssh
def test_hostile_literals_and_own_tls_files_arrive_byte_for_byte_and_run_nothing(
        sshd: SshdTestBed, ssh_env: SshEnv, tmp_path: Path) -> None:
    canary = tmp_path / CANARY
    syntax = hostile(SHELL_SYNTAX, canary)
    # An interpreter, a run directory, a key and TLS files whose paths are full of shell syntax.
    python = tmp_path / f"bin {syntax}" / "--python"
    python.parent.mkdir(parents=True)
    calls = tmp_path / "python-calls"
    python.write_text(f'#!/bin/sh\nprintf "%s\\0" "$0" >> {shlex.quote(str(calls))}\n'
                      f'exec {shlex.quote(PYTHON)} "$@"\n')
    python.chmod(0o755)
    key = tmp_path / f"key {syntax}" / "-i id"
    key.parent.mkdir(parents=True)
    shutil.copyfile(sshd.client_key, key)
    key.chmod(0o600)
    run_dir = tmp_path / f"run {syntax}" / "--run dir"
    own = own_tls_files(tmp_path, canary)
    env = literal_env(canary)
    config = write_inventory(tmp_path / "c.yaml", {
        "name": "inj-literal",
        "security": {"tls": own},
        "defaults": {"python": str(python), "env": {**env, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}},
        "hosts": {"node1": sshd.host(run_dir=str(run_dir), identity_file=str(key))},
        "scheduler": {"host": "node1", "port": free_port(), "dashboard_address": None},
        "workers": [{"name": "w1", "host": "node1", "env": {"HOSTILE_GROUP": syntax}}],
    })
    home = ssh_env.clusterctl_home
    try:
        started = clusterctl("up", str(config), "--json")
        assert started.exit_code == 0, started.stderr
        address = started.json()["scheduler"]["address"]
        assert address.startswith("tls://127.0.0.1:")
        assert clusterctl("status").exit_code == 0
        processes = json.loads((home / "clusters" / "inj-literal" / "state.json").read_text())["processes"]
        assert {p.name for p in run_dir.glob("*.pid")} == {"scheduler.pid", "w1.pid"}, "the run dir, as written"

        # The user's own files: every process uses the user's pair, and the local copies are private.
        for name in ("scheduler.pem", "worker.pem"):
            assert (run_dir / "tls" / name).read_bytes() == Path(own["cert"]).read_bytes()
        local = home / "clusters" / "inj-literal" / "tls"
        assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in local.iterdir()} == dict.fromkeys(
            ["ca.pem"] + [f"{role}{suffix}.pem" for role in tls.ROLES for suffix in ("", "-key")], 0o600)

        # The interpreter was called by its path, as written: by the agent over SSH and for each process.
        called = calls.read_bytes().split(b"\0")[:-1]
        assert len(called) >= 3 and set(called) == {os.fsencode(python)}

        # The scheduler's environment, as the kernel holds it; the worker's, as a task sees it.
        scheduler = next(p for p in processes if p["role"] == "scheduler")
        environ = Path(f"/proc/{scheduler['pid']}/environ").read_bytes().split(b"\0")
        for name, value in env.items():
            assert f"{name}={value}".encode() in environ, name
        security = Security(tls_ca_file=own["ca_file"], tls_client_cert=own["cert"], tls_client_key=own["key"],
                            require_encryption=True)
        with Client(address, timeout=30, security=security) as client:
            for name, value in {**env, "HOSTILE_GROUP": syntax}.items():
                assert list(client.run(os.getenv, name).values()) == [value], name
    finally:
        down = clusterctl("down")
    assert down.exit_code == 0, down.stderr
    assert not any(is_running(p) for p in processes)
    assert not canary.exists()


@pytest.mark.ssh
def test_an_interpreter_that_does_not_exist_is_looked_up_by_its_literal_name(
        sshd: SshdTestBed, ssh_env: SshEnv, tmp_path: Path) -> None:
    canary = tmp_path / CANARY
    pythons = {f"p{i}": hostile(value, canary) for i, (case, value) in enumerate(HOSTILE.items())
               if case not in LITERAL_FIELDS["python"] and not str(hostile(value, canary)).startswith("-")}
    config = write_inventory(tmp_path / "c.yaml", {
        "name": "inj-python",
        "hosts": {alias: sshd.host(run_dir=str(tmp_path / alias), python=python) for alias, python in pythons.items()},
        "scheduler": {"host": "p0", "port": free_port(), "dashboard_address": None},
        "workers": [{"host": alias} for alias in pythons],
    })
    result = clusterctl("up", str(config))
    assert result.exit_code == 1, result.stderr
    (error,) = error_lines(result.stderr)
    for alias, python in pythons.items():
        assert f"{alias}: {python}: command not found" in error
    assert not (ssh_env.clusterctl_home / "clusters" / "inj-python").exists()
    assert not any(tmp_path.glob("p*/*.pid"))
    assert not canary.exists()
