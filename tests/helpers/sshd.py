"""Real OpenSSH servers for tests: a small library, and a pytest plugin with fixtures built on it.

``start_sshd`` runs ``/usr/sbin/sshd -D -e`` as root with a config, host key and
authorized_keys of its own in a work directory, optionally inside a network namespace, and
returns once the server listens. Servers are stopped by their PID, never by a name pattern.

Fixtures (registered through ``pytest_plugins = ["tests.helpers.sshd"]`` in tests/conftest.py):

- ``sshd`` (session): an ``SshdTestBed`` -- one server on 127.0.0.1, the client key it trusts,
  and ``host()`` which gives an inventory host entry for it.
- ``sshd_factory`` (function): ``start(**kwargs) -> Sshd`` for more servers (jump hosts, a
  restarted server with a new host key); each trusts the client key and is stopped at teardown.
- ``ssh_env`` (function): isolates HOME, CLUSTERCTL_HOME and the ssh config; no agent, no password.
- ``password_user`` (session): a throw-away local user with a password, deleted at teardown.

Tests that use them skip when sshd is not installed or the tests do not run as root.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

SSHD = Path("/usr/sbin/sshd")
PRIVSEP_DIR = Path("/run/sshd")  # sshd refuses to start without its privilege separation directory
START_TIMEOUT = 10.0


def unavailable_reason() -> str | None:
    """Why real sshd servers cannot run here, or None when they can."""
    if not SSHD.exists():
        return f"{SSHD} is not installed (apt-get install -y openssh-server)"
    if shutil.which("ssh-keygen") is None:
        return "ssh-keygen is not installed (apt-get install -y openssh-client)"
    if os.geteuid() != 0:
        return "sshd tests need root (sshd must switch users and bind its own host key)"
    return None


def make_client_key(directory: Path, name: str = "id_ed25519") -> tuple[Path, str]:
    """Generate an ed25519 key pair in ``directory``; return (private key path, public key line)."""
    directory.mkdir(parents=True, exist_ok=True)
    private = directory / name
    # A key left by an earlier run in the same directory (e.g. `make testbed` again) is replaced.
    private.unlink(missing_ok=True)
    private.with_name(name + ".pub").unlink(missing_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(private)], check=True)
    return private, private.with_name(name + ".pub").read_text().strip()


def free_port(address: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((address, 0))
        return int(probe.getsockname()[1])


@dataclass
class Sshd:
    """A running sshd. ``pid`` is the sshd process itself (also inside a network namespace)."""

    address: str
    port: int
    pid: int
    host_key_path: Path
    host_public_key: str  # "ssh-ed25519 AAAA..." as in a known_hosts line
    config_path: Path
    log_path: Path
    netns: str | None = None
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def known_hosts_name(self) -> str:
        """The name OpenSSH records this server under in known_hosts: ``[addr]:port`` unless port 22."""
        return self.address if self.port == 22 else f"[{self.address}]:{self.port}"

    def known_hosts_line(self) -> str:
        return f"{self.known_hosts_name} {self.host_public_key}\n"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds. Safe to call twice."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)
            if self._wait(timeout):
                break
        self._process = None

    def _wait(self, timeout: float) -> bool:
        if self._process is not None:  # our child: reap it, so no zombie is left behind
            try:
                self._process.wait(timeout)
                return True
            except subprocess.TimeoutExpired:
                return False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return True
            time.sleep(0.05)
        return False


def start_sshd(
    workdir: Path,
    *,
    address: str = "127.0.0.1",
    port: int | None = None,
    authorized_keys: list[str],
    netns: str | None = None,
    extra_config: str = "",
    host_key_path: Path | None = None,
) -> Sshd:
    """Start sshd on ``address:port`` with its files in ``workdir``; return once it listens.

    ``port=None`` picks a free port (22 inside a network namespace, which has ports of its own).
    ``host_key_path`` reuses an existing host key, e.g. to restart "the same" server; by default
    a new ed25519 key is generated. ``extra_config`` lines are put before the defaults, and
    sshd keeps the first value it reads, so they override them.
    """
    reason = unavailable_reason()
    if reason:
        raise RuntimeError(reason)
    workdir.mkdir(parents=True, exist_ok=True)
    PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
    if host_key_path is None:
        host_key_path = workdir / "ssh_host_ed25519_key"
        host_key_path.unlink(missing_ok=True)
        host_key_path.with_name(host_key_path.name + ".pub").unlink(missing_ok=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key_path)], check=True)
    public_fields = host_key_path.with_name(host_key_path.name + ".pub").read_text().split()
    authorized = workdir / "authorized_keys"
    authorized.write_text("".join(line.strip() + "\n" for line in authorized_keys))
    authorized.chmod(0o644)
    # A free port found now may be taken before sshd binds it; then try another one.
    for attempt in range(3):
        chosen = port if port is not None else (22 if netns else free_port(address))
        server = _launch(workdir, address, chosen, host_key_path, authorized, netns, extra_config)
        if server is not None:
            server.host_public_key = " ".join(public_fields[:2])
            return server
        if port is not None or attempt == 2:
            break
    log = (workdir / "sshd.log").read_text(errors="replace")
    raise RuntimeError(f"sshd did not start on {address}:{chosen}: {log.strip()[-2000:]}")


def _launch(workdir: Path, address: str, port: int, host_key: Path, authorized: Path, netns: str | None,
            extra_config: str) -> Sshd | None:
    config = workdir / "sshd_config"
    log_path = workdir / "sshd.log"
    pid_file = workdir / "sshd.pid"
    pid_file.unlink(missing_ok=True)
    config.write_text(f"""{extra_config.strip()}
