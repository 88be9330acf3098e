"""The SSH transport against real OpenSSH servers on 127.0.0.0/8 (see testbed/sshd.py).

Only DNS failures and a TCP connect timeout are simulated: they cannot be caused on loopback.
"""

from __future__ import annotations

import logging
import os
import shlex
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from clusterctl.errors import HostError
from clusterctl.inventory import HostSettings
from clusterctl.transport import ssh
from clusterctl.transport.ssh import SSHTransport
from testbed.client_env import SshEnv
from testbed.sshd import Sshd, free_port, make_client_key
from tests.helpers.fixtures import PasswordUser, SshdTestBed

pytestmark = pytest.mark.ssh

Factory = Callable[..., Sshd]


def connect(sshd: SshdTestBed, alias: str = "web1", **overrides: Any) -> SSHTransport:
    return SSHTransport(alias, HostSettings(**sshd.host(**overrides)))


def connect_to(server: Sshd, key: Path, alias: str = "web1", **settings: Any) -> SSHTransport:
    return SSHTransport(alias, HostSettings(address=server.address, port=server.port, user="root",
                                            identity_file=str(key), **settings))


def failure(transport: SSHTransport, argv: list[str] | None = None) -> HostError:
    """The HostError that running ``argv`` raises; it must be one line."""
    with transport, pytest.raises(HostError) as caught:
        transport.run(argv or ["true"])
    assert "\n" not in str(caught.value)
    return caught.value


def accepted_logins(server: Sshd) -> int:
    return server.log().count("Accepted publickey")


