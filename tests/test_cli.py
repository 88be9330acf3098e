"""The command line itself, run as users run it: help for every command, exit codes, lazy imports."""

from __future__ import annotations

import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

from clusterctl import __version__, state
from clusterctl.errors import EXIT_FAILED, EXIT_INVALID, EXIT_OK
from clusterctl.state import ClusterState
from tests.helpers.cluster import REPO, clusterctl, error_lines, local_inventory


@cache
def listed_commands() -> tuple[str, ...]:
    """The subcommands in the Commands section of `clusterctl --help`."""
    result = clusterctl("--help", timeout=60)
    assert result.exit_code == 0, result.stderr
    section = result.stdout.split("\nCommands:\n", 1)[1]
    commands = []
    for line in section.splitlines():
        match = re.match(r"^  (\S+)(\s|$)", line)
        if not match:
            break  # the end of the indented list
        commands.append(match.group(1))
    return tuple(commands)


def test_help_lists_the_commands_of_the_lecture_story() -> None:
    assert {"up", "status", "add-worker", "down", "env"} <= set(listed_commands())


@pytest.mark.parametrize("command", listed_commands())
def test_every_command_has_help_with_examples(command: str) -> None:
    result = clusterctl(command, "--help", timeout=60)
    assert result.exit_code == EXIT_OK, result.stderr
    assert result.stdout.startswith(f"Usage: clusterctl {command} ")
    assert "Examples:" in result.stdout
    assert f"clusterctl {command}" in result.stdout.split("Examples:", 1)[1]


def test_top_level_help_has_examples_and_short_help_works() -> None:
    long, short = clusterctl("--help"), clusterctl("-h")
    assert long.exit_code == short.exit_code == EXIT_OK
    assert long.stdout == short.stdout
    assert "Examples:" in long.stdout


def test_version() -> None:
    result = clusterctl("--version")
    assert result.exit_code == EXIT_OK
    assert result.stdout.strip() == f"clusterctl, version {__version__}"


