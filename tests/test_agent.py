"""The host-side agent, driven as clusterctl drives it: through ``Host`` and the local transport.

Every process a test starts is recorded and killed by pid (its whole group) when the test ends,
pass or fail, and only while the pid still belongs to the process that was started.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from clusterctl.errors import HostError
from clusterctl.host import Host
from clusterctl.inventory import HostSettings
from clusterctl.launch import ProcessPlan
from clusterctl.records import ProcessRecord, StartFailure
from clusterctl.transport.local import LocalTransport
from testbed import proc
from tests.helpers.cluster import wait_until

PYTHON = sys.executable
SLEEP = "import time; time.sleep(60)"


class Started:
    """pid -> start time of every process a test started; all killed by pid at teardown."""

    def __init__(self) -> None:
        self.processes: dict[int, int | None] = {}

    def add(self, pid: int) -> None:
        self.processes.setdefault(pid, proc.start_time(pid))

    def record(self, answers: list[ProcessRecord | StartFailure]) -> list[ProcessRecord]:
        records = [answer for answer in answers if isinstance(answer, ProcessRecord)]
        for record in records:
            self.add(record.pid)
        assert len(records) == len(answers), answers
        return records

    def kill_all(self) -> None:
        for pid, start_time in self.processes.items():
            if start_time is None or proc.start_time(pid) != start_time:
                continue  # gone, or the pid now belongs to someone else
            for kill in (os.killpg, os.kill):
                try:
                    kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return tmp_path / "run"


@pytest.fixture
def started(run_dir: Path) -> Iterator[Started]:
    record = Started()
    try:
        yield record
    finally:
        # Also what the agent's pid files name, in case a test failed before it recorded a pid.
        for pid_file in run_dir.glob("*.pid"):
            try:
                found = json.loads(pid_file.read_text())
            except (OSError, ValueError):
                continue
            record.processes.setdefault(found["pid"], found.get("start_time"))
        record.kill_all()


@pytest.fixture
def make_host(run_dir: Path) -> Callable[..., Host]:
    def make(**settings: Any) -> Host:
        values = {"connection": "local", "python": PYTHON, "run_dir": str(run_dir), **settings}
        return Host("me", HostSettings(**values), "t", LocalTransport("me"))

    return make


@pytest.fixture
def host(make_host: Callable[..., Host]) -> Host:
    return make_host()


def plan(name: str, code: str, *args: str, env: dict[str, str] | None = None, setup: list[str] | None = None) -> ProcessPlan:
    return ProcessPlan(role="worker", name=name, host="me", argv=[PYTHON, "-c", code, *args], env=env or {},
                       setup=setup or [], worker_names=[name])


def start_one(host: Host, started: Started, process: ProcessPlan) -> ProcessRecord:
    (answer,) = started.record(host.start([process]))
    return answer


# --- start: data crosses as data -------------------------------------------------------------------

AWKWARD = {
    "SPACES": "two  words ",
    "QUOTES": """it's "quoted" \\ 'twice'""",
    "NEWLINES": "line one\nline two\n",
    "DOLLARS": "$HOME ${PATH} $1 $@",
}

DUMP_ENV_THEN_SLEEP = """
import json, os, sys, time
names = json.loads(sys.argv[2])
with open(sys.argv[1] + ".tmp", "w") as handle:
    json.dump({"env": {n: os.environ.get(n) for n in names}, "argv": sys.argv[3:]}, handle)
os.replace(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(60)
"""


@pytest.mark.parametrize("setup", [[], ["true"]], ids=["direct", "through-setup-shell"])
def test_env_and_argv_arrive_byte_for_byte_and_nothing_is_run_by_a_shell(
        host: Host, started: Started, tmp_path: Path, setup: list[str]) -> None:
    canary = tmp_path / "canary"
    env = {**AWKWARD, "SUBSTITUTION": f"$(touch {canary})", "BACKTICKS": f"`touch {canary}`; touch {canary}"}
    out = tmp_path / "seen.json"
    extra_args = list(env.values())

    answer = start_one(host, started, plan("w", DUMP_ENV_THEN_SLEEP, str(out), json.dumps(list(env)), *extra_args,
                                           env=env, setup=setup))

    assert wait_until(out.exists, timeout=15), host.tail(answer.log)
    seen = json.loads(out.read_text())
    assert seen["env"] == env
    assert seen["argv"] == extra_args
    assert not canary.exists()
    assert host.alive([answer]) == {answer.pid: True}


