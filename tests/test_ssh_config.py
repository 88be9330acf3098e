"""ssh config resolution equals OpenSSH's: a corpus of configs, each resolved by `ssh -G`, by clusterctl's
Python resolver (used where the ssh client is missing) and by `clusterctl ssh-config` (which asks
`ssh -G` where it can), compared key by key for every key clusterctl uses.

The cases run in a private mount namespace with a scratch home and a scratch /etc/ssh
(tests/helpers/openssh_probe.py), so that `~/.ssh/config`, `Include`s relative to `~/.ssh` and
the system file `/etc/ssh/ssh_config` are the case's own and the machine's are never read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from clusterctl.transport import ssh_config
from tests.helpers import openssh_probe

SYSTEM = "/etc/ssh/ssh_config"
USER = "~/.ssh/config"
KEYS_ONLY = "IdentityFile ~/.ssh/id_corpus\n"  # most cases set one first, so OpenSSH's version-specific defaults do not show

CASES: list[dict[str, Any]] = [
    {"id": "no-config-at-all", "host": "alpha", "files": {}},
    {"id": "alias-hostname-user-port", "host": "web", "files": {USER: """
Host web
    HostName web.internal.example
    User deploy
    Port 2222
    IdentityFile ~/.ssh/id_web
"""}},
    {"id": "first-value-wins", "host": "db", "files": {USER: KEYS_ONLY + """
Host *
    User everyone
Host db
    User dbadmin
    Port 2200
Host d*
    Port 2300
    HostName db.example
"""}},
    {"id": "host-negation", "host": "bastion", "files": {USER: KEYS_ONLY + """
Host * !bastion
    User inner
Host bastion
    Port 22022
Host *
    User outer
"""}},
    {"id": "host-negation-other-host", "host": "app3", "files": {USER: KEYS_ONLY + """
Host * !bastion
    User inner
Host *
    User outer
"""}},
    {"id": "host-wildcards-and-several-patterns", "host": "node7", "files": {USER: KEYS_ONLY + """
Host login nod?7 other
    Port 2007
Host node?
    User qmark
Host Node7
    User case-sensitive-host-patterns
"""}},
    {"id": "include-glob-relative-to-dot-ssh", "host": "lab1", "files": {
        USER: "Include config.d/*.conf\n" + KEYS_ONLY,
        "~/.ssh/config.d/20-port.conf": "Host lab*\n    Port 2020\n    User twenty\n",
        "~/.ssh/config.d/10-port.conf": "Host lab*\n    Port 1010\n",
        "~/.ssh/config.d/30-ignored.txt": "Host *\n    User not-included\n"}},
    {"id": "include-nesting-and-absolute-paths", "host": "deep", "files": {
        USER: "Include ~/.ssh/level1\n" + KEYS_ONLY,
        "~/.ssh/level1": "Include level2/*\nHost deep\n    Port 1111\n",
        "~/.ssh/level2/a": "Host deep\n    HostName deep.example\n    Include ~/.ssh/level3\n",
        "~/.ssh/level3": "User level3\n"}},
    {"id": "include-inside-host-block", "host": "inner", "files": {
        USER: "Host inner\n    Include blocks/inner.conf\n    Port 3333\nHost *\n    User after\n" + KEYS_ONLY,
        "~/.ssh/blocks/inner.conf": "HostName inner.example\nHost other\n    User never\n"}},
    {"id": "include-inside-inactive-block", "host": "outer", "files": {
        USER: "Host inner\n    Include blocks/inner.conf\nHost *\n    Port 4444\n" + KEYS_ONLY,
        "~/.ssh/blocks/inner.conf": "User from-inactive-include\nHost *\n    HostName leaked.example\n"}},
    {"id": "match-host-sees-hostname", "host": "web", "files": {USER: KEYS_ONLY + """
Host web
    HostName web.internal
Match host *.internal
    User ops
Match host web
    Port 8022
"""}},
    {"id": "match-originalhost", "host": "web", "files": {USER: KEYS_ONLY + """
Host web
    HostName 10.0.0.5
Match originalhost web
    User by-original-name
Match host web
    Port 8022
"""}},
    {"id": "match-user-after-user-set", "host": "svc", "files": {USER: KEYS_ONLY + """
Host svc
    User svcuser
Match user svcuser
    Port 6000
Match user root
    Port 6001
"""}},
    {"id": "match-user-order-matters", "host": "svc", "files": {USER: KEYS_ONLY + """
Match user svcuser
    Port 6000
Host svc
    User svcuser
"""}},
    {"id": "match-localuser", "host": "any", "files": {USER: KEYS_ONLY + """
Match localuser root,nobody
    User local-is-root
Match !localuser root
    Port 1