def trust(server: Sshd, ssh_env: SshEnv) -> None:
    """Put ``server``'s host key in clusterctl's known_hosts, as an earlier key login would have."""
    ssh_env.clusterctl_home.mkdir(mode=0o700, exist_ok=True)
    with open(os.open(ssh_env.known_hosts, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "a") as handle:
        handle.write(server.known_hosts_line())


# -- commands ------------------------------------------------------------------------------------


def test_argv_arrives_literally_and_nothing_is_expanded(sshd: SshdTestBed, ssh_env: SshEnv, tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    tricky = ["a b", "it's", '"double"', f"$(touch {canary})", f"`touch {canary}`", "*", "$HOME", "x;y|z&", ""]
    with connect(sshd) as transport:
        result = transport.run(["printf", "%s|", *tricky])
        assert result.exit_status == 0, result.stderr
        assert result.stdout == "".join(f"{arg}|" for arg in tricky)
        # The brief's example: the substitution is one argv element, so printf gets it as text.
        assert transport.run(["printf", "%s", f'"$(touch {canary})"']).stdout == f'"$(touch {canary})"'
    assert not canary.exists()


def test_stdin_stdout_stderr_and_exit_status(sshd: SshdTestBed, ssh_env: SshEnv) -> None:
    with connect(sshd) as transport:
        result = transport.run(["sh", "-c", "cat; echo oops >&2; exit 3"], stdin=b"hello\n")
        assert (result.exit_status, result.stdout, result.stderr) == (3, "hello\n", "oops\n")
        assert transport.run(["false"]).exit_status == 1  # returned, not raised
        assert transport.run(["cat"]).stdout == ""  # without stdin the command reads EOF, not a hang
        # Megabytes both ways at once, and on stderr, must not deadlock on full windows.
        big = os.urandom(3 << 20).hex().encode()  # 6 MiB
        result = transport.run(["sh", "-c", "tee /dev/stderr"], stdin=big, timeout=30)
        assert result.exit_status == 0 and len(result.stdout) == len(result.stderr) == len(big)


def test_a_stream_with_open_input_takes_more_and_its_close_waits_for_the_command_to_end(
        sshd: SshdTestBed, ssh_env: SshEnv, tmp_path: Path) -> None:
    """`up`'s held agent: a first line, an answer, a second line later on the same command; and the
    end of its input, at close, lets it finish by itself before the channel goes (nothing outlives
    `up`). The command here takes a while to finish after its input ends."""
    done = tmp_path / "finished"
    script = ('read first; echo "got $first"; read second; echo "got $second"; '
              f'cat >/dev/null; sleep 0.5; touch {shlex.quote(str(done))}')
    with connect(sshd) as transport:
        stream = transport.stream(["sh", "-c", script], stdin=b"one\n", keep_input=True)
        assert stream.readline(30) == "got one\n"
        stream.send(b"two\n")
        assert stream.readline(30) == "got two\n"
        stream.close()
        assert done.exists(), "close returned before the command ended on its input's end"


def test_slow_command_times_out_and_the_connection_survives(sshd: SshdTestBed, ssh_env: SshEnv) -> None:
    with connect(sshd) as transport:
        started = time.monotonic()
        with pytest.raises(HostError, match=r"^web1: sleep did not finish within 0.5s$"):
            transport.run(["sleep", "30"], timeout=0.5)
        assert time.monotonic() - started < 15, "gave up at its timeout, not after the 30 s command"
        assert transport.run(["echo", "still here"]).stdout == "still here\n"


def test_one_connection_serves_many_threads(sshd: SshdTestBed, ssh_env: SshEnv) -> None:
    before = accepted_logins(sshd.server)
    with connect(sshd) as transport, ThreadPoolExecutor(16) as pool:
        # More concurrent commands than sshd's MaxSessions default: the transport queues them.
        results = list(pool.map(lambda i: transport.run(["sh", "-c", f"sleep 0.2; echo {i}"]), range(20)))
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(20)]
    assert accepted_logins(sshd.server) == before + 1


def test_close_is_idempotent_and_the_transport_reconnects_lazily(sshd: SshdTestBed, ssh_env: SshEnv) -> None:
    before = accepted_logins(sshd.server)
    transport = connect(sshd)
    assert accepted_logins(sshd.server) == before  # nothing happens until the first call
    assert transport.run(["true"]).exit_status == 0
    transport.close()
    transport.close()
    assert transport.run(["true"]).exit_status == 0
    transport.close()
    assert accepted_logins(sshd.server) == before + 2


# -- files ---------------------------------------------------------------------------------------


def test_put_file_writes_the_data_with_its_mode(sshd: SshdTestBed, ssh_env: SshEnv, tmp_path: Path) -> None:
    target = tmp_path / "secret.json"
    target.write_text("old, world-readable")
    target.chmod(0o644)
    data = os.urandom(200_000)
    with connect(sshd) as transport:
        transport.put_file(str(target), data)
        assert stat.S_IMODE(target.stat().st_mode) == 0o600
        assert target.read_bytes() == data
        transport.put_file(str(tmp_path / "run.sh"), b"#!/bin/sh\n", mode=0o755)
        assert stat.S_IMODE((tmp_path / "run.sh").stat().st_mode) == 0o755
        with pytest.raises(HostError, match=r"^web1: cannot write .*/no-dir/x: No such file"):
            transport.put_file(str(tmp_path / "no-dir" / "x"), b"")


# -- authentication ------------------------------------------------------------------------------


def test_password_login_and_the_password_never_leaks(
    sshd: SshdTestBed, ssh_env: SshEnv, password_user: PasswordUser, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    trust(sshd.server, ssh_env)  # a password goes only to a host whose key is already known
    settings = HostSettings(address=sshd.server.address, port=sshd.server.port, user=password_user.name)
    monkeypatch.setenv("CLUSTERCTL_SSH_PASSWORD", password_user.password)
    with SSHTransport("web1", settings) as transport:
        assert transport.run(["id", "-un"]).stdout == f"{password_user.name}\n"
        transport.put_file("~/note", b"in the remote home")  # `~/` is the remote user's home
        assert (password_user.home / "note").read_bytes() == b"in the remote home"
        assert password_user.password not in repr(transport)

    wrong = password_user.password + "-wrong"
    monkeypatch.setenv("CLUSTERCTL_SSH_PASSWORD", wrong)
    error = failure(SSHTransport("web1", settings))
    assert str(error).startswith(f"web1: authentication failed for user {password_user.name} (hint: ")
    assert "CLUSTERCTL_SSH_PASSWORD" in str(error)
    for secret in (password_user.password, wrong):
        assert secret not in str(error) and secret not in repr(error) and secret not in caplog.text


def test_password_prompt_is_asked_only_after_keys_fail_and_only_on_a_tty(
    sshd: SshdTestBed, ssh_env: SshEnv, password_user: PasswordUser, monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[str] = []

    def prompt(host: str) -> str:
        asked.append(host)
        return password_user.password

    class Terminal:
        def isatty(self) -> bool:
            return True

    with connect(sshd) as transport:  # a key login asks nothing (and, under accept-new, learns the host key)
        transport.run(["true"])
    settings = HostSettings(address=sshd.server.address, port=sshd.server.port, user=password_user.name)
    failure(SSHTransport("web1", settings, password_prompt=prompt))  # pytest's stdin is no TTY
    assert asked == []
    monkeypatch.setattr(sys, "stdin", Terminal())
    with SSHTransport("web1", settings, password_prompt=prompt) as transport:
        assert transport.run(["id", "-un"]).stdout == f"{password_user.name}\n"
    assert asked == ["web1"]


def test_wrong_key_is_an_authentication_failure(sshd: SshdTestBed, ssh_env: SshEnv, tmp_path: Path) -> None:
    stranger, _ = make_client_key(tmp_path / "stranger")
    error = failure(connect(sshd, identity_file=str(stranger)))
    assert str(error).startswith("web1: authentication failed for user root (hint: check `identity_file:`")
    error = failure(connect(sshd, identity_file=str(tmp_path / "nope")))
    assert str(error).startswith(f"web1: identity_file {tmp_path / 'nope'} does not exist")


def test_default_key_in_home_is_used_like_openssh(sshd: SshdTestBed, ssh_env: SshEnv) -> None:
    (ssh_env.home / ".ssh").mkdir()
    (ssh_env.home / ".ssh" / "id_ed25519").write_bytes(sshd.client_key.read_bytes())
    (ssh_env.home / ".ssh" / "id_ed25519").chmod(0o600)
    with connect(sshd, identity_file=None) as transport:
        assert transport.run(["true"]).exit_status == 0


# -- ssh config: aliases, ProxyJump, ProxyCommand ------------------------------------------------


def test_ssh_config_alias_supplies_hostname_user_port_and_key(sshd: SshdTestBed, ssh_env: SshEnv) -> None:
    ssh_env.ssh_config.write_text(f"""
Host web1
    HostName {sshd.server.address}
    Port {sshd.server.port}
    User root
    IdentityFile {sshd.client_key}
""")
    with SSHTransport("web1", HostSettings()) as transport:
        assert transport.address == sshd.server.address
        assert transport.run(["id", "-un"]).stdout == "root\n"
    # The inventory wins over the config, and without either the alias is the address.
    assert SSHTransport("web1", HostSettings(address="10.1.2.3")).address == "10.1.2.3"
    assert SSHTransport("db7", HostSettings()).address == "db7"
    error = failure(SSHTransport("web1", HostSettings(port=free_port())))
    assert "connection refused on 127.0.0.1:" in str(error)


def test_proxyjump_through_two_hops(sshd: SshdTestBed, ssh_env: SshEnv, sshd_factory: Factory) -> None:
    first = sshd_factory(extra_config="LogLevel DEBUG1")  # DEBUG1 logs the forwarding requests
    second = sshd_factory(extra_config="LogLevel DEBUG1")
    target = sshd_factory(address="127.0.0.2")
    ssh_env.ssh_config.write_text(f"""
Host inner
    HostName 127.0.0.2
    Port {target.port}
    ProxyJump gateway,root@hop2:{second.port}
Host gateway
    HostName 127.0.0.1
    Port {first.port}
Host hop2
    HostName 127.0.0.1
Host *
    User root
    IdentityFile {sshd.client_key}
""")
    with SSHTransport("inner", HostSettings()) as transport:
        assert transport.address == "127.0.0.2"
        assert transport.run(["printf", "%s", "through"]).stdout == "through"
    # Each hop opened a direct-tcpip channel to the next machine.
    assert f"target 127.0.0.1 port {second.port}" in first.log()
    assert f"target 127.0.0.2 port {target.port}" in second.log()
    assert "Accepted publickey for root" in target.log()


def test_proxyjump_failures_name_the_hop(sshd: SshdTestBed, ssh_env: SshEnv, sshd_factory: Factory) -> None:
    jump = sshd_factory()
    closed = free_port()
    ssh_env.ssh_config.write_text(f"""
Host behind
    HostName 127.0.0.1
    Port {closed}
    ProxyJump root@127.0.0.1:{jump.port}
Host nojump
    ProxyJump root@127.0.0.1:{closed}
Host *
    IdentityFile {sshd.client_key}
""")
    error = failure(SSHTransport("behind", HostSettings()))
    assert str(error).startswith(f"behind: ProxyJump hop root@127.0.0.1:{jump.port} cannot reach 127.0.0.1:{closed}")
    error = failure(SSHTransport("nojump", HostSettings()))
    assert str(error).startswith(f"nojump: ProxyJump hop root@127.0.0.1:{closed}: connection refused on 127.0.0.1:{closed}")


RELAY = """
import socket, sys, threading, os
open(sys.argv[3], "w").close()  # proof that ssh went through this command
conn = socket.create_connection((sys.argv[1], int(sys.argv[2])))
def upstream():
    while data := os.read(0, 65536):
        conn.sendall(data)
    conn.shutdown(socket.SHUT_WR)
threading.Thread(target=upstream, daemon=True).start()
while data := conn.recv(65536):
    os.write(1, data)
"""


def test_proxycommand(sshd: SshdTestBed, ssh_env: SshEnv, tmp_path: Path) -> None:
    # A Python relay instead of `nc`, which is not always installed.
    relay, marker = tmp_path / "relay.py", tmp_path / "relay-used"
    relay.write_text(RELAY)
    ssh_env.ssh_config.write_text(f"""
Host viaproxy
    HostName {sshd.server.address}
    Port {sshd.server.port}
    User root
    IdentityFile {sshd.client_key}
    ProxyCommand {shlex.quote(sys.executable)} {relay} %h %p {marker} 2>/dev/null
""")
    with SSHTransport("viaproxy", HostSettings()) as transport:
        assert transport.run(["echo", "proxied"]).stdout == "proxied\n"
    assert marker.exists()


# -- host keys -----------------------------------------------------------------------------------


def test_accept_new_records_the_key_once(sshd: SshdTestBed, ssh_env: SshEnv) -> None:
    with connect(sshd) as transport:
        transport.run(["true"])
    assert ssh_env.known_hosts.read_text() == sshd.server.known_hosts_line()
    assert stat.S_IMODE(ssh_env.known_hosts.stat().st_mode) == 0o600
    with connect(sshd, host_key_policy="strict") as transport:  # now known: strict is happy
        transport.run(["true"])
    with connect(sshd) as transport:
        transport.run(["true"])
    assert ssh_env.known_hosts.read_text() == sshd.server.known_hosts_line()
    assert not (ssh_env.home / ".ssh" / "known_hosts").exists()  # the user's file is only read


def test_strict_refuses_unknown_keys_and_reads_the_users_known_hosts(sshd: SshdTestBed, ssh_env: SshEnv) -> None:
    error = failure(connect(sshd, host_key_policy="strict"))
    name = sshd.server.known_hosts_name
    assert str(error).startswith(f"web1: the ssh-ed25519 host key of {name} (SHA256:")
    assert "is not known and host_key_policy is strict" in str(error)
    assert "ssh-keyscan -p" in str(error) and "accept-new" in str(error)
    assert not ssh_env.known_hosts.exists() or name not in ssh_env.known_hosts.read_text()

    users_file = ssh_env.home / ".ssh" / "known_hosts"
    users_file.parent.mkdir()
    users_file.write_text(sshd.server.known_hosts_line())
    subprocess.run(["ssh-keygen", "-H", "-f", str(users_file)], check=True, capture_output=True)  # as Debian does
    with users_file.open("a") as handle:
        handle.write("garbage line, skipped like OpenSSH does\n")
    before = users_file.read_text()
    assert name not in before
    with connect(sshd, host_key_policy="strict") as transport:
        assert transport.run(["true"]).exit_status == 0
    assert users_file.read_text() == before


def test_changed_host_key_is_refused_with_the_fix(sshd: SshdTestBed, ssh_env: SshEnv, sshd_factory: Factory) -> None:
    original = sshd_factory()
    with connect_to(original, sshd.client_key) as transport:
        transport.run(["true"])
    original.stop()
    impostor = sshd_factory(port=original.port)  # same address and port, new host key
    for policy in ("accept-new", "strict"):
        error = failure(connect_to(impostor, sshd.client_key, host_key_policy=policy))
        name = impostor.known_hosts_name
        assert str(error).startswith(f"web1: the host key of {name} has CHANGED")
        fix = f"ssh-keygen -R {shlex.quote(name)} -f {ssh_env.known_hosts}"
        assert fix in str(error)
    # The hint works.
    subprocess.run(shlex.split(fix), check=True, capture_output=True)
    with connect_to(impostor, sshd.client_key) as transport:
        transport.run(["true"])
    assert impostor.host_public_key in ssh_env.known_hosts.read_text()


def test_changed_key_in_the_users_known_hosts_names_that_file(
    sshd: SshdTestBed, ssh_env: SshEnv, sshd_factory: Factory,
) -> None:
    other = sshd_factory()
    users_file = ssh_env.home / ".ssh" / "known_hosts"
    users_file.parent.mkdir()
    users_file.write_text(f"{sshd.server.known_hosts_name} {other.host_public_key}\n")
    error = failure(connect(sshd))
    assert f"ssh-keygen -R {shlex.quote(sshd.server.known_hosts_name)} -f {users_file}" in str(error)


# -- reaching the host ---------------------------------------------------------------------------


def test_closed_port_is_connection_refused(ssh_env: SshEnv) -> None:
    port = free_port()
    error = failure(SSHTransport("web1", HostSettings(address="127.0.0.1", port=port)))
    assert str(error) == f"web1: connection refused on 127.0.0.1:{port} (hint: is sshd running? check `port:`)"


def test_unknown_hostname_is_a_dns_error(ssh_env: SshEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_dns(*args: object, **kwargs: object) -> None:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)  # a real lookup would leave the loopback
    error = failure(SSHTransport("web1", HostSettings(address="no-such-host.invalid")))
    assert str(error).startswith("web1: cannot resolve hostname no-such-host.invalid (hint: check `address:`")


def test_connect_timeout(ssh_env: SshEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    def black_hole(self: socket.socket, address: object) -> None:
        raise TimeoutError("timed out")

    monkeypatch.setattr(socket.socket, "connect", black_hole)  # loopback never drops packets
    error = failure(SSHTransport("web1", HostSettings(address="127.0.0.1", port=2222)))
    assert str(error).startswith("web1: timed out connecting to 127.0.0.1:2222")


def test_a_port_that_is_not_sshd(ssh_env: SshEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ssh, "CONNECT_TIMEOUT", 0.5)
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never speaks
        port = silent.getsockname()[1]
        error = failure(SSHTransport("web1", HostSettings(address="127.0.0.1", port=port)))
    assert str(error).startswith(f"web1: no ssh server answered on 127.0.0.1:{port}")