ListenAddress {address}
Port {port}
HostKey {host_key}
PidFile {pid_file}
AuthorizedKeysFile {authorized}
StrictModes no
UsePAM no
PermitRootLogin yes
PubkeyAuthentication yes
PasswordAuthentication yes
KbdInteractiveAuthentication no
AllowTcpForwarding yes
Subsystem sftp internal-sftp
PrintMotd no
LogLevel VERBOSE
MaxStartups 100:30:200
MaxSessions 64
""")
    argv = [str(SSHD), "-D", "-e", "-f", str(config)]
    if netns:
        # `ip netns exec` execs the command without forking, so the child is sshd itself.
        argv = ["ip", "netns", "exec", netns, *argv]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    server = Sshd(address, port, process.pid, host_key, "", config, log_path, netns, process)
    # Readiness from sshd's own log line works the same inside a network namespace.
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if "Server listening on" in log_path.read_text(errors="replace"):
            with contextlib.suppress(OSError, ValueError):
                server.pid = int(pid_file.read_text())
            return server
        if process.poll() is not None:
            return None
        time.sleep(0.02)
    server.stop()
    return None


# ---------------------------------------------------------------------------------------------
# pytest fixtures


@dataclass
class SshdTestBed:
    """The session's sshd on 127.0.0.1 and the client key it trusts."""

    server: Sshd
    client_key: Path
    client_public_key: str
    run_dir: Path
    remote_home: Path  # $HOME of every session on this server: where a default run_dir `~/...` lands

    def host(self, **overrides: Any) -> dict[str, Any]:
        """An inventory ``hosts:`` entry that reaches this server as root with the client key.

        With the defaults a user relies on unless the test says otherwise: no ``run_dir`` (so
        `~/.clusterctl/<cluster>`, in ``remote_home``), the default host-key policy (the test
        writes ``known_hosts_line()`` to ~/.ssh/known_hosts, or passes ``host_key_policy``).
        """
        entry: dict[str, Any] = {
            "address": self.server.address,
            "port": self.server.port,
            "user": "root",
            "identity_file": str(self.client_key),
        }
        entry.update(overrides)
        return entry


@dataclass
class SshEnv:
    """Where the isolated test environment keeps clusterctl's and ssh's files."""

    home: Path  # $HOME: ~/.ssh/known_hosts and ~/.ssh/config live below it
    clusterctl_home: Path  # $CLUSTERCTL_HOME: clusterctl's own known_hosts
    ssh_config: Path  # $CLUSTERCTL_SSH_CONFIG (not created)

    @property
    def known_hosts(self) -> Path:
        return self.clusterctl_home / "known_hosts"


@dataclass
class PasswordUser:
    name: str
    password: str
    home: Path


def _require_sshd() -> None:
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def sshd_client_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    _require_sshd()
    return make_client_key(tmp_path_factory.mktemp("client-key"))


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory, sshd_client_key: tuple[Path, str]) -> Iterator[SshdTestBed]:
    key, public = sshd_client_key
    remote_home = tmp_path_factory.mktemp("remote-home")
    # Sessions get a home of their own, so a default run_dir (`~/.clusterctl/...`) stays in the test's files.
    server = start_sshd(tmp_path_factory.mktemp("sshd"), authorized_keys=[public],
                        extra_config=f"SetEnv HOME={remote_home}")
    try:
        yield SshdTestBed(server, key, public, tmp_path_factory.mktemp("run-dir"), remote_home)
    finally:
        server.stop()


@pytest.fixture
def sshd_factory(tmp_path: Path, sshd_client_key: tuple[Path, str]) -> Iterator[Callable[..., Sshd]]:
    """``start(**start_sshd_kwargs)``: another server trusting the client key, stopped at teardown."""
    started: list[Sshd] = []

    def start(**kwargs: Any) -> Sshd:
        kwargs.setdefault("authorized_keys", [sshd_client_key[1]])
        workdir = kwargs.pop("workdir", None) or tmp_path / f"sshd-{len(started)}"
        server = start_sshd(workdir, **kwargs)
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def ssh_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SshEnv:
    """Keep tests away from the real ~/.ssh, ssh-agent and clusterctl home."""
    env = SshEnv(tmp_path / "home", tmp_path / "clusterctl-home", tmp_path / "ssh_config")
    env.home.mkdir()
    monkeypatch.setenv("HOME", str(env.home))
    monkeypatch.setenv("CLUSTERCTL_HOME", str(env.clusterctl_home))
    monkeypatch.setenv("CLUSTERCTL_SSH_CONFIG", str(env.ssh_config))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    monkeypatch.delenv("CLUSTERCTL_SSH_PASSWORD", raising=False)
    return env


@pytest.fixture(scope="session")
def password_user() -> Iterator[PasswordUser]:
    """A local user that can only log in with a password (its name is unique to this session)."""
    _require_sshd()
    if shutil.which("useradd") is None or shutil.which("chpasswd") is None:
        pytest.skip("useradd/chpasswd are not installed")
    name = f"cctl-test-{os.getpid()}"
    password = "pw-" + secrets.token_urlsafe(12)
    # The home must be reachable by the user itself, so not below pytest's 0700 tmp dirs.
    base = Path(tempfile.mkdtemp(prefix="cctl-user-"))
    base.chmod(0o755)
    home = base / "home"
    subprocess.run(["useradd", "-M", "-d", str(home), "-s", "/bin/sh", name], check=True, capture_output=True)
    try:
        subprocess.run(["chpasswd"], input=f"{name}:{password}".encode(), check=True, capture_output=True)
        home.mkdir()
        shutil.chown(home, name, name)
        yield PasswordUser(name, password, home)
    finally:
        subprocess.run(["userdel", name], check=False, capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