"""}},
    {"id": "match-exec-with-tokens", "host": "ex", "files": {USER: KEYS_ONLY + """
Host ex
    HostName ex.example
Match exec "test %h = ex.example && test %n = ex && test %p = 22"
    User exec-matched
Match exec "false"
    Port 9
Match exec "test -n '%r%u%d%L%l%C'"
    Port 2222
"""}},
    {"id": "match-negation-and-lists", "host": "gpu3", "files": {USER: KEYS_ONLY + """
Match !host gpu*
    User not-gpu
Match host gpu1,gpu2,!gpu3
    Port 111
Match host "cpu*,gpu*" !originalhost gpu1
    User gpu-not-1
"""}},
    {"id": "match-all-and-criteria-short-circuit", "host": "m", "files": {USER: KEYS_ONLY + """
Match host nomatch exec "exit 0"
    User never
Match all
    User all-matched
    Port 2345
"""}},
    {"id": "match-final-and-host-in-final-pass", "host": "short", "files": {USER: KEYS_ONLY + """
Host short
    HostName Long.Example.ORG
Host long.example.org
    Port 2
Match final host long.example.org
    User final-user
Match !final
    IdentityFile ~/.ssh/first-pass
"""}},
    {"id": "canonicalize-triggers-second-pass", "host": "c1", "files": {USER: KEYS_ONLY + """
CanonicalizeHostname yes
Match canonical
    User canonical-user
Host c1
    HostName c1.example
Host c1.example
    Port 4321
"""}},
    {"id": "tokens-in-paths", "host": "tok", "files": {USER: """
Host tok
    HostName tok.example
    User tokuser
    Port 2022
    HostKeyAlias Tok-Alias
    IdentityFile ~/.ssh/%h-%r-%p-%n-%u-%%
    IdentityFile %d/keys/%l/%L/%i
    CertificateFile %d/certs/%n-cert.pub
    UserKnownHostsFile ~/.ssh/kh_%h_%p %d/kh_%k_%C ${HOME}/kh_env
"""}},
    {"id": "repeated-identityfile-and-identitiesonly", "host": "multi", "files": {USER: """
Host multi
    IdentityFile ~/.ssh/one
    IdentityFile ~/.ssh/two
    IdentitiesOnly yes
Host *
    IdentityFile ~/.ssh/one
    IdentityFile ~/.ssh/three
    IdentitiesOnly no
    CertificateFile ~/.ssh/one-cert.pub
    CertificateFile ~/.ssh/one-cert.pub
"""}},
    {"id": "proxyjump-chain", "host": "inner", "files": {USER: KEYS_ONLY + """
Host inner
    HostName 10.1.2.3
    ProxyJump gateway,admin@10.0.0.1:2222
    ProxyCommand nc %h %p
"""}},
    {"id": "proxyjump-uri-and-comment", "host": "inner", "files": {USER: KEYS_ONLY + """
Host inner
    ProxyJump ssh://jumper@jump.example:2200 # the way in
"""}},
    {"id": "proxycommand-first-wins-over-proxyjump", "host": "pc", "files": {USER: KEYS_ONLY + """
Host pc
    ProxyCommand /usr/bin/nc -X connect -x proxy:3128 %h %p
    ProxyJump gateway
"""}},
    {"id": "proxyjump-none-then-proxycommand", "host": "pn", "files": {USER: KEYS_ONLY + """
Host pn
    ProxyJump none
Host *
    ProxyJump somewhere
    ProxyCommand ssh -W %h:%p relay
"""}},
    {"id": "system-file-after-users", "host": "sys", "files": {
        USER: "Host sys\n    Port 1234\n" + KEYS_ONLY,
        SYSTEM: "Include /etc/ssh/ssh_config.d/*.conf\nHost *\n    Port 22\n    User from-system\n",
        "/etc/ssh/ssh_config.d/50-site.conf": "Host sys\n    ConnectTimeout 7\n"}},
    {"id": "system-file-relative-include", "host": "rel", "files": {
        SYSTEM: "Include site.d/*\nHost *\n    ServerAliveInterval 30\n",
        "/etc/ssh/site.d/a": "Host rel\n    User from-etc-ssh-site-d\n" + KEYS_ONLY}},
    {"id": "explicit-config-skips-system-file", "host": "sys", "config": "~/.ssh/custom.conf", "files": {
        "~/.ssh/custom.conf": "Host sys\n    Port 1234\n" + KEYS_ONLY,
        USER: "Host *\n    User from-default-user-file\n",
        SYSTEM: "Host *\n    User from-system\n"}},
    {"id": "inventory-overrides", "host": "node1",
     "inventory": {"address": "10.9.8.7", "user": "inv", "port": 2201, "identity_file": "~/.ssh/id_inventory"},
     "files": {"~/.ssh/id_inventory": "not really a key\n", USER: """
