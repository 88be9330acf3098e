"""SSH as OpenSSH does it, against real sshd servers on 127.0.0.0/8: host certificates and a known_hosts
holding only a @cert-authority line, refused certificates and @revoked keys, user certificates for a
server that trusts only a user CA, known_hosts files named by the ssh config, StrictHostKeyChecking,
a password withheld from a host seen for the first time, and a cluster reached only through an
Included file and a Match block, end to end.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from distributed import Client

from clusterctl.errors import HostError
from clusterctl.inventory import HostSettings
from clusterctl.transport.ssh import SSHTransport
from testbed.client_env import SshEnv
from testbed.sshd import Sshd, free_port
from tests.helpers.cluster import PYTHON, REPO, clusterctl, is_running, write_inventory
from tests.helpers.fixtures import PasswordUser, SshdTestBed
from tests.test_lifecycle_local import trace_of_constant_matrix

pytestmark = pytest.mark.ssh


def keygen(*args: str) -> None:
    subprocess.run(["ssh-keygen", "-q", *args], check=True, capture_output=True)


def new_key(path: Path) -> Path:
    """An ed25519 key pair at ``path`` (and ``path``.pub)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    keygen("-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path))
    return path


def public(path: Path) -> str:
    """``ssh-ed25519 AAAA...`` of a key pair."""
    return " ".join(Path(f"{path}.pub").read_text().split()[:2])


def certify_host(ca: Path, host_key: Path, principals: str = "127.0.0.1", validity: str = "-5m:+1h") -> Path:
    keygen("-s", str(ca), "-I", "test-host", "-h", "-n", principals, "-V", validity, f"{host_key}.pub")
    return Path(f"{host_key}-cert.pub")


def certified_server(factory: Any, tmp_path: Path, ca: Path, name: str, **certify: str) -> Sshd:
    """An sshd whose host key is signed by ``ca`` (ssh-keygen -s CA -h)."""
    host_key = new_key(tmp_path / name / "ssh_host_ed25519_key")
    certificate = certify_host(ca, host_key, **certify)
    return factory(workdir=tmp_path / name, host_key_path=host_key, extra_config=f"HostCertificate {certificate}")


def write_known_hosts(ssh_env: SshEnv, *lines: str) -> Path:
    """The user's ~/.ssh/known_hosts, holding exactly ``lines``."""
    path = ssh_env.home / ".ssh" / "known_hosts"
    path.parent.mkdir(mode=0o700, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))
    return path


def transport_to(server: Sshd, key: Path, alias: str = "node1", **settings: Any) -> SSHTransport:
    return SSHTransport(alias, HostSettings(address=server.address, port=server.port, user="root",
                                            identity_file=str(key), **settings))


def refusal(transport: SSHTransport) -> str:
    with transport, pytest.raises(HostError) as caught:
        transport.run(["true"])
    assert "\n" not in str(caught.value)
    return str(caught.value)


def learned(ssh_env: SshEnv) -> str:
    """What clusterctl's own known_hosts learned."""
    return ssh_env.known_hosts.read_text() if ssh_env.known_hosts.exists() else ""


# -- host certificates -------------------------------------------------------------------------


def test_check_trusts_a_host_certificate_from_the_ca_alone_under_strict(
        sshd: SshdTestBed, ssh_env: SshEnv, sshd_factory: Any, tmp_path: Path) -> None:
    ca = new_key(tmp_path / "ca" / "host_ca")
    server = certified_server(sshd_factory, tmp_path, ca, "certified")
    users_file = write_known_hosts(ssh_env, f"@cert-authority * {public(ca)}")
    config = write_inventory(tmp_path / "cluster.yaml", {
        "name": "certified",
        "defaults": {"python": PYTHON, "env": {"PYTHONPATH": str(REPO)}},
        "hosts": {"node1": {"address": server.address, "port": server.port, "user": "root",
                            "identity_file": str(sshd.client_key), "run_dir": str(tmp_path / "run"),
                            "host_key_policy": "strict"}},
        "scheduler": {"host": "node1", "port": free_port(), "dashboard_address": None},
        "workers": [{"name": "w", "host": "node1"}],
    })
    checked = clusterctl("check", str(config), "--json")
    assert checked.exit_code == 0, checked.stdout + checked.stderr
    assert checked.json()["ok"] is True
    assert learned(ssh_env) == "", "a certified host is trusted with nothing learned"
    assert users_file.read_text() == f"@cert-authority * {public(ca)}\n"