class CommandLineRecorder(LocalTransport):
    """The local transport, noting every command line it runs (what `ps` on the host would show)."""

    def __init__(self) -> None:
        super().__init__("me")
        self.command_lines: list[list[str]] = []

    def run(self, argv: list[str], *, stdin: bytes | None = None, timeout: float = 60.0):  # type: ignore[override]
        self.command_lines.append(list(argv))
        return super().run(argv, stdin=stdin, timeout=timeout)


def test_env_values_never_appear_on_a_command_line(run_dir: Path, started: Started, tmp_path: Path) -> None:
    recorder = CommandLineRecorder()
    host = Host("me", HostSettings(connection="local", python=PYTHON, run_dir=str(run_dir), setup=["true"]), "t",
                recorder)
    out = tmp_path / "seen.json"
    secret = "s3cret-token-value"
    answer = start_one(host, started, plan("w", DUMP_ENV_THEN_SLEEP, str(out), json.dumps(["API_TOKEN"]),
                                           env={"API_TOKEN": secret}))
    assert wait_until(out.exists, timeout=15), host.tail(answer.log)
    assert json.loads(out.read_text())["env"] == {"API_TOKEN": secret}
    assert recorder.command_lines and not any(secret in arg for argv in recorder.command_lines for arg in argv)
    cmdline = Path(f"/proc/{answer.pid}/cmdline").read_bytes()
    assert secret.encode() not in cmdline


def test_start_writes_pid_files_and_list_reports_them(host: Host, started: Started, run_dir: Path) -> None:
    first, second = started.record(host.start([plan("gpu2", SLEEP), plan("gpu1", SLEEP)]))

    assert sorted(os.listdir(run_dir)) == ["gpu1.log", "gpu1.pid", "gpu2.log", "gpu2.pid"]
    assert json.loads((run_dir / "gpu2.pid").read_text())["pid"] == first.pid
    assert stat_mode(run_dir) == 0o700 and stat_mode(run_dir / "gpu2.log") == 0o600
    assert first.log == str(run_dir / "gpu2.log")
    assert first.start_time == proc.start_time(first.pid)

    listed = {p.name: p for p in host.listing()}
    assert set(listed) == {"gpu1", "gpu2"}
    assert listed["gpu2"].pid == first.pid and listed["gpu1"].pid == second.pid
    assert listed["gpu2"].alive is True and listed["gpu2"].role == "worker"
    assert listed["gpu2"].worker_names == ["gpu2"]


def stat_mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_list_of_a_run_dir_that_does_not_exist_is_empty(host: Host) -> None:
    assert host.listing() == []


# --- alive and stop ------------------------------------------------------------------------------------

PARENT_WITH_CHILD = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
with open(sys.argv[1] + ".tmp", "w") as handle:
    handle.write(str(child.pid))