def test_help_does_not_import_distributed_dask_or_paramiko() -> None:
    code = ("import sys; from clusterctl.cli import run; run(['--help']); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('distributed', 'dask', 'paramiko')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "Usage: clusterctl" in done.stdout
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_an_unknown_command_exits_2() -> None:
    result = clusterctl("sprout")
    assert result.exit_code == EXIT_INVALID
    assert "No such command 'sprout'" in result.stderr
    assert "Traceback" not in result.stderr
    assert error_lines(result.stderr) == [
        "error: No such command 'sprout'."], "one error line, like every other error"


def test_an_unknown_option_exits_2() -> None:
    result = clusterctl("status", "--bogus")
    assert result.exit_code == EXIT_INVALID
    assert "--bogus" in result.stderr


def test_status_without_a_cluster_exits_1_with_one_error_and_a_hint(clusterctl_home: Path) -> None:
    result = clusterctl("status")
    assert result.exit_code == EXIT_FAILED
    assert error_lines(result.stderr) == ["error: no current cluster"]
    assert [line for line in result.stderr.splitlines() if line.startswith("hint:")] == [
        "hint: start one with `clusterctl up CONFIG`"]
    assert result.stdout == ""


def test_down_with_nothing_running_exits_0(clusterctl_home: Path) -> None:
    result = clusterctl("down")
    assert result.exit_code == EXIT_OK, result.stderr
    assert result.stdout == "no current cluster: nothing to do\n"
    assert clusterctl("down", "--json").json() == {
        "schema": 1, "cluster": None, "stopped": [], "already_gone": True, "scheduler_note": None,
        "without_state": False, "notes": [], "unrecorded_scheduler": None}
    assert error_lines(result.stderr) == []
    assert not (clusterctl_home / "clusters").exists()


def save_cluster(name: str = "lab", address: str = "tcp://10.0.0.1:8786") -> None:
    state.save(ClusterState(name=name, inventory=local_inventory(name=name), config_path=None,
                            scheduler_address=address, dashboard_url=None))
    state.set_current(name)


def test_env_prints_one_shell_export(clusterctl_home: Path) -> None:
    save_cluster()
    result = clusterctl("env")
    assert result.exit_code == EXIT_OK, result.stderr
    assert result.stdout == "export DASK_SCHEDULER_ADDRESS=tcp://10.0.0.1:8786\n"


def test_env_output_evaluates_in_a_shell(clusterctl_home: Path) -> None:
    save_cluster(address="tcp://[::1]:8786")
    exports = clusterctl("env").stdout
    shell = subprocess.run(["/bin/sh", "-c", exports + 'printf %s "$DASK_SCHEDULER_ADDRESS"'],
                           capture_output=True, text=True, timeout=30)
    assert shell.stdout == "tcp://[::1]:8786"


def test_env_json(clusterctl_home: Path) -> None:
    save_cluster()
    result = clusterctl("env", "--json")
    assert result.exit_code == EXIT_OK, result.stderr
    assert result.json() == {"schema": 1, "exports": {"DASK_SCHEDULER_ADDRESS": "tcp://10.0.0.1:8786"}}


def test_env_of_a_cluster_that_is_not_running_exits_1(clusterctl_home: Path) -> None:
    save_cluster()
    result = clusterctl("env", "--cluster", "other")
    assert result.exit_code == EXIT_FAILED
    assert error_lines(result.stderr) == ["error: cluster 'other' is not running"]
    assert result.stdout == ""


def test_hints_only_name_commands_that_exist(tmp_path: Path) -> None:
    result = clusterctl("up", str(tmp_path / "absent.yaml"))
    assert result.exit_code == EXIT_INVALID
    mentioned = set(re.findall(r"`clusterctl ([a-z-]+)", result.stderr))
    assert mentioned <= set(listed_commands()), mentioned


@pytest.mark.parametrize("command", listed_commands())
def test_every_command_lists_and_accepts_the_global_options(command: str) -> None:
    shown = clusterctl(command, "--help", "-v", "-q", timeout=60)
    assert shown.exit_code == EXIT_OK, shown.stderr
    assert "-q, --quiet" in shown.stdout and "-v, --verbose" in shown.stdout


def test_global_options_after_the_command_work_as_before_it(tmp_path: Path, clusterctl_home: Path) -> None:
    assert error_lines(clusterctl("status", "-v").stderr) == ["error: no current cluster"]
    config = tmp_path / "cluster.yaml"
    config.write_text(__import__("yaml").safe_dump(local_inventory()))
    before, after = clusterctl("-v", "check", str(config)), clusterctl("check", str(config), "-v")
    assert before.exit_code == after.exit_code == EXIT_OK, after.stderr
    assert "→ me: " in after.stderr and after.stderr.count("→") == before.stderr.count("→")
    quiet = clusterctl("check", str(config), "-q")
    assert quiet.exit_code == EXIT_OK, quiet.stderr
    assert quiet.stderr == ""


# --- messages that point at the fix -----------------------------------------------------------------


def write_yaml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


LECTURE_HEAD = "name: lab\nhosts:\n  node1: {address: 10.0.0.1}\n"


@pytest.mark.parametrize(("text", "expected"), [
    ("name: lab\nhosts:\n  me: {connection: local}\n   node1: {address: 10.0.0.1}\nscheduler: {host: me}\n",
     "error: {}:4: this line is indented differently from the lines above it (line 3)"),
    ("name: lab\nscheduler:\n  host: me\n    port: 8786\n",
     "error: {}:4: a `key: value` where none can be: this line is indented further than the key above it, "
     "or a value on it needs quotes"),
    ("name: lab\nscheduler:\n\thost: me\n", "error: {}:3: a tab character: YAML indents with spaces only"),
])
def test_wrong_indentation_is_said_in_the_users_words(tmp_path: Path, text: str, expected: str) -> None:
    config = write_yaml(tmp_path / "indent.yaml", text)
    result = clusterctl("check", str(config))
    assert result.exit_code == EXIT_INVALID
    assert error_lines(result.stderr) == [expected.format(config)]
    assert "malformed" not in result.stderr and "<block end>" not in result.stderr


@pytest.mark.parametrize(("text", "line", "message"), [
    pytest.param("name: lab\ndefaults:\n  OMP_NUM_THREADS: '1'\nhosts: {me: {connection: local}}\nscheduler: {host: me}\n",
                 3, "defaults.OMP_NUM_THREADS: unknown key 'OMP_NUM_THREADS' "
                    "(an environment variable? did you mean defaults.env.OMP_NUM_THREADS?)", id="env-variable-outside-env"),
    pytest.param(LECTURE_HEAD + "scheduler: {host: node1}\nworkers:\n  - host: nod1\n",
                 6, "workers[0].host: 'nod1' is not an alias from `hosts` (did you mean 'node1'?); "
                    "if it is a machine's name, add it to `hosts` (nod1: {})", id="mistyped-alias"),
])
def test_a_likely_slip_is_refused_with_its_line_and_the_fix(text: str, line: int, message: str, tmp_path: Path) -> None:
    config = write_yaml(tmp_path / "c.yaml", text)
    result = clusterctl("up", str(config))
    assert result.exit_code == EXIT_INVALID
    assert error_lines(result.stderr) == [f"error: {config}:{line}: {message}"]


def test_a_hostname_that_does_not_resolve_names_its_inventory_line(tmp_path: Path) -> None:
    # cctl-node3 next to alias cctl-node1 is a sibling machine, not a typo: kept as a hostname.
    config = write_yaml(tmp_path / "c.yaml", "name: lab\nhosts:\n  cctl-node1: {address: 127.0.0.1}\n"
                                             "scheduler: {host: cctl-node3}\n")
    result = clusterctl("check", str(config), "--json")
    assert result.exit_code == EXIT_FAILED, result.stderr
    reachable = result.json()["hosts"][0]["checks"]["reachable"]
    assert reachable["reason"] == f"cannot resolve hostname cctl-node3 (named at {config}:4)"
    started = clusterctl("up", str(config))
    assert started.exit_code == EXIT_FAILED
    assert error_lines(started.stderr) == [f"error: cctl-node3: cannot resolve hostname cctl-node3 (named at {config}:4)"]


def test_a_python_without_distributed_is_pointed_at_one_that_has_it(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "bare")], check=True, timeout=120)
    bare = tmp_path / "bare" / "bin" / "python"
    config = write_yaml(tmp_path / "c.yaml", f"name: lab\ndefaults: {{python: {bare}}}\n"
                                             "hosts: {me: {connection: local}}\nscheduler: {host: me}\n")
    result = clusterctl("up", str(config))
    assert result.exit_code == EXIT_FAILED
    hints = [line for line in result.stderr.splitlines() if line.startswith("hint:")]
    assert hints == [f"hint: set `python: {sys.executable}` for this host (it has distributed: clusterctl runs "
                     f"under it), or install dask and distributed there (`{bare} -m pip install distributed`)"]


def test_the_dry_run_document_carries_its_schema(tmp_path: Path) -> None:
    config = write_yaml(tmp_path / "c.yaml", __import__("yaml").safe_dump(local_inventory()))
    document = clusterctl("up", str(config), "--dry-run", "--json").json()
    assert document["schema"] == 1 and document["cluster"] == "t" and list(document["commands"]) == ["me"]
