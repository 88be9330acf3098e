"""The pytest fixtures for real servers, registered through ``pytest_plugins`` in tests/conftest.py.

- ``sshd`` (session): an ``SshdTestBed`` -- one server on 127.0.0.1, the client key it trusts,
  and ``host()`` which gives an inventory host entry for it.
- ``sshd_factory`` (function): ``start(**kwargs) -> Sshd`` for more servers (jump hosts, a
  restarted server with a new host key); each trusts the client key and is stopped at teardown.
- ``ssh_env`` (function): isolates HOME, CLUSTERCTL_HOME and the ssh config; no agent, no password
  (``testbed.client_env.SshEnv``, applied to this process's environment).
- ``password_user`` (session): a throw-away local user with a password, deleted at teardown.
- ``testbed`` (session): the multi-host test bed (see the ``testbed`` package), four hosts h1..h4.

Tests that use them skip when sshd is not installed, the tests do not run as root, or (``testbed``)
there is no ``ip netns``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from testbed import Testbed, TestbedError, create_testbed, destroyed_at_exit, prune_stale_beds, unavailable_reason
from testbed.client_env import SshEnv
from testbed.sshd import Sshd, make_client_key, start_sshd
from testbed.sshd import unavailable_reason as sshd_unavailable_reason

TESTBED_HOSTS = 4


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
class PasswordUser:
    name: str
    password: str
    home: Path


def _require_sshd() -> None:
    reason = sshd_unavailable_reason()
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
def ssh_env(tmp_path: Path) -> Iterator[SshEnv]:
    """Keep tests away from the real ~/.ssh, ssh-agent and clusterctl home (the same CLUSTERCTL_HOME as
    conftest's ``clusterctl_home``)."""
    with SshEnv.under(tmp_path).applied() as env:
        yield env


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


@pytest.fixture(scope="session")
def testbed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Testbed]:
    """Four hosts h1..h4 on a private bridge, each with its own sshd; built on first use, removed at the end."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    with contextlib.suppress(TestbedError, OSError):
        prune_stale_beds()  # left by runs that were killed too hard to clean up
    with destroyed_at_exit(create_testbed(TESTBED_HOSTS, tmp_path_factory.mktemp("testbed"), owner_pid=os.getpid())) as bed:
        yield bed