def test_a_refused_host_certificate_says_why(sshd: SshdTestBed, ssh_env: SshEnv, sshd_factory: Any,
                                             tmp_path: Path) -> None:
    ca = new_key(tmp_path / "ca" / "host_ca")
    expired = certified_server(sshd_factory, tmp_path, ca, "expired", validity="20200101:20200102")
    stranger = certified_server(sshd_factory, tmp_path, ca, "stranger", principals="db.example,10.9.9.9")
    write_known_hosts(ssh_env, f"@cert-authority * {public(ca)}")

    message = refusal(transport_to(expired, sshd.client_key, host_key_policy="strict"))
    assert message.startswith(f"node1: the host certificate of [127.0.0.1]:{expired.port} is not valid: "
                              "it expired on 2020-01-02")
    assert "hint: renew the host's certificate" in message
    message = refusal(transport_to(stranger, sshd.client_key, host_key_policy="strict"))
    assert "is not valid: it names db.example, 10.9.9.9, not 127.0.0.1" in message

    # Stricter than OpenSSH (which would trust the plain key on first use): a certificate from our
    # CA that fails its checks is refused under accept-new too, and nothing is learned.
    message = refusal(transport_to(expired, sshd.client_key))
    assert "it expired on 2020-01-02" in message
    assert learned(ssh_env) == ""

    # Like OpenSSH, the plain key still counts when it is known itself.
    write_known_hosts(ssh_env, f"@cert-authority * {public(ca)}", expired.known_hosts_line().strip())
    with transport_to(expired, sshd.client_key, host_key_policy="strict") as transport:
        assert transport.run(["true"]).exit_status == 0


def test_revoked_keys_are_refused_whatever_trusts_them(sshd: SshdTestBed, ssh_env: SshEnv, sshd_factory: Any,
                                                       tmp_path: Path) -> None:
    ca = new_key(tmp_path / "ca" / "host_ca")
    server = certified_server(sshd_factory, tmp_path, ca, "revoked")
    host_key = tmp_path / "revoked" / "ssh_host_ed25519_key"
    users_file = write_known_hosts(ssh_env, f"@cert-authority * {public(ca)}", f"@revoked * {public(host_key)}",
                                   server.known_hosts_line().strip())
    for policy in ("strict", "accept-new"):
        message = refusal(transport_to(server, sshd.client_key, host_key_policy=policy))
        assert message.startswith(f"node1: the host key of [127.0.0.1]:{server.port} is REVOKED: its ssh-ed25519 "
                                  f"key (SHA256:")
        assert f"is marked @revoked in {users_file}:2" in message

    # A revoked CA: its certificates are refused, even with the CA line still present.
    users_file = write_known_hosts(ssh_env, f"@cert-authority * {public(ca)}", f"@revoked * {public(ca)}")
    message = refusal(transport_to(server, sshd.client_key, host_key_policy="strict"))
    assert "is REVOKED: the CA that signed its certificate" in message
    assert learned(ssh_env) == ""


def test_known_hosts_files_named_by_the_config_hashed_entries_and_the_bare_host_name(
        sshd: SshdTestBed, ssh_env: SshEnv, tmp_path: Path) -> None:
    server = sshd.server
    hashed = tmp_path / "kh-hashed"
    hashed.write_text(server.known_hosts_line())
    keygen("-H", "-f", str(hashed))
    assert server.address not in hashed.read_text()
    ssh_env.ssh_config.write_text(f"Host *\n    UserKnownHostsFile {tmp_path}/none-here {hashed}\n"
                                  f"    GlobalKnownHostsFile {tmp_path}/global\n")
    with transport_to(server, sshd.client_key, host_key_policy="strict") as transport:
        assert transport.run(["true"]).exit_status == 0

    # GlobalKnownHostsFile, with the key recorded for the bare address (OpenSSH accepts that for any port).
    hashed.write_text("")
    (tmp_path / "global").write_text(f"{server.address} {server.host_public_key}\n")
    with transport_to(server, sshd.client_key, host_key_policy="strict") as transport:
        assert transport.run(["true"]).exit_status == 0
    assert learned(ssh_env) == ""


