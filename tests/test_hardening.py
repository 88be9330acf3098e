"""Issue 12, "Hardening": what a security review found by running clusterctl as an attacker would.

Another user on a shared host (a run_dir they created, files planted in it), anyone who can reach
the scheduler (worker names and resources full of markup and escape sequences), a compromised host
(hostile agent answers, endless output), a hostile file (YAML bombs, a tampered state file). Each
test here failed before its fix. The other user is a spare uid that root hands files to and runs
commands as (``setpriv``); everything it made is removed after.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clusterctl import agent
from tests.helpers.cluster import PYTHON, clusterctl, local_inventory, write_inventory

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="plays another local user: needs root")


def spare_uid() -> int:
    """A uid no account uses: the other local user."""
    for uid in range(54321, 54421):
        try:
            pwd.getpwuid(uid)
        except KeyError:
            return uid
    raise RuntimeError("no spare uid")


OTHER = spare_uid()


def as_other(*argv: str) -> None:
    subprocess.run(["setpriv", f"--reuid={OTHER}", f"--regid={OTHER}", "--clear-groups", *argv], check=True)


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A directory in /tmp that the other user created for everyone (mode 0777), as on a shared host."""
    base = Path(tempfile.mkdtemp(prefix="cctl-hardening-"))
    os.chmod(base, 0o1777)  # like /tmp itself
    shared = base / "shared"
    as_other("mkdir", "-m", "0777", str(shared))
    try:
        yield shared
    finally:
        shutil.rmtree(base)


def ask_agent(request: dict[str, Any]) -> dict[str, Any]:
    """One agent round trip, as a host runs it: the agent's source on ``python -c``, the request on stdin."""
    done = subprocess.run([PYTHON, "-c", Path(agent.__file__).read_text()], input=json.dumps(request),
                          capture_output=True, text=True, timeout=60)
    line = next(line for line in done.stdout.splitlines() if line.startswith("CLUSTERCTL-AGENT "))
    return json.loads(line[len("CLUSTERCTL-AGENT "):])


def victim(tmp_path: Path) -> Path:
    """A file of root's elsewhere, which a planted symlink points at."""
    target = tmp_path / "victim"
    target.write_text("precious\n")
    target.chmod(0o644)
    return target


# --- a run_dir someone else created -------------------------------------------------------------


def test_up_refuses_a_run_dir_another_user_created_naming_it_and_the_fix(
        shared_tmp: Path, tmp_path: Path, clusterctl_home: Path) -> None:
    target = victim(tmp_path)
    as_other("ln", "-s", str(target), str(shared_tmp / "w1.log"))
    as_other("ln", "-s", str(target), str(shared_tmp / "scheduler.pid.tmp"))
    inventory = local_inventory(workers=[{"name": "w1", "host": "me"}])
    inventory["hosts"]["me"]["run_dir"] = str(shared_tmp)
    result = clusterctl("up", str(write_inventory(tmp_path / "c.yaml", inventory)))
    assert result.exit_code == 1, result.stderr
    assert f"run directory {shared_tmp} is owned by uid {OTHER}, not by you (uid 0)" in result.stderr
    assert "hint: choose a `run_dir:` inside your home" in result.stderr
    assert target.read_text() == "precious\n" and target.stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("case", ["others' directory", "ours but world-writable", "ours but group-writable",
                                  "parent owned by another user", "parent world-writable without sticky bit"])
def test_the_agent_refuses_a_run_dir_that_another_user_can_write_to(case: str, tmp_path: Path) -> None:
    run_dir = tmp_path / "parent" / "run"
    run_dir.mkdir(parents=True, mode=0o700)
    bad = {"others' directory": run_dir, "ours but world-writable": run_dir, "ours but group-writable": run_dir,
           "parent owned by another user": run_dir.parent,
           "parent world-writable without sticky bit": run_dir.parent}[case]
    if "another user" in case or case == "others' directory":
        os.chown(bad, OTHER, OTHER)
    if "writable" in case:
        bad.chmod(0o770 if "group" in case else 0o777)
    for op in ("prepare", "start", "list"):
        answer = ask_agent({"op": op, "run_dir": str(run_dir), "processes": []})
        assert str(bad) in answer.get("refused", ""), (op, answer)
        assert answer["hint"]