import os; os.replace(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(60)
"""


def test_stop_kills_the_whole_process_group(host: Host, started: Started, tmp_path: Path, run_dir: Path) -> None:
    child_pid_file = tmp_path / "child.pid"
    parent = start_one(host, started, plan("nanny", PARENT_WITH_CHILD, str(child_pid_file)))
    assert wait_until(child_pid_file.exists, timeout=15), host.tail(parent.log)
    child = int(child_pid_file.read_text())
    started.add(child)
    assert os.getpgid(child) == parent.pid  # the child is in the group the agent created
    assert proc.alive(parent.pid) and proc.alive(child)

    assert host.stop([replace(parent, name="nanny")], grace=5) == {parent.pid: True}

    assert wait_until(lambda: not proc.alive(parent.pid) and not proc.alive(child), timeout=5)
    assert host.alive([parent]) == {parent.pid: False}
    assert not (run_dir / "nanny.pid").exists()
    assert host.listing() == []


def test_stop_escalates_to_sigkill_after_the_grace_period(host: Host, started: Started, tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    stubborn = ("import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                "open(sys.argv[1], 'w').close(); time.sleep(60)")
    answer = start_one(host, started, plan("stubborn", stubborn, str(ready)))
    assert wait_until(ready.exists, timeout=15)

    began = time.monotonic()
    assert host.stop([replace(answer, name="stubborn")], grace=0.5) == {answer.pid: True}
    assert time.monotonic() - began < 10
    assert not proc.alive(answer.pid)


def test_a_pid_with_another_start_time_is_never_signalled(host: Host, started: Started) -> None:
    answer = start_one(host, started, plan("w", SLEEP))
    stranger = replace(answer, name="w", start_time=answer.start_time + 1)  # as if the pid were reused

    assert host.alive([stranger]) == {answer.pid: False}
    host.stop([stranger], grace=0.5)

    time.sleep(0.3)
    assert proc.alive(answer.pid), "stop signalled a process whose start time does not match the record"
    assert host.alive([answer]) == {answer.pid: True}
    assert host.alive([stranger]) == {answer.pid: False}
    os.killpg(answer.pid, signal.SIGKILL)  # our own clean-up, by pid
    assert wait_until(lambda: not proc.alive(answer.pid), timeout=5)


def test_alive_of_a_pid_that_no_longer_exists_is_false(host: Host, started: Started) -> None:
    answer = start_one(host, started, plan("quick", "pass"))
    assert wait_until(lambda: host.alive([answer]) == {answer.pid: False}, timeout=10)


# --- logs, setup lines and failures -------------------------------------------------------------------


def test_tail_returns_the_last_lines_of_a_log(host: Host, started: Started) -> None:
    answer = start_one(host, started, plan("chatty", "for i in range(1, 101): print('line', i)"))
    assert wait_until(lambda: "line 100" in host.tail(answer.log, 3), timeout=15)
    assert host.tail(answer.log, 3).splitlines() == ["line 98", "line 99", "line 100"]


def test_tail_of_a_missing_log_is_empty(host: Host, run_dir: Path) -> None:
    assert host.tail(str(run_dir / "absent.log")) == ""


def test_a_setup_line_that_exits_nonzero_stops_the_process_and_the_log_shows_it(host: Host, started: Started) -> None:
    answer = start_one(host, started, plan("w", "print('MAIN RAN', flush=True); " + SLEEP,
                                           setup=["echo activating env-that-is-missing; exit 3"]))

    assert wait_until(lambda: not host.alive([answer])[answer.pid], timeout=10)
    log = host.tail(answer.log, 20)
    assert "activating env-that-is-missing" in log
    assert "MAIN RAN" not in log


def test_a_failing_setup_command_stops_the_process(host: Host, started: Started) -> None:
    answer = start_one(host, started, plan("w", "print('MAIN RAN', flush=True); " + SLEEP,
                                           setup=["echo activating env-that-is-missing", "false"]))

    wait_until(lambda: not host.alive([answer])[answer.pid] or "MAIN RAN" in host.tail(answer.log), timeout=10)
    log = host.tail(answer.log, 20)
    assert "activating env-that-is-missing" in log
    assert "MAIN RAN" not in log
    assert not host.alive([answer])[answer.pid]


def test_a_failing_host_setup_command_is_a_host_error(make_host: Callable[..., Host]) -> None:
    with pytest.raises(HostError):
        make_host(setup=["false"]).versions()


def test_a_missing_interpreter_is_a_host_error_naming_the_host(make_host: Callable[..., Host], tmp_path: Path) -> None:
    with pytest.raises(HostError) as caught:
        make_host(python=str(tmp_path / "no-such-python")).versions()
    assert caught.value.host == "me" and caught.value.message.startswith("me: ")
    assert "no-such-python" in caught.value.message
    assert caught.value.hint and "python" in caught.value.hint


def test_a_missing_interpreter_behind_setup_lines_is_a_host_error(make_host: Callable[..., Host]) -> None:
    with pytest.raises(HostError) as caught:
        make_host(python="no-such-python3", setup=["true"]).versions()
    assert caught.value.host == "me" and "no-such-python3" in caught.value.message
    assert "not found" in caught.value.message and caught.value.hint


def test_a_process_whose_program_is_missing_is_reported_not_raised(host: Host, run_dir: Path) -> None:
    missing = ProcessPlan(role="worker", name="w", host="me", argv=["/nonexistent/python", "-V"])
    (answer,) = host.start([missing])
    assert isinstance(answer, StartFailure)
    assert answer.error.startswith("cannot run /nonexistent/python")
    assert not (run_dir / "w.pid").exists()


def test_versions_reports_this_interpreter(host: Host) -> None:
    import distributed

    found = host.versions()
    assert found["executable"] == PYTHON
    assert found["distributed"] == distributed.__version__


def test_versions_are_read_as_importlib_metadata_reads_them_without_importing_it(tmp_path: Path) -> None:
    """The fingerprint's versions, found along sys.path as importlib.metadata finds them: every
    distribution of this venv, names spelled any way, an egg-info file (as Debian's packages have
    them), one shadowed by an earlier sys.path entry, and one not installed."""
    import subprocess
    from importlib import metadata

    from clusterctl import agent

    site = tmp_path / "site"
    (site / "shadowed_pkg-9.9.dist-info").mkdir(parents=True)
    (site / "shadowed_pkg-9.9.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: shadowed-pkg\n"
                                                                  "Version: 9.9\n\nVersion: 0 (the body)\n")
    (site / "legacy_thing-1.2.egg-info").write_text("Metadata-Version: 1.1\nName: legacy-thing\nVersion: 1.2\n")
    later = tmp_path / "later"
    (later / "shadowed_pkg-1.0.dist-info").mkdir(parents=True)
    (later / "shadowed_pkg-1.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: shadowed-pkg\n"
                                                                   "Version: 1.0\n")
    names = sorted({d.metadata["Name"] for d in metadata.distributions()})
    names += ["Dask", "typing-extensions", "Shadowed.Pkg", "legacy_thing", "not-installed-anywhere"]
    code = ("import json, sys\nfrom importlib import metadata\nnames = json.loads(sys.argv[1])\n"
            "def version(name):\n    try:\n        return metadata.version(name)\n"
            "    except metadata.PackageNotFoundError:\n        return None\n"
            "print(json.dumps([{n: version(n) for n in names}, AGENT(tuple(names))]))\n")
    source = Path(agent.__file__).read_text().replace('if __name__ == "__main__":', "if False:")
    script = tmp_path / "compare.py"
    script.write_text(source + "\n" + code.replace("AGENT", "installed_versions"))
    done = subprocess.run([sys.executable, str(script), json.dumps(names)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": f"{site}:{later}"}, check=True)
    expected, found = json.loads(done.stdout)
    assert found == expected
    assert found["Shadowed.Pkg"] == "9.9" and found["legacy_thing"] == "1.2"
    assert found["not-installed-anywhere"] is None and found["Dask"] == metadata.version("dask")


def test_a_held_agent_starts_on_its_second_request_and_leaves_by_itself_when_its_input_ends(
        host: Host, started: Started, run_dir: Path) -> None:
    """`up`'s one command per host: the agent that answered the versions waits on the same input for the
    start, starts and watches; when the controller ends its input it leaves at once by itself (exit 0,
    not terminated: its output is still open), and what it started runs on."""
    host.hold_agent = True
    assert host.call("versions", packages=[])["python"]
    assert not list(run_dir.glob("*.pid")), "nothing starts before the start request"
    (record,), watch = host.start_watched([plan("held", "import time; time.sleep(60)")], 120)
    assert isinstance(record, ProcessRecord)
    started.record([record])
    agent = watch._stream._process  # type: ignore[attr-defined]  # the local agent's Popen
    watch.close()
    assert agent.poll() == 0, "the agent left when its input ended, not killed at the close"
    assert proc.start_time(record.pid) == record.start_time, "the started process runs on"


def test_a_held_agent_that_gets_no_start_ends_having_started_nothing(host: Host, run_dir: Path) -> None:
    host.hold_agent = True
    host.call("versions", packages=[])
    agent = host._held._process  # type: ignore[union-attr]  # the local agent's Popen
    host.release()
    assert agent.poll() == 0
    assert not list(run_dir.glob("*.pid"))