def test_stricthostkeychecking_from_the_config_unless_the_inventory_says(
        sshd: SshdTestBed, ssh_env: SshEnv) -> None:
    ssh_env.ssh_config.write_text("Host node1\n    StrictHostKeyChecking yes\n")
    message = refusal(transport_to(sshd.server, sshd.client_key))
    assert "is not known and host_key_policy is strict" in message
    with transport_to(sshd.server, sshd.client_key, host_key_policy="accept-new") as transport:
        assert transport.run(["true"]).exit_status == 0
    assert learned(ssh_env) == sshd.server.known_hosts_line()
    ssh_env.ssh_config.write_text("Host node1\n    StrictHostKeyChecking accept-new\n    ConnectTimeout 1\n")
    with transport_to(sshd.server, sshd.client_key) as transport:
        assert transport.run(["true"]).exit_status == 0


def test_connecttimeout_from_the_config(ssh_env: SshEnv) -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never speaks
        port = silent.getsockname()[1]
        ssh_env.ssh_config.write_text(f"Host quiet\n    HostName 127.0.0.1\n    Port {port}\n    ConnectTimeout 1\n")
        started = time.monotonic()
        message = refusal(SSHTransport("quiet", HostSettings()))
    assert message.startswith(f"quiet: no ssh server answered on 127.0.0.1:{port} (closed, or no SSH banner within 1s)")
    assert time.monotonic() - started < 9, "the config's 1 s, not the default 10 s"


# -- user certificates -------------------------------------------------------------------------


def test_login_with_a_user_certificate_to_a_server_that_trusts_only_the_user_ca(
        ssh_env: SshEnv, sshd_factory: Any, tmp_path: Path) -> None:
    user_ca = new_key(tmp_path / "ca" / "user_ca")
    server = sshd_factory(authorized_keys=[], extra_config=f"TrustedUserCAKeys {user_ca}.pub")
    key = new_key(tmp_path / "me" / "id_ed25519")

    message = refusal(transport_to(server, key))  # no certificate yet: the bare key is not authorized
    assert "authentication failed for user root" in message

    keygen("-s", str(user_ca), "-I", "me", "-n", "root", "-V", "-5m:+1h", f"{key}.pub")  # -> id_ed25519-cert.pub
    with transport_to(server, key) as transport:  # <key>-cert.pub beside the key, as ssh uses it
        assert transport.run(["id", "-un"]).stdout == "root\n"
    assert "Accepted publickey for root" in server.log() and "ED25519-CERT" in server.log()

    # CertificateFile from the ssh config, kept elsewhere.
    elsewhere = tmp_path / "certs" / "me-cert.pub"
    elsewhere.parent.mkdir()
    Path(f"{key}-cert.pub").rename(elsewhere)
    ssh_env.ssh_config.write_text(f"Host node1\n    CertificateFile {elsewhere}\n")
    with transport_to(server, key) as transport:
        assert transport.run(["true"]).exit_status == 0


# -- passwords ---------------------------------------------------------------------------------


def test_a_password_is_withheld_from_a_host_seen_for_the_first_time(
        sshd: SshdTestBed, ssh_env: SshEnv, password_user: PasswordUser, monkeypatch: pytest.MonkeyPatch,
        sshd_factory: Any) -> None:
    monkeypatch.setenv("CLUSTERCTL_SSH_PASSWORD", password_user.password)
    settings = HostSettings(address=sshd.server.address, port=sshd.server.port, user=password_user.name)
    before = sshd.server.log().count("password for")
    message = refusal(SSHTransport("node1", settings))
    assert message.startswith(f"node1: authentication failed for user {password_user.name}: no key was accepted, "
                              "and a password is offered only to a host whose key was known before")
    assert f"ssh-keyscan -p {sshd.server.port} {sshd.server.address} >> " in message
    assert sshd.server.log().count("password for") == before, "the server never saw a password"
    assert learned(ssh_env) == "", "a host we could not log in to is not remembered either"

    # The same for a ProxyJump hop.
    target = sshd_factory()
    ssh_env.ssh_config.write_text(f"Host behind\n    HostName 127.0.0.1\n    Port {target.port}\n"
                                  f"    ProxyJump {password_user.name}@127.0.0.1:{sshd.server.port}\n")
    message = refusal(SSHTransport("behind", HostSettings(identity_file=str(sshd.client_key))))
    assert message.startswith(f"behind: ProxyJump hop {password_user.name}@127.0.0.1:{sshd.server.port}: "
                              "authentication failed")
    assert "seen for the first time" in message
    assert sshd.server.log().count("password for") == before

    # Once its key is known, the password is offered.
    ssh_env.known_hosts.write_text(sshd.server.known_hosts_line())
    with SSHTransport("node1", settings) as transport:
        assert transport.run(["id", "-un"]).stdout == f"{password_user.name}\n"