def test_the_agent_accepts_its_own_run_dir_below_a_sticky_world_writable_parent(tmp_path: Path) -> None:
    parent = tmp_path / "like-tmp"
    parent.mkdir()
    parent.chmod(0o1777)
    assert ask_agent({"op": "prepare", "run_dir": str(parent / "run")}) == {"run_dir": str(parent / "run")}
    assert (parent / "run").stat().st_mode & 0o777 == 0o700


def test_start_writes_no_log_or_pid_file_through_a_symlink(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    target = victim(tmp_path)
    (run_dir / "w1.log").symlink_to(target)
    (run_dir / "w2.pid.tmp").symlink_to(target)
    answer = ask_agent({"op": "start", "run_dir": str(run_dir), "processes": [
        {"name": "w1", "argv": ["true"], "env": {}}, {"name": "w2", "argv": ["true"], "env": {}}]})
    w1, w2 = answer["processes"]
    assert "cannot open its log" in w1["error"] and "pid" not in w1
    assert w2["pid"] > 1 and json.loads((run_dir / "w2.pid").read_text())["name"] == "w2"
    assert target.read_text() == "precious\n" and target.stat().st_mode & 0o777 == 0o644
    assert (run_dir / "w2.log").stat().st_mode & 0o777 == 0o600
    assert (run_dir / "w2.pid").stat().st_mode & 0o777 == 0o600


def _start_time(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2:].split()[19])


