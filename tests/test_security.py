"""Issue 6, "Secure by default", proven against real servers: TLS between every process and every
client (over a real sshd), the warning when a scheduler without TLS listens on a network, a dashboard
that listens only on its host's loopback and is reached through SSH (on the multi-host test bed), and
an SSH password that ends up in no file and no output.

Hostile inventory values (shell metacharacters and friends) are in tests/test_injection.py; so is
`security: {tls: {ca_file, cert, key}}` with the user's own files, which that module's real cluster
uses under file names full of shell syntax.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import shlex
import signal
import socket
import ssl
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from distributed import Client
from distributed.comm import get_address_host as address_host
from distributed.security import Security

from clusterctl import tls
from testbed import Testbed
from testbed.client_env import SshEnv
from testbed.sshd import free_port
from tests.helpers.bed_cluster import BedCluster
from tests.helpers.browser import CHROMIUM, Browser
from tests.helpers.cluster import (
    PYTHON,
    REPO,
    WORKER_ENV,
    CliResult,
    Running,
    clusterctl,
    error_lines,
    is_running,
    local_inventory,
    warning_lines,
    write_inventory,
)
from tests.helpers.fixtures import PasswordUser, SshdTestBed

REMOTE_TLS_FILES = {"ca.pem", "scheduler.pem", "scheduler-key.pem", "worker.pem", "worker-key.pem"}
LOCAL_TLS_FILES = REMOTE_TLS_FILES | {"client.pem", "client-key.pem"}
FIX = "security: {tls: auto}"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def recorded(home: Path, cluster: str) -> list[dict[str, Any]]:
    return json.loads((home / "clusters" / cluster / "state.json").read_text())["processes"]


def ssh_cluster(sshd: SshdTestBed, name: str, run_dir: Path, **sections: Any) -> dict[str, Any]:
    """One SSH host (the session's sshd), the scheduler and one single-threaded worker on it."""
    return {
        "name": name,
        "defaults": {"python": PYTHON, "env": WORKER_ENV},
        "hosts": {"node1": sshd.host(run_dir=str(run_dir))},
        "scheduler": {"host": "node1", "port": free_port(), "dashboard_address": None},
        "workers": [{"name": "w1", "host": "node1"}],
        **sections,
    }


def first_byte_over_tls(address: str, ca_file: str, cert: str | None = None, key: str | None = None) -> bytes:
    """Open a TLS connection to a dask address as a bare client and read the first byte the server sends.

    The scheduler speaks first once it accepts a client, so a byte means "let in"; an SSL alert, a
    reset or EOF means "refused".
    """
    host, port = address_host(address), int(address.rsplit(":", 1)[1])
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    if cert is not None:
        context.load_cert_chain(cert, key)
    with socket.create_connection((host, port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname=host) as connection:
        return connection.recv(1)


def refused_over_tls(address: str, ca_file: str, cert: str | None = None, key: str | None = None) -> str:
    """Why the TLS connection was refused ('' if it was let in)."""
    try:
        return "" if first_byte_over_tls(address, ca_file, cert, key) else "closed without a byte"
    except (ssl.SSLError, ConnectionError) as exc:
        return f"{type(exc).__name__}: {exc}"


def make_own_ca(directory: Path, cluster: str) -> tls.TlsFiles:
    """A CA and a certificate/key pair that is not the cluster's (clusterctl's own generator, elsewhere)."""
    directory.mkdir(parents=True, exist_ok=True)
    tls.generate(directory, cluster, ["127.0.0.1"])
    return tls.local_files(directory, "client")


def shell_with_env_runs_a_task(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`eval "$(clusterctl env)"`, then a plain `Client()` in that shell runs a task."""
    script = (f'eval "$({shlex.quote(PYTHON)} -m clusterctl env)" && '
              f'{shlex.quote(PYTHON)} -c "from distributed import Client; '
              f'c = Client(timeout=30); print(c.submit(sum, [1, 2, 3]).result(timeout=30)); c.close()"')
    clean = {k: v for k, v in env.items() if not k.startswith("DASK_")}
    return subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, timeout=90, env=clean,
                          stdin=subprocess.DEVNULL)


# ---- TLS over a real sshd ----------------------------------------------------------------------------


@pytest.mark.ssh
def test_tls_auto_over_ssh_up_status_grow_shrink_down_and_only_our_clients_get_in(
        sshd: SshdTestBed, ssh_env: SshEnv, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    config = write_inventory(tmp_path / "c.yaml", ssh_cluster(sshd, "sec-tls", run_dir, security={"tls": "auto"}))
    home = ssh_env.clusterctl_home
    try:
        started = clusterctl("up", str(config), "--json")
        assert started.exit_code == 0, started.stderr
        address = started.json()["scheduler"]["address"]
        assert address.startswith("tls://127.0.0.1:"), address
        assert warning_lines(started.stderr) == [], "TLS on, loopback: nothing to warn about"

        # The host got the scheduler's and the workers' pairs and the CA, private to the ssh user;
        # the client's pair and the CA key never leave this machine (the CA key is not even kept).
        remote = run_dir / "tls"
        assert mode(remote) == 0o700
        assert {p.name for p in remote.iterdir()} == REMOTE_TLS_FILES
        assert {p.name: mode(p) for p in remote.iterdir()} == dict.fromkeys(REMOTE_TLS_FILES, 0o600)
        local = home / "clusters" / "sec-tls" / "tls"
        assert mode(home) == mode(local) == 0o700
        assert {p.name: mode(p) for p in local.iterdir()} == dict.fromkeys(LOCAL_TLS_FILES, 0o600)
        for name in REMOTE_TLS_FILES:
            assert (remote / name).read_bytes() == (local / name).read_bytes(), name

        status = clusterctl("status", "--json")
        assert status.exit_code == 0, status.stderr
        assert status.json()["scheduler"]["address"] == address and status.json()["healthy"]

        # Who gets in: our client pair does; no certificate, a certificate of another CA, or a
        # server check against another CA do not.
        client = tls.local_files(local, "client")
        assert refused_over_tls(address, client.ca_file, client.cert, client.key) == "", "the control case"
        assert refused_over_tls(address, client.ca_file) != "", "a client without a certificate got in"
        foreign = make_own_ca(tmp_path / "foreign-ca", "foreign")
        assert refused_over_tls(address, client.ca_file, foreign.cert, foreign.key) != "", \
            "a client certificate from another CA got in"
        with pytest.raises(ssl.SSLCertVerificationError):
            first_byte_over_tls(address, foreign.ca_file, foreign.cert, foreign.key)
        # The same as a dask user sees it: plain TCP is reset, a foreign certificate never gets an answer.
        with pytest.raises(OSError):
            Client(address.replace("tls://", "tcp://"), timeout=3)
        with pytest.raises((OSError, TimeoutError)):
            Client(address, timeout=3, security=Security(tls_ca_file=foreign.ca_file, tls_client_cert=foreign.cert,
                                                          tls_client_key=foreign.key, require_encryption=True))
        # `clusterctl env` is all a plain Client() needs.
        exports = clusterctl("env")
        assert exports.exit_code == 0, exports.stderr
        assert f"export DASK_SCHEDULER_ADDRESS={address}" in exports.stdout.splitlines()
        shell = shell_with_env_runs_a_task(dict(os.environ))
        assert shell.returncode == 0, shell.stderr[-2000:]
        assert shell.stdout.strip().splitlines()[-1] == "6"

        # Growing and shrinking speak TLS too; our client watches the scheduler meanwhile.
        with Client(address, timeout=30, security=Security(
                tls_ca_file=client.ca_file, tls_client_cert=client.cert, tls_client_key=client.key,
                require_encryption=True)) as ours:
            added = clusterctl("add-worker", "--host", "node1", "--name", "extra", "--json")
            assert added.exit_code == 0, added.stderr
            assert {w["name"] for w in added.json()["workers"]} == {"w1", "extra"}
            processes = recorded(home, "sec-tls")
            assert ours.submit(sum, [1, 2], pure=False, workers=["extra"]).result(timeout=30) == 3
            removed = clusterctl("remove-worker", "extra")
            assert removed.exit_code == 0, removed.stderr
            assert [w["name"] for w in ours.scheduler_info()["workers"].values()] == ["w1"]
    finally:
        down = clusterctl("down")
    assert down.exit_code == 0, down.stderr
    assert {p["name"] for p in processes} == {"scheduler", "w1", "extra"}
    assert not any(is_running(p) for p in processes)
    assert not (home / "clusters" / "sec-tls").exists(), "down forgets the cluster, its TLS files too"


@pytest.mark.ssh
def test_tls_auto_on_ssh_hosts_with_every_default_up_runs_a_task_and_down(
        sshd_factory: Any, sshd_client_key: tuple[Path, str], ssh_env: SshEnv, tmp_path: Path) -> None:
    """The README's TLS quickstart as a user types it: two SSH hosts with no run_dir, default ports,
    the default host-key policy (the keys in ~/.ssh/known_hosts). `~` in the default run_dir is the
    host's home, and must never reach `dask scheduler --tls-ca-file` literally."""
    remote_home = tmp_path / "remote-home"
    remote_home.mkdir()
    # Its own loopback address, so the default ports (8786, 8787) are its own too.
    address = f"127.0.{os.getpid() % 250 + 2}.{secrets_byte()}"
    server = sshd_factory(address=address, extra_config=f"SetEnv HOME={remote_home}")
    (ssh_env.home / ".ssh").mkdir(exist_ok=True)
    (ssh_env.home / ".ssh" / "known_hosts").write_text(server.known_hosts_line())
    host = {"address": address, "port": server.port, "user": "root", "identity_file": str(sshd_client_key[0])}
    config = write_inventory(tmp_path / "c.yaml", {
        "name": "sec-defaults",
        "defaults": {"python": PYTHON, "env": WORKER_ENV},
        "hosts": {"node1": host, "node2": dict(host)},
        "scheduler": {"host": "node1"},
        "workers": [{"name": "w1", "host": "node1"}, {"name": "w2", "host": "node2"}],
        "security": {"tls": "auto"},
    })
    run_dir = remote_home / ".clusterctl" / "sec-defaults"
    try:
        started = clusterctl("up", str(config), "--json")
        assert started.exit_code == 0, started.stderr
        assert started.json()["scheduler"]["address"] == f"tls://{address}:8786"
        assert (run_dir / "tls" / "ca.pem").is_file() and (run_dir / "scheduler.pid").is_file()
        status = clusterctl("status", "--json")
        assert status.exit_code == 0 and status.json()["healthy"], status.stderr
        assert shell_with_env_runs_a_task(dict(os.environ)).stdout.strip().splitlines()[-1] == "6"
    finally:
        down = clusterctl("down")
    assert down.exit_code == 0, down.stderr
    assert not list(run_dir.glob("*.pid"))


def secrets_byte() -> int:
    import secrets

    return secrets.randbelow(250) + 2


# ---- a scheduler port taken by a server that speaks first, in plain text ---------------------------------


@contextlib.contextmanager
def plain_text_server(port: int) -> Iterator[None]:
    """A thread listening on 127.0.0.1:``port`` that greets every connection in plain text at once,
    as a plain-TCP dask scheduler (or an SSH server) does."""
    import threading

    server = socket.create_server(("127.0.0.1", port))
    connections: list[socket.socket] = []

    def serve() -> None:
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return  # closed
            connections.append(connection)
            with contextlib.suppress(OSError):
                connection.sendall(b"\x00" * 64)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); close() alone would not
        server.close()
        for connection in connections:
            connection.close()
        thread.join(5)


@pytest.mark.ssh
def test_tls_up_on_a_port_taken_by_a_plain_text_server_is_one_error_line(
        sshd: SshdTestBed, ssh_env: SshEnv, tmp_path: Path) -> None:
    inventory = ssh_cluster(sshd, "sec-taken", tmp_path / "run", security={"tls": "auto"}, workers=[])
    with plain_text_server(inventory["scheduler"]["port"]):
        result = clusterctl("up", str(write_inventory(tmp_path / "c.yaml", inventory)), "--timeout", "15")
    assert result.exit_code == 1, result.stderr
    assert len(error_lines(result.stderr)) == 1, result.stderr
    assert not list((tmp_path / "run").glob("*.pid")), "what up started, it stopped"


# ---- an SSH password stays secret -----------------------------------------------------------------------


def python_for(user: PasswordUser) -> tuple[str, str] | str:
    """(python, PYTHONPATH) that give ``user`` an interpreter with distributed, or why there is none.

    This venv's python lives under /root (0700): other users cannot run it. The system's python of the
    same version can import this venv's packages when they are put on its path; that changes no file.
    """
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    site_packages = Path(PYTHON).parent.parent / "lib" / f"python{version}" / "site-packages"
    for python, path in [(PYTHON, str(REPO)), (f"/usr/bin/python{version}", f"{site_packages}:{REPO}")]:
        probe = subprocess.run(["runuser", "-u", user.name, "--", "env", f"PYTHONPATH={path}", python, "-c",
                                "import distributed"],
                               capture_output=True, text=True, timeout=60, cwd="/")
        if probe.returncode == 0:
            return python, path
    return (f"{user.name} cannot run a python with distributed: {PYTHON} is under a directory other users "
            f"cannot enter, and /usr/bin/python{version} cannot import this venv's packages")


def files_containing(root: Path, secret: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and secret in p.read_bytes()]


@pytest.mark.ssh
def test_a_password_from_the_environment_is_used_and_leaks_nowhere(
        sshd: SshdTestBed, ssh_env: SshEnv, password_user: PasswordUser, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    found = python_for(password_user)
    if isinstance(found, str):
        pytest.skip(found)
    python, python_path = found
    run_dir = password_user.home / "sec-password-run"  # the user's own: the fixture's run dir is root's
    # No identity_file, no agent, no keys in the (isolated) ~/.ssh: only the password can log in.
    host = {"address": sshd.server.address, "port": sshd.server.port, "user": password_user.name,
            "run_dir": str(run_dir), "python": python, "env": {**WORKER_ENV, "PYTHONPATH": python_path},
            # The agent needs the packages too (for its version check); setup lines are its only shell code.
            "setup": [f"export PYTHONPATH={shlex.quote(python_path)}"]}
    config = write_inventory(tmp_path / "c.yaml", {
        "name": "sec-password", "security": {"tls": "auto"}, "hosts": {"node1": host},
        "scheduler": {"host": "node1", "port": free_port(), "dashboard_address": None},
        "workers": [{"name": "w1", "host": "node1"}],
    })
    secret, wrong = password_user.password, "wrong-" + password_user.password[::-1]
    outputs: list[CliResult] = []
    # A password goes only to a host whose key is already known (tests/test_ssh_openssh.py shows the refusal).
    ssh_env.clusterctl_home.mkdir(mode=0o700, exist_ok=True)
    known = os.open(ssh_env.known_hosts, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(known, sshd.server.known_hosts_line().encode())
    os.close(known)

    monkeypatch.setenv("CLUSTERCTL_SSH_PASSWORD", wrong)
    refused = clusterctl("up", str(config))
    outputs.append(refused)
    assert refused.exit_code == 1
    assert error_lines(refused.stderr) == [f"error: node1: authentication failed for user {password_user.name}"]

    monkeypatch.setenv("CLUSTERCTL_SSH_PASSWORD", secret)
    home = ssh_env.clusterctl_home
    try:
        for args in (["-v", "up", str(config), "--dry-run"], ["-v", "up", str(config)],
                     ["-v", "status", "--processes"], ["env"]):
            outputs.append(clusterctl(*args))
            assert outputs[-1].exit_code == 0, (args, outputs[-1].stderr)
        processes = recorded(home, "sec-password")
        scheduler = next(p for p in processes if p["role"] == "scheduler")
        environ = Path(f"/proc/{scheduler['pid']}/environ").read_bytes()
        assert secret.encode() not in environ, "the password reached the scheduler's environment"
        assert Path(f"/proc/{scheduler['pid']}").stat().st_uid != 0, "it runs as the password user"
        # While the cluster runs: private files in a private directory.
        assert mode(home) == 0o700
        assert mode(home / "clusters" / "sec-password" / "state.json") == 0o600
        keys = list((home / "clusters" / "sec-password" / "tls").glob("*-key.pem"))
        assert len(keys) == 3 and all(mode(key) == 0o600 for key in keys)
        assert mode(home / "known_hosts") == 0o600
    finally:
        outputs.append(clusterctl("down"))
    assert outputs[-1].exit_code == 0, outputs[-1].stderr
    assert not any(is_running(p) for p in processes)

    for result in outputs:
        for text in (result.stdout, result.stderr):
            assert secret not in text and wrong not in text
    assert files_containing(home, secret.encode()) == []
    assert files_containing(home, wrong.encode()) == []
    assert list(run_dir.glob("*.log")), "the remote logs are there to check"
    assert files_containing(run_dir, secret.encode()) == []
    assert secret not in sshd.server.log()


# ---- exposure and a loopback-only dashboard, on the multi-host test bed ------------------------------

# Every bed host has ports of its own; these stay clear of other modules' 8786, and of each other,
# since this module's two bed clusters both run their schedulers on h1 at the same time.
EXPOSED_PORT = 28786
PRIVATE_PORT = 28796
PRIVATE_DASHBOARD_PORT = 28797


@dataclass
class StartedCluster(BedCluster):
    """A cluster of this module on the bed, with its own CLUSTERCTL_HOME, and what `up --json` said."""

    started: CliResult


@contextlib.contextmanager
def bed_cluster(bed: Testbed, base: Path, name: str, **sections: Any) -> Iterator[StartedCluster]:
    """Scheduler on h1, one worker on h2; brought up with `up --json` (whatever it says), down at the end."""
    scheduler = {"host": "h1", "dashboard_address": None, **sections.pop("scheduler")}
    cluster = BedCluster.write(bed, base, name, SshEnv.under(base), scheduler=scheduler,
                               workers=[{"name": "w1", "host": "h2"}], **sections)
    try:
        started = cluster.cli("up", str(cluster.config), "--json")
        if started.exit_code != 0:
            pytest.fail(f"clusterctl up failed ({started.exit_code}):\n{started.stderr}")
        yield StartedCluster(**vars(cluster), started=started)
    finally:
        cluster.tear_down("--grace", "3")


@pytest.fixture(scope="module")
def exposed(testbed: Testbed, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartedCluster]:
    """TLS off, the scheduler on h1's bridge address: anyone on the bridge can reach it."""
    with bed_cluster(testbed, tmp_path_factory.mktemp("exposed"), "sec-exposed",
                     scheduler={"port": EXPOSED_PORT}) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def private_dashboard(testbed: Testbed, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartedCluster]:
    """TLS on, and the dashboard bound to h1's loopback."""
    with bed_cluster(testbed, tmp_path_factory.mktemp("private"), "sec-private", security={"tls": "auto"},
                     scheduler={"port": PRIVATE_PORT, "dashboard": "local",
                                "dashboard_address": f":{PRIVATE_DASHBOARD_PORT}"}) as cluster:
        yield cluster


@pytest.mark.netns
def test_tls_off_on_a_network_address_warns_once_naming_the_fix(exposed: StartedCluster) -> None:
    address = f"{exposed.bed.host('h1').address}:{EXPOSED_PORT}"
    assert exposed.started.json()["scheduler"]["address"] == f"tcp://{address}"
    warnings = warning_lines(exposed.started.stderr)
    assert len(warnings) == 1, exposed.started.stderr
    assert address in warnings[0] and FIX in warnings[0] and "clusterctl up --restart" in warnings[0]


@pytest.mark.netns
def test_tls_off_warns_in_the_human_output_too(exposed: StartedCluster) -> None:
    again = exposed.cli("up", str(exposed.config))  # already running: reconciles, starts nothing
    assert again.exit_code == 0, again.stderr
    warnings = warning_lines(again.stderr)
    assert len(warnings) == 1 and FIX in warnings[0], again.stderr


@pytest.mark.netns
def test_tls_on_does_not_warn(private_dashboard: StartedCluster) -> None:
    started = private_dashboard.started
    assert started.json()["scheduler"]["address"] == \
        f"tls://{private_dashboard.bed.host('h1').address}:{PRIVATE_PORT}"
    assert warning_lines(started.stderr) == []


def test_a_local_loopback_cluster_does_not_warn(tmp_path: Path) -> None:
    config = write_inventory(tmp_path / "c.yaml", local_inventory(name="sec-loopback", workers=[]))
    try:
        started = clusterctl("up", str(config), "--json")
        assert started.exit_code == 0, started.stderr
        assert started.json()["scheduler"]["address"].startswith("tcp://127.0.0.1:")
        assert warning_lines(started.stderr) == []
    finally:
        down = clusterctl("down")
    assert down.exit_code == 0, down.stderr


def http_get(url: str) -> tuple[int, str]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # straight to 127.0.0.1
    with opener.open(url, timeout=60) as response:
        return response.status, response.read().decode(errors="replace")


@pytest.mark.netns
def test_a_local_dashboard_is_reached_only_through_clusterctl_dashboard(private_dashboard: StartedCluster) -> None:
    bed, h1 = private_dashboard.bed, private_dashboard.bed.host("h1").address
    # Not from the network: nothing listens on h1's bridge address...
    with pytest.raises(OSError):
        socket.create_connection((h1, PRIVATE_DASHBOARD_PORT), timeout=3).close()
    # ...while on h1 itself the dashboard answers on loopback.
    inside = bed.run_in("h1", [PYTHON, "-c", "import socket; socket.create_connection(('127.0.0.1', "
                                             f"{PRIVATE_DASHBOARD_PORT}), 5).close()"])
    assert inside.returncode == 0, inside.stderr

    dashboard = Running("dashboard", "--cluster", private_dashboard.name, env=private_dashboard.env.variables())
    try:
        assert dashboard.wait_for(dashboard.stdout, bool, timeout=60), dashboard.stderr
        line = dashboard.stdout[0]
        match = re.fullmatch(r"dashboard: (http://127\.0\.0\.1:(\d+)/status)  \(Ctrl-C to close\)", line)
        assert match, (line, dashboard.stderr)
        base = match.group(1).removesuffix("/status")
        assert http_get(base + "/health") == (200, "ok")
        status, page = http_get(base + "/status")
        assert status == 200 and "<html" in page.lower()
        assert dashboard.interrupt(timeout=30) == 130
    finally:
        dashboard.kill()


ARTIFACTS = REPO / "test-artifacts"  # screenshots a person can look at after the run (git ignores it)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no chromium (`make test` installs it as root)")
# What bokeh's JavaScript builds in the dashboard page: its document roots and figures.
RENDERED = "document.querySelectorAll('[data-root-id]').length > 0 && !!document.querySelector('.bk-Figure')"


@pytest.mark.netns
@needs_chromium
def test_the_dashboard_renders_in_a_real_browser_through_the_tunnel(private_dashboard: StartedCluster,
                                                                    tmp_path: Path) -> None:
    dashboard = Running("dashboard", "--cluster", private_dashboard.name, env=private_dashboard.env.variables())
    browser = Browser(tmp_path / "chromium")
    try:
        assert dashboard.wait_for(dashboard.stdout, bool, timeout=60), dashboard.stderr
        browser.open(dashboard.stdout[0].split()[1])
        assert browser.wait_until(RENDERED, timeout=180), browser.evaluate("document.documentElement.outerHTML")
        html = browser.evaluate("document.documentElement.outerHTML")
        assert "Task Stream" in html and browser.evaluate("document.title") == "Dask: Status", html[:3000]
        ARTIFACTS.mkdir(exist_ok=True)
        shot = browser.screenshot(ARTIFACTS / "dashboard-through-tunnel.png")
        assert shot.stat().st_size > 10_000
        assert dashboard.interrupt(timeout=30) == 130
    finally:
        browser.close()
        dashboard.kill()


@pytest.mark.netns
@needs_chromium
def test_the_same_page_is_unreachable_without_the_tunnel(private_dashboard: StartedCluster, tmp_path: Path) -> None:
    h1 = private_dashboard.bed.host("h1").address
    browser = Browser(tmp_path / "chromium")
    try:
        browser.open(f"http://{h1}:{PRIVATE_DASHBOARD_PORT}/status")
        # Chromium shows its own error page, whose text carries the network error's name.
        assert browser.wait_until("document.body && document.body.innerText.includes('ERR_CONNECTION_REFUSED')",
                                  timeout=60), browser.evaluate("document.body.innerText")
        assert not browser.evaluate(RENDERED)
    finally:
        browser.close()


@pytest.mark.netns
def test_status_does_not_advertise_an_unreachable_local_dashboard(private_dashboard: StartedCluster) -> None:
    h1 = private_dashboard.bed.host("h1").address
    status = private_dashboard.cli("status", "--cluster", private_dashboard.name, "--json")
    assert status.exit_code == 0, status.stderr
    assert h1 not in (status.json()["scheduler"]["dashboard"] or "")


# The child makes the pty its controlling terminal (getpass reads /dev/tty), then runs clusterctl on it.
ON_A_TERMINAL = ("import os, sys; fd = os.open(sys.argv[1], os.O_RDWR); [os.dup2(fd, n) for n in (0, 1, 2)]; "
                 "os.execv(sys.argv[2], sys.argv[2:])")


def on_a_terminal(args: list[str], answer: str, timeout: float = 120) -> tuple[int, str]:
    """Run `clusterctl ARGS` on a pseudo-terminal, type ``answer`` at its password prompt; (exit code, screen)."""
    master, slave = os.openpty()
    process = subprocess.Popen([PYTHON, "-c", ON_A_TERMINAL, os.ttyname(slave), PYTHON, "-m", "clusterctl", *args],
                               start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    screen, answered = b"", False
    try:  # the slave stays open here too, so reading never fails before the child has opened it
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                screen += os.read(master, 4096)
                if not answered and b"SSH password:" in screen:
                    os.write(master, answer.encode() + b"\n")
                    answered = True
            elif process.poll() is not None:
                break
        return process.wait(timeout=30), screen.decode(errors="replace")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        os.close(master)
        os.close(slave)


@pytest.mark.ssh
def test_check_asks_for_the_ssh_password_on_a_terminal_like_up(
        sshd: SshdTestBed, ssh_env: SshEnv, password_user: PasswordUser, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`check` is the first command a newcomer runs: a host that takes only a password is asked for it."""
    found = python_for(password_user)
    if isinstance(found, str):
        pytest.skip(found)
    python, python_path = found
    host = {"address": sshd.server.address, "port": sshd.server.port, "user": password_user.name,
            "run_dir": str(password_user.home / "check-run"), "python": python,
            "setup": [f"export PYTHONPATH={shlex.quote(python_path)}"]}
    config = write_inventory(tmp_path / "c.yaml", {
        "name": "sec-check", "hosts": {"node1": host},
        "scheduler": {"host": "node1", "port": free_port(), "dashboard_address": None},
        "workers": [{"name": "w1", "host": "node1"}]})
    ssh_env.clusterctl_home.mkdir(mode=0o700, exist_ok=True)
    (ssh_env.clusterctl_home / "known_hosts").write_text(sshd.server.known_hosts_line())
    monkeypatch.delenv("CLUSTERCTL_SSH_PASSWORD", raising=False)

    code, screen = on_a_terminal(["check", str(config)], password_user.password)
    assert code == 0, screen
    assert "node1 SSH password:" in screen and password_user.password not in screen

    code, screen = on_a_terminal(["check", str(config)], "wrong-" + password_user.password)
    assert code == 1 and f"authentication failed for user {password_user.name}" in screen, screen