Host node1
    HostName ignored.example
    User ignored
    Port 9999
    IdentityFile ~/.ssh/id_config
Match host 10.9.8.7 user inv
    ServerAliveInterval 11
"""}},
    {"id": "strict-timeouts-and-known-hosts-files", "host": "kh", "files": {USER: KEYS_ONLY + """
Host kh
    StrictHostKeyChecking accept-new
    ConnectTimeout 1m30s
    ServerAliveInterval 15
    UserKnownHostsFile none
    GlobalKnownHostsFile /etc/ssh/one /etc/ssh/two
Host *
    StrictHostKeyChecking yes
"""}},
    {"id": "strict-no-and-connecttimeout-none", "host": "x", "files": {USER: KEYS_ONLY + """
Host *
    StrictHostKeyChecking no
    ConnectTimeout none
    ConnectTimeout 5
    IdentitiesOnly true
"""}},
    {"id": "syntax-equals-quotes-case", "host": "q", "files": {USER: """
HOST q
  hostNAME=quoted.example
  User = "quser"
  Port=2323
  IdentityFile "~/.ssh/key with space"
	CertificateFile ~/.ssh/with\\ escaped-cert.pub
"""}},
    {"id": "ignore-unknown", "host": "u", "files": {USER: KEYS_ONLY + """
IgnoreUnknown UseKeychain,AddKeysToAgentX
Host u
    UseKeychain yes
    User unknown-ignored
"""}},
    {"id": "bad-option-is-an-error", "host": "b", "files": {USER: "Host b\n    NoSuchOption yes\n"}},
    {"id": "addresses-are-canonical-names-lowercased", "host": "MixedCase", "files": {USER: KEYS_ONLY + """
Host MixedCase
    HostName Server.EXAMPLE.com
Host v6
    HostName 0:0:0:0:0:0:0:1
"""}},
    {"id": "ipv6-address-canonical", "host": "v6", "files": {USER: KEYS_ONLY + """
Host v6
    HostName 0:0:0:0:0:0:0:1
    ProxyJump [::1]:2222
"""}},
]


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    reason = openssh_probe.unavailable_reason()
    if reason:
        pytest.skip(reason)
    found = openssh_probe.run_cases(CASES, tmp_path_factory.mktemp("openssh-corpus"))
    return {result["id"]: result for result in found}


def test_the_corpus_is_big_enough() -> None:
    assert len(CASES) >= 25
    assert len({case["id"] for case in CASES}) == len(CASES)


@pytest.mark.parametrize("resolver", ["python", "cli"], ids=["python-resolver", "clusterctl-ssh-config"])
@pytest.mark.parametrize("case", CASES, ids=[case["id"] for case in CASES])
def test_resolution_equals_ssh_dash_g(case: dict[str, Any], resolver: str, results: dict[str, dict[str, Any]]) -> None:
    """``python``: the resolver used without the ssh client; ``cli``: `clusterctl ssh-config`, which asks ssh -G."""
    result = results[case["id"]]
    reference = result["ssh"]
    if "error" in reference:
        assert "error" in result[resolver], f"ssh -G refused it ({reference['error']}), {resolver} did not"
        return
    assert result[resolver] == reference


def test_the_corpus_exercises_every_key(results: dict[str, dict[str, Any]]) -> None:
    seen = {line.split(" ", 1)[0] for result in results.values() for line in result["ssh"].get("lines", [])}
    assert seen == set(ssh_config.KEYS)


def test_without_the_ssh_client_the_python_resolver_answers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "config"
    config.write_text("Host web\n    HostName web.example\n    Port 2222\n")
    monkeypatch.setenv("CLUSTERCTL_SSH_CONFIG", str(config))
    monkeypatch.setenv("PATH", str(tmp_path))  # no `ssh` on it
    options = ssh_config.resolve("web")
    assert options.resolved_by == "clusterctl"
    assert (options.hostname, options.port) == ("web.example", 2222)


def test_with_home_elsewhere_the_python_resolver_follows_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ssh reads the passwd home's ~/.ssh; clusterctl's `~` is $HOME, so then it resolves by itself."""
    (tmp_path / ".ssh" / "conf.d").mkdir(parents=True)
    (tmp_path / ".ssh" / "config").write_text("Include conf.d/*\n")
    (tmp_path / ".ssh" / "conf.d" / "a").write_text("Host web\n    User from-home\n")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("CLUSTERCTL_SSH_CONFIG", raising=False)
    options = ssh_config.resolve("web")
    assert options.resolved_by == "clusterctl"
    assert options.user == "from-home"