def test_only_pid_files_we_own_naming_a_real_process_of_that_name_are_trusted(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    stranger = subprocess.Popen(["sleep", "60"], start_new_session=True)  # a process of root's we did not start
    try:
        real = {"pid": stranger.pid, "start_time": _start_time(stranger.pid), "log": "x", "role": "worker"}
        planted = {
            "zero.pid": {**real, "name": "zero", "pid": 0},
            "one.pid": {**real, "name": "one", "pid": 1},
            "text.pid": {**real, "name": "text", "pid": str(stranger.pid)},
            "nostart.pid": {**real, "name": "nostart", "start_time": None},
            "renamed.pid": {**real, "name": "someone-else"},
            "others.pid": {**real, "name": "others"},
            "deep.pid": json.loads("[" * 50 + "]" * 50),
        }
        for name, record in planted.items():
            (run_dir / name).write_text(json.dumps(record))
        os.chown(run_dir / "others.pid", OTHER, OTHER)
        (run_dir / "linked.pid").symlink_to(run_dir / "others.pid")
        (run_dir / "elsewhere-planted.example").write_text("{}")  # a note of add-worker's, not ours
        os.chown(run_dir / "elsewhere-planted.example", OTHER, OTHER)
        (run_dir / "elsewhere-linked.example").symlink_to(run_dir / "elsewhere-planted.example")
        assert ask_agent({"op": "list", "run_dir": str(run_dir)}) == {"processes": [], "elsewhere": []}
        answer = ask_agent({"op": "stop", "run_dir": str(run_dir), "processes": [], "grace": 1})
        assert answer == {"processes": []}
        assert stranger.poll() is None  # still running: nothing signalled it
        (run_dir / "ours.pid").write_text(json.dumps({**real, "name": "ours"}))
        assert [p["name"] for p in ask_agent({"op": "list", "run_dir": str(run_dir)})["processes"]] == ["ours"]
    finally:
        stranger.kill()
        stranger.wait()


def test_a_recorded_process_without_start_time_or_with_pid_0_is_never_signalled(tmp_path: Path) -> None:
    stranger = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        for record in ({"pid": stranger.pid, "start_time": None}, {"pid": 0, "start_time": 0}):
            assert ask_agent({"op": "alive", "processes": [record]})["processes"][0]["alive"] is False
            answer = ask_agent({"op": "stop", "processes": [{**record, "name": "w"}], "grace": 1})
            assert answer["processes"][0]["signalled"] is False
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


# --- clusterctl's own secrets stay with clusterctl ----------------------------------------------


def test_processes_get_the_inventorys_env_but_never_clusterctls_ssh_password(tmp_path: Path, clusterctl_home: Path) -> None:
    from distributed import Client

    secret = "hunter2-not-for-tasks"
    inventory = local_inventory(workers=[{"name": "w1", "host": "me"}])
    inventory["defaults"]["env"]["FROM_INVENTORY"] = "yes"
    config = write_inventory(tmp_path / "c.yaml", inventory)
    result = clusterctl("up", str(config), "--json", env={"CLUSTERCTL_SSH_PASSWORD": secret, "CLUSTERCTL_X": "1"})
    assert result.exit_code == 0, result.stderr
    try:
        with Client(result.json()["scheduler"]["address"], timeout=30) as client:
            seen = client.submit(lambda: {k: v for k, v in os.environ.items() if "CLUSTERCTL" in k or k == "FROM_INVENTORY"},
                                 pure=False).result(timeout=30)
        assert seen == {"FROM_INVENTORY": "yes"}
        for process in json.loads((clusterctl_home / "clusters/t/state.json").read_text())["processes"]:
            environ = Path(f"/proc/{process['pid']}/environ").read_bytes()
            assert secret.encode() not in environ and b"FROM_INVENTORY=yes" in environ
    finally:
        assert clusterctl("down", str(config)).exit_code == 0


# --- what a third party registers reaches the operator's terminal as text ----------------------

HOSTILE_NAME = "[/]evil\x1b]0;PWNED\x07\x1b[2J\x9b31m"
RAW = ("\x1b", "\x07", "\x9b")


def hostile_report() -> Any:
    from clusterctl.report import ClusterReport, ProcessRow, WorkerRow

    return ClusterReport(
        cluster="t", scheduler_address="tcp://127.0.0.1:1", dashboard=None, scheduler_answers=True,
        workers=[WorkerRow(name=HOSTILE_NAME, host="[bold]h\x1b[5m", address="tcp://[/]:1", nthreads=1,
                           memory_limit=None, resources={"[blink]X": 1.0}, state="extra")],
        extra=[HOSTILE_NAME],
        processes=[ProcessRow(role="[red]w", name="[/]p\x1b[2J", host="[i]h", pid=2, alive=True, log="l\x07")])


def test_status_shows_markup_and_escape_sequences_from_the_scheduler_as_text(capsys: pytest.CaptureFixture[str]) -> None:
    import io

    from rich.console import Console

    from clusterctl import render

    render.cluster_report(hostile_report())  # plain: stdout is not a terminal
    plain = capsys.readouterr().out
    terminal = Console(file=io.StringIO(), force_terminal=True, color_system="truecolor", width=300)
    render.cluster_report(hostile_report(), terminal)
    rich = terminal.file.getvalue()  # type: ignore[attr-defined]
    for out in (plain, rich):
        assert "[/]evil\\x1b]0;PWNED\\x07\\x1b[2J\\x9b31m" in out
        assert "[blink]X=1" in out and "[bold]h" in out and "[red]w" in out and "[/]p" in out
        assert not any(c in out.replace("\x1b[", "") for c in RAW), repr(out)
    assert "\x1b[5m" not in rich  # no blink
    assert "\x1b]" not in rich and "\x1b[2J" not in rich


def test_errors_log_tails_and_log_lines_are_printed_as_text(capsys: pytest.CaptureFixture[str]) -> None:
    from clusterctl import render
    from clusterctl.commands.logs import LogLines, LogStream
    from clusterctl.records import ProcessRecord

    render.error("w1: [/]died\x1b[2J", "see [bold]x\x07", "tail line 1\x1b]0;PWNED\x07\n\ttab kept")
    render.internal_error("ValueError: [/]\x1b[2J", "/tmp/crash.log")
    record = ProcessRecord(role="scheduler", name="scheduler", host="me", pid=2, start_time=1, log="x")

    class Replay(LogStream):
        def __iter__(self) -> Any:
            yield LogLines("scheduler", "me", lines=[f"Register worker name: {HOSTILE_NAME}", "a\tb"])

    render.log_stream(Replay("t", [record], lines=10, follow=False))
    out, err = capsys.readouterr()
    for text in (out, err):
        assert not any(c in text for c in RAW), repr(text)
    assert "error: w1: [/]died\\x1b[2J" in err and "hint: see [bold]x\\x07" in err
    assert "tail line 1\\x1b]0;PWNED\\x07\n" in err and "tab kept" in err  # rich expands the tab
    assert "internal error: ValueError: [/]\\x1b[2J" in err
    assert "Register worker name: [/]evil\\x1b]0;PWNED\\x07\\x1b[2J\\x9b31m\na\tb\n" in out


def test_a_worker_named_with_markup_and_escapes_breaks_neither_status_nor_logs(tmp_path: Path) -> None:
    config = write_inventory(tmp_path / "c.yaml", local_inventory(workers=[{"name": "w1", "host": "me"}]))
    up = clusterctl("up", str(config), "--json")
    assert up.exit_code == 0, up.stderr
    intruder = subprocess.Popen(
        [PYTHON, "-m", "distributed.cli.dask_worker", up.json()["scheduler"]["address"], "--name", HOSTILE_NAME,
         "--resources", "[blink]X=1", "--nthreads", "1", "--no-nanny", "--no-dashboard"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        from tests.helpers.cluster import wait_until

        assert wait_until(lambda: "evil" in clusterctl("status", "--json").stdout, timeout=60)
        status = clusterctl("status", "--processes")
        assert status.exit_code == 0, status.stderr
        assert "[/]evil\\x1b]0;PWNED\\x07\\x1b[2J" in status.stdout and "[blink]X=1" in status.stdout
        logs = clusterctl("logs", "scheduler", "-n", "500")
        assert logs.exit_code == 0, logs.stderr
        assert "evil\\x1b]0;PWNED" in logs.stdout
        for out in (status.stdout, status.stderr, logs.stdout, logs.stderr):
            assert not any(c in out for c in RAW), repr(out)
    finally:
        intruder.kill()
        intruder.wait()
        assert clusterctl("down", str(config)).exit_code == 0


# --- a hostile host: its answers and its output -------------------------------------------------


def hostile_python(tmp_path: Path, op: str, script: str) -> str:
    """A host `python:` that answers ``op`` with what ``script`` (python) writes, and runs the real
    agent for every other request: a compromised host, or a shell profile that talks too much.

    It speaks the agent's protocol: one JSON request per line; after a request with ``hold`` (`up`'s
    check) the next one (the start) comes on the same input."""
    path = tmp_path / f"hostile-{op}.py"
    path.write_text(f"#!{PYTHON}\nimport json, subprocess, sys\nline = sys.stdin.readline()\n"
                    "while line.strip():\n"
                    f"    if json.loads(line)['op'] == {op!r}:\n"
                    + "".join(f"        {text}\n" for text in script.splitlines())
                    + "        sys.exit(0)\n"
                    f"    done = subprocess.run([{PYTHON!r}, *sys.argv[1:]], input=line.encode())\n"
                    "    if done.returncode or not json.loads(line).get('hold'):\n"
                    "        sys.exit(done.returncode)\n"
                    "    line = sys.stdin.readline()\n")
    path.chmod(0o755)
    return str(path)


def two_hosts(tmp_path: Path, bad_python: str) -> Path:
    inventory = local_inventory(workers=[{"name": "w1", "host": "me"}, {"name": "w2", "host": "bad"}])
    inventory["hosts"]["bad"] = {"connection": "local", "python": bad_python}
    return write_inventory(tmp_path / "c.yaml", inventory)


ANSWERS = {
    "errors is a number": {"errors": 5},
    "errors is text": {"errors": "distributed"},
    "a list where text is expected": {"python": [1], "dask": "1"},
    "a list instead of an object": [],
}


@pytest.mark.parametrize("case", ANSWERS)
def test_check_reports_a_malformed_answer_as_a_failure_of_that_host_alone(case: str, tmp_path: Path) -> None:
    bad = hostile_python(tmp_path, "versions", f"print('CLUSTERCTL-AGENT ' + json.dumps({ANSWERS[case]!r}))")
    result = clusterctl("check", str(two_hosts(tmp_path, bad)))
    assert result.exit_code == 1, result.stderr
    assert "internal error" not in result.stderr
    assert "✗ bad: python: the agent's answer to 'versions' is" in result.stdout, result.stdout
    assert "✗ 1 check(s) failed on 1 of 2 host(s)" in result.stdout


@pytest.mark.parametrize("answer", ["[" * 200_000, "{not json", '{"processes": [{"name": "w2", "pid": 0, "log": "x"}]}',
                                    '{"processes": [{"name": "w2", "pid": "12", "log": "x"}]}', '{"processes": {}}'])
def test_up_reports_a_hostile_start_answer_for_that_host_and_down_cleans_up(answer: str, tmp_path: Path) -> None:
    bad = hostile_python(tmp_path, "start", f"print('CLUSTERCTL-AGENT ' + {answer!r})")
    config = two_hosts(tmp_path, bad)
    result = clusterctl("up", str(config))
    assert result.exit_code == 1, result.stderr
    assert "internal error" not in result.stderr
    assert "bad: the agent's answer to 'start' is" in result.stderr and "(succeeded on me)" in result.stderr
    assert clusterctl("down", str(config)).exit_code == 0


def test_endless_output_before_the_answer_is_cut_off_not_read_into_memory(tmp_path: Path) -> None:
    bad = hostile_python(tmp_path, "versions", "junk = b'x' * (1 << 20) + b'\\n'\nfor _ in range(100):\n"
                                               "    sys.stdout.buffer.write(junk)\n"
                                               "print('CLUSTERCTL-AGENT ' + json.dumps({'python': '3'}))")
    result = clusterctl("check", str(two_hosts(tmp_path, bad)))
    assert result.exit_code == 1, result.stderr
    assert "✗ bad: python: " in result.stdout and "wrote more than 64 MiB of output" in result.stdout, result.stdout


@pytest.mark.ssh
def test_an_ssh_command_that_writes_without_end_is_cut_off(sshd: Any, ssh_env: Any) -> None:
    import time

    from clusterctl.errors import HostError
    from clusterctl.inventory import HostSettings
    from clusterctl.transport.ssh import SSHTransport

    started = time.monotonic()
    with SSHTransport("web1", HostSettings(**sshd.host())) as transport, pytest.raises(HostError) as caught:
        transport.run(["sh", "-c", "yes 0123456789abcdef | head -c 200000000; echo 'CLUSTERCTL-AGENT {}'"], timeout=120)
    assert "wrote more than 64 MiB of output" in str(caught.value)
    assert time.monotonic() - started < 60


# --- a hostile inventory ------------------------------------------------------------------------

# A "billion laughs": 10 levels of 10 aliases each, 10**9 strings once expanded, all in `name`.
LAUGHS = ("name: [\n  &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol],\n"
          + "".join(f"  &a{i} [{', '.join([f'*a{i - 1}'] * 10)}],\n" for i in range(1, 10))
          + "]\nhosts: {me: {connection: local}}\nscheduler: {host: me}\nworkers: [{name: w, host: me}]\n")


@pytest.mark.parametrize("case", ["alias bomb", "deep flow nesting", "deep block nesting", "a huge value"])
def test_a_hostile_inventory_is_refused_with_exit_2_in_one_short_line(case: str, tmp_path: Path) -> None:
    import time

    text = {
        "alias bomb": LAUGHS,
        "deep flow nesting": "name: x\nhosts: " + "[" * 100_000 + "]" * 100_000 + "\n",
        "deep block nesting": "name: x\nhosts:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 400)),
        "a huge value": "name: x\nhosts: {me: {connection: local}}\nscheduler: {host: me}\n"
                        f"workers: [{{name: w, host: me, memory_limit: '{'9' * 1_000_000}X'}}]\n",
    }[case]
    config = tmp_path / "c.yaml"
    config.write_text(text)
    started = time.monotonic()
    result = clusterctl("check", str(config), timeout=30)
    assert result.exit_code == 2, result.stderr[:2000]
    assert time.monotonic() - started < 20
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and len(result.stderr) < 1000, result.stderr[:2000]
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr


# --- a tampered state file ----------------------------------------------------------------------


def plant_state(home: Path, directory: str, document: dict[str, Any]) -> Path:
    path = home / "clusters" / directory / "state.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))
    return path


def state_document(name: str, **changes: Any) -> dict[str, Any]:
    inventory = local_inventory(name=name, workers=[{"name": "w1", "host": "me"}])
    return {"name": name, "inventory": inventory, "config_path": None, "scheduler_address": "tcp://127.0.0.1:1",
            "dashboard_url": None, "processes": [], **changes}


@pytest.mark.parametrize("case", ["invalid inventory", "another cluster's name", "a path as name", "pid 0"])
def test_a_tampered_state_file_is_one_error_line_and_nothing_is_removed(case: str, clusterctl_home: Path) -> None:
    victim_dir = clusterctl_home / "victim"
    victim_dir.mkdir(parents=True)
    (victim_dir / "keep").write_text("x")
    record = {"role": "worker", "name": "w1", "host": "me", "pid": 0, "start_time": 1, "log": "x"}
    document = {
        "invalid inventory": state_document("t", inventory={"name": "t", "hosts": "[/]"}),
        "another cluster's name": state_document("other"),
        "a path as name": state_document("../victim"),
        "pid 0": state_document("t", processes=[record]),
    }[case]
    state_file = plant_state(clusterctl_home, "t", document)
    for command in (["status", "--cluster", "t"], ["down", "--cluster", "t"]):
        result = clusterctl(*command)
        assert result.exit_code == 1, result.stderr
        assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == [
            line for line in result.stderr.splitlines() if line.startswith("error: ") and str(state_file) in line]
        assert "internal error" not in result.stderr
    assert (victim_dir / "keep").exists() and state_file.exists()


def test_down_never_removes_a_path_outside_clusterctl_home(clusterctl_home: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "state.json").write_text(json.dumps(state_document("t")))
    (clusterctl_home / "clusters").mkdir(parents=True)
    (clusterctl_home / "clusters" / "t").symlink_to(outside)
    assert clusterctl("down", "--cluster", "../outside").exit_code == 2
    result = clusterctl("down", "--cluster", "t")
    assert result.exit_code == 0, result.stderr
    assert (outside / "state.json").exists()


# --- secrets in `up --dry-run` and `-v` ---------------------------------------------------------

SECRETS = ["s3cret-env", "s3cret-export", "s3cret-option", "s3cret-word", "s3cret-host"]


def secret_inventory(tmp_path: Path) -> Path:
    inventory = local_inventory(workers=[{
        "name": "w1", "host": "me", "env": {"DB_PASSWORD": "s3cret-env"},
        "setup": ["export SETUP_TOKEN=s3cret-export", ": mytool --password=s3cret-option", ": login --token s3cret-word"]}])
    inventory["hosts"]["me"]["setup"] = [": --api-key 's3cret-host'"]
    return write_inventory(tmp_path / "c.yaml", inventory)


def test_dry_run_masks_secrets_as_verbose_does(tmp_path: Path) -> None:
    config = secret_inventory(tmp_path)
    for output in ([], ["--json"]):
        result = clusterctl("up", str(config), "--dry-run", *output)
        assert result.exit_code == 0, result.stderr
        assert not [s for s in SECRETS if s in result.stdout + result.stderr], result.stdout
        assert "DB_PASSWORD=***" in result.stdout and "SETUP_TOKEN=***" in result.stdout
        assert "--password=***" in result.stdout and "--token ***" in result.stdout


def test_verbose_masks_secret_options_by_name_and_by_pattern(tmp_path: Path) -> None:
    config = secret_inventory(tmp_path)
    try:
        result = clusterctl("-v", "up", str(config))
        assert result.exit_code == 0, result.stderr
        assert "→ me:" in result.stderr
        assert not [s for s in SECRETS if s in result.stdout + result.stderr], result.stderr
        assert "--token ***" in result.stderr and "--api-key ***" in result.stderr
    finally:
        assert clusterctl("down", str(config)).exit_code == 0


# --- the dashboard tunnel, for this user alone ----------------------------------------------------


def http_over_unix_socket(path: str, url_path: str) -> str:
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(30)
        client.connect(path)
        client.sendall(f"GET {url_path} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
        answer = b""
        while chunk := client.recv(65536):
            answer += chunk
    return answer.decode(errors="replace")


@pytest.mark.ssh
def test_dashboard_socket_is_a_unix_socket_only_its_user_can_open(sshd: Any, ssh_env: Any, tmp_path: Path) -> None:
    import re
    import selectors
    import signal
    import stat

    from tests.helpers.cluster import free_port

    inventory = {
        "name": "dash", "defaults": {"python": PYTHON, "env": {"OMP_NUM_THREADS": "1"}},
        "hosts": {"node1": sshd.host(run_dir=str(tmp_path / "run"))},
        "scheduler": {"host": "node1", "port": free_port(), "dashboard_address": f":{free_port()}", "dashboard": "local"},
        "workers": [{"name": "w1", "host": "node1"}],
    }
    config = write_inventory(tmp_path / "c.yaml", inventory)
    up = clusterctl("up", str(config))
    assert up.exit_code == 0, up.stderr
    shared = Path(tempfile.mkdtemp(prefix="cctl-dash-"))
    shared.chmod(0o755)  # the other user may look, not write
    path = str(shared / "dash.sock")
    process = subprocess.Popen([PYTHON, "-m", "clusterctl", "dashboard", "--socket", path], stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            assert selector.select(60), process.stderr.read() if process.poll() is not None else "no line"
        line = process.stdout.readline()
        assert re.fullmatch(rf"dashboard: unix:{re.escape(path)}  \(Ctrl-C to close\)\n", line), line
        info = os.stat(path)
        assert stat.S_ISSOCK(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600 and info.st_uid == 0
        assert http_over_unix_socket(path, "/health").endswith("ok")
        other = subprocess.run(["setpriv", f"--reuid={OTHER}", f"--regid={OTHER}", "--clear-groups", PYTHON, "-c",
                                f"import socket; socket.socket(socket.AF_UNIX).connect({path!r})"],
                               capture_output=True, text=True)
        assert other.returncode != 0 and "Permission denied" in other.stderr
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 130
        assert not os.path.exists(path)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        shutil.rmtree(shared)
        assert clusterctl("down", str(config)).exit_code == 0


def test_the_local_transport_writes_no_file_through_a_symlink(tmp_path: Path) -> None:
    from clusterctl.errors import HostError
    from clusterctl.transport.local import LocalTransport

    target = victim(tmp_path)
    (tmp_path / "ca.pem").symlink_to(target)
    with pytest.raises(HostError, match="cannot write"):
        LocalTransport("me").put_file(str(tmp_path / "ca.pem"), b"planted", 0o600)
    assert target.read_text() == "precious\n" and target.stat().st_mode & 0o777 == 0o644
    LocalTransport("me").put_file(str(tmp_path / "key.pem"), b"k", 0o600)
    assert (tmp_path / "key.pem").stat().st_mode & 0o777 == 0o600