# -- Include and Match, end to end -------------------------------------------------------------


def test_a_cluster_on_a_host_known_only_through_an_include_and_a_match_block(
        sshd: SshdTestBed, ssh_env: SshEnv, tmp_path: Path) -> None:
    server = sshd.server
    conf_d = tmp_path / "ssh" / "conf.d"
    conf_d.mkdir(parents=True)
    ssh_env.ssh_config.write_text(f"Include {conf_d}/*.conf\n")
    (conf_d / "10-lab.conf").write_text(f"""
Host lab-*
    HostName {server.address}
Match originalhost lab-node exec "test -r {sshd.client_key}"
    Port {server.port}
    StrictHostKeyChecking accept-new
Match host {server.address} !user nobody
    User root
    IdentityFile {sshd.client_key}
""")
    (conf_d / "README").write_text("Host *\n    Port 1\n")  # not *.conf: never read
    run_dir = tmp_path / "run"
    config = write_inventory(tmp_path / "cluster.yaml", {
        "name": "included",
        "defaults": {"python": PYTHON, "env": {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}},
        "hosts": {"lab-node": {"run_dir": str(run_dir)}},  # nothing but the name
        "scheduler": {"host": "lab-node", "port": free_port(), "dashboard_address": None},
        "workers": [{"name": "w", "host": "lab-node", "nworkers": 2}],
    })

    shown = clusterctl("ssh-config", "lab-node", "--config", str(config))
    assert shown.exit_code == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert {f"hostname {server.address}", f"port {server.port}", "user root",
            f"identityfile {sshd.client_key}", "stricthostkeychecking accept-new"} <= set(lines)

    started = clusterctl("up", str(config))
    assert started.exit_code == 0, started.stderr
    try:
        document = clusterctl("status", "--json").json()
        assert sorted(w["name"] for w in document["workers"]) == ["w-0", "w-1"]
        with Client(document["scheduler"]["address"], timeout=30) as client:
            assert client.submit(trace_of_constant_matrix, 4, pure=False).result(timeout=30) == 12
        processes = json.loads((ssh_env.clusterctl_home / "clusters" / "included" / "state.json").read_text())[
            "processes"]
    finally:
        stopped = clusterctl("down")
    assert stopped.exit_code == 0, stopped.stderr
    assert not any(is_running(p) for p in processes)
    assert learned(ssh_env) == server.known_hosts_line(), "accept-new came from the Match block"


def test_a_config_ssh_refuses_is_one_line_naming_it(ssh_env: SshEnv) -> None:
    ssh_env.ssh_config.write_text("Host node1\n    NoSuchOption yes\n")
    message = refusal(SSHTransport("node1", HostSettings()))
    assert message.startswith("node1: ssh config for node1: ")
    assert "Bad configuration option: nosuchoption" in message


def test_ssh_config_command_for_a_host_outside_the_inventory_and_json(ssh_env: SshEnv, tmp_path: Path) -> None:
    ssh_env.ssh_config.write_text("Host db7\n    HostName db7.example\n    IdentityFile /k/one\n    IdentityFile /k/two\n")
    text = clusterctl("ssh-config", "db7")
    assert text.exit_code == 0, text.stderr
    assert "hostname db7.example\n" in text.stdout
    assert "identityfile /k/one\nidentityfile /k/two\n" in text.stdout
    document = clusterctl("ssh-config", "db7", "--json").json()
    assert document["options"]["hostname"] == "db7.example"
    assert document["options"]["identityfile"] == ["/k/one", "/k/two"]
    assert document["resolved_by"] == "clusterctl"  # $HOME is not the passwd home here
    bad = clusterctl("ssh-config", "bad/host")
    assert bad.exit_code == 2
    local = write_inventory(tmp_path / "c.yaml", {"name": "l", "hosts": {"me": {"connection": "local"}},
                                                   "scheduler": {"host": "me"},
                                                   "workers": [{"name": "w", "host": "me"}]})
    refused = clusterctl("ssh-config", "me", "--config", str(local))
    assert refused.exit_code == 2 and "connection: local" in refused.stderr
