"""How OpenSSH's client would connect to a host: its ssh_config resolved exactly as ``ssh -G`` does.

OpenSSH itself is the reference. When the ``ssh`` client is installed (and ``$HOME`` is the home
directory ssh reads its files from), clusterctl asks it: ``ssh -G [-F FILE] [-l USER] [-p PORT]
[-o HostName=ADDRESS] [-i KEY] -- HOST``. Otherwise a Python resolver does the same work with
OpenSSH 9.2's rules (readconf.c): ``Include`` (globs, paths relative to ``~/.ssh`` or
``/etc/ssh``, nesting), ``Host`` patterns with negation, ``Match`` (``all``, ``host``,
``originalhost``, ``user``, ``localuser``, ``exec``, ``canonical``, ``final``, negation) evaluated
where it stands, the first value winning, the user's file before ``/etc/ssh/ssh_config``, and the
``%`` tokens. Tests compare both with ``ssh -G`` on a corpus of configs.

Only the keys clusterctl uses are kept (``KEYS``), in the order ``ssh -G`` prints them.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import os
import pwd
import re
import shutil
import socket
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from clusterctl.errors import InvalidInputError

if TYPE_CHECKING:
    from clusterctl.inventory import HostSettings

CONFIG_ENV = "CLUSTERCTL_SSH_CONFIG"
SYSTEM_CONFIG = Path("/etc/ssh/ssh_config")
#: The keys clusterctl honours, in the order `ssh -G` prints them.
KEYS = ("user", "hostname", "port", "identitiesonly", "stricthostkeychecking", "serveraliveinterval", "hostkeyalias",
        "identityfile", "certificatefile", "globalknownhostsfile", "userknownhostsfile", "connecttimeout",
        "proxycommand", "proxyjump")
SSH_TIMEOUT = 60.0  # seconds for `ssh -G`: it runs `Match exec` commands, which may be slow


# -- the result --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SshOptions:
    """A host's resolved ssh settings: ``lines`` as ``ssh -G`` prints them, and typed views of them."""

    host: str  # the name asked for, before HostName (OpenSSH's %n)
    lines: tuple[tuple[str, str], ...]  # (key, value) in ssh -G order, only KEYS
    resolved_by: str  # "ssh -G" or "clusterctl"

    def values(self, key: str) -> list[str]:
        return [value for k, value in self.lines if k == key]

    def value(self, key: str) -> str | None:
        found = self.values(key)
        return found[0] if found else None

    @property
    def hostname(self) -> str:
        return self.value("hostname") or self.host

    @property
    def user(self) -> str:
        return self.value("user") or _local_user()

    @property
    def port(self) -> int:
        return int(self.value("port") or 22)

    @property
    def identity_files(self) -> list[str]:
        """IdentityFile entries as written (``~`` and tokens unexpanded, like ``ssh -G``); no ``none``."""
        return [v for v in self.values("identityfile") if v.lower() != "none"]

    @property
    def certificate_files(self) -> list[str]:
        return self.values("certificatefile")

    @property
    def identities_only(self) -> bool:
        return self.value("identitiesonly") == "yes"

    @property
    def proxy_jump(self) -> list[str]:
        """ProxyJump hops, first to last, as written (``[user@]host[:port]`` or ``ssh://...``)."""
        jump = self.value("proxyjump")
        return [hop for hop in jump.split(",") if hop] if jump else []

    @property
    def proxy_command(self) -> str | None:
        return self.value("proxycommand")

    @property
    def known_hosts_files(self) -> list[str]:
        """UserKnownHostsFile then GlobalKnownHostsFile entries, ``~`` expanded; ``none`` dropped."""
        files = []
        for key in ("userknownhostsfile", "globalknownhostsfile"):
            files += [os.path.expanduser(f) for f in (self.value(key) or "").split() if f != "none"]
        return files

    @property
    def strict_host_key_checking(self) -> str:
        """As ssh -G prints it: ``true`` (yes), ``false`` (no/off), ``ask`` (the default) or ``accept-new``."""
        return self.value("stricthostkeychecking") or "ask"

    @property
    def connect_timeout(self) -> float | None:
        value = self.value("connecttimeout")
        return float(value) if value and value != "none" and int(value) > 0 else None

    @property
    def server_alive_interval(self) -> int:
        return int(self.value("serveraliveinterval") or 0)

    @property
    def host_key_alias(self) -> str | None:
        return self.value("hostkeyalias")

    def expand_path(self, path: str) -> str:
        """An IdentityFile/CertificateFile value as ssh uses it: ``~``, ``%`` tokens and ``${VAR}`` expanded."""
        return self._expand(os.path.expanduser(path), self._tokens(), environment=True)

    def expand_proxy_command(self) -> str | None:
        """ProxyCommand with its tokens expanded, prefixed with ``exec`` as ssh runs it (through ``$SHELL -c``)."""
        command = self.proxy_command
        if command is None:
            return None
        tokens = {"h": self.hostname, "k": self.host_key_alias or self.host, "n": self.host, "p": str(self.port),
                  "r": self.user}
        return self._expand("exec " + command, tokens, environment=False)

    def _expand(self, text: str, tokens: Mapping[str, str], *, environment: bool) -> str:
        try:
            return _expand(text, tokens, environment=environment)
        except _ConfigError as exc:
            raise InvalidInputError(f"ssh config for {self.host}: {exc}",
                                    f"fix {described_config()}, or point {CONFIG_ENV} to another file") from None

    def _tokens(self) -> dict[str, str]:
        return _client_tokens(host_arg=self.host, hostname=self.hostname, port=self.port, user=self.user,
                              host_key_alias=self.host_key_alias)


# -- choosing how to resolve -------------------------------------------------------------------


def explicit_config() -> Path | None:
    """``$CLUSTERCTL_SSH_CONFIG``: read alone, like ``ssh -F FILE`` (``/etc/ssh/ssh_config`` is then not read).
    A file that does not exist counts as empty: ``none``, as ``ssh -F none`` reads no file at all."""
    value = os.environ.get(CONFIG_ENV)
    if not value:
        return None
    path = Path(value).expanduser()
    return path if value.lower() == "none" or path.exists() else Path("none")


def described_config() -> str:
    """The config files in use, for messages."""
    explicit = explicit_config()
    return str(explicit) if explicit else f"{_home() / '.ssh' / 'config'} or {SYSTEM_CONFIG}"


def openssh_usable() -> bool:
    """Whether ``ssh -G`` gives the answer clusterctl wants: the client is installed, and ``$HOME`` is the
    passwd home directory (ssh reads ``~/.ssh/config`` and expands ``~`` from the latter)."""
    if shutil.which("ssh") is None:
        return False
    try:
        return os.path.realpath(_home()) == os.path.realpath(pwd.getpwuid(os.getuid()).pw_dir)
    except KeyError:
        return False


def resolve(host: str, *, hostname: str | None = None, user: str | None = None, port: int | None = None,
            identity_file: str | None = None) -> SshOptions:
    """``host`` resolved like ``ssh -G``, with explicit values winning as ``-o HostName=``, ``-l``, ``-p`` and
    ``-i`` do. ``InvalidInputError`` when the config is broken (as ``ssh`` would refuse it)."""
    if openssh_usable():
        return resolve_with_openssh(host, hostname=hostname, user=user, port=port, identity_file=identity_file)
    return resolve_with_python(host, hostname=hostname, user=user, port=port, identity_file=identity_file)


def options_for(alias: str, settings: HostSettings) -> SshOptions:
    """An inventory host's options: its ``address``, ``user``, ``port`` and ``identity_file`` override the config."""
    identity = None
    if settings.identity_file:
        identity = os.path.expanduser(settings.identity_file)
        if not os.path.isfile(identity):
            raise InvalidInputError(f"identity_file {settings.identity_file} does not exist",
                                    "fix `identity_file:` in the inventory")
    return resolve(alias, hostname=settings.address, user=settings.user, port=settings.port, identity_file=identity)


def resolve_with_openssh(host: str, *, hostname: str | None = None, user: str | None = None, port: int | None = None,
                         identity_file: str | None = None) -> SshOptions:
    argv = ["ssh", "-G"]
    explicit = explicit_config()
    if explicit is not None:
        argv += ["-F", str(explicit)]
    if user is not None:
        argv += ["-l", user]
    if port is not None:
        argv += ["-p", str(port)]
    if hostname is not None:
        argv += ["-o", f"HostName={hostname}"]
    if identity_file is not None:
        argv += ["-i", identity_file]
    try:
        done = subprocess.run([*argv, "--", host], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=SSH_TIMEOUT, errors="replace")
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InvalidInputError(f"cannot run `ssh -G {host}`: {exc}") from None
    if done.returncode != 0:
        reasons = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        raise InvalidInputError(f"ssh config for {host}: {'; '.join(reasons[:3]) or 'ssh -G failed'}",
                                f"fix {described_config()}, or point {CONFIG_ENV} to another file")
    lines = []
    for line in done.stdout.splitlines():
        key, _, value = line.partition(" ")
        if key in KEYS:
            lines.append((key, value))
    return SshOptions(host, tuple(lines), "ssh -G")


def resolve_with_python(host: str, *, hostname: str | None = None, user: str | None = None, port: int | None = None,
                        identity_file: str | None = None, system_config: Path = SYSTEM_CONFIG) -> SshOptions:
    resolver = _Resolver(host, _home())
    options = resolver.options
    options.user = user
    options.port = port if port is not None else -1
    if hostname is not None:
        options.hostname = hostname
    if identity_file is not None:
        options.identity_files.append((identity_file, _FROM_COMMAND_LINE))
    return SshOptions(host, tuple(resolver.resolve(explicit_config(), system_config)), "clusterctl")


# -- the Python resolver -----------------------------------------------------------------------

_WHITESPACE = " \t\r\n"
_MAX_INCLUDE_DEPTH = 16
# IdentityFile/CertificateFile entries are deduplicated per source (readconf.c add_identity_file).
_FROM_SYSTEM, _FROM_COMMAND_LINE, _FROM_USER = 0, 1, 2
_DEFAULT_IDENTITIES = ("id_rsa", "id_ecdsa", "id_ecdsa_sk", "id_ed25519", "id_ed25519_sk", "id_xmss", "id_dsa")
_STRICT_NAMES = {"true": "true", "yes": "true", "false": "false", "no": "false", "off": "false", "ask": "ask",
                 "accept-new": "accept-new"}
_FLAG_NAMES = {"true": "yes", "yes": "yes", "false": "no", "no": "no"}
_CANONICALIZE = {"true": 1, "yes": 1, "false": 0, "no": 0, "always": 2}
# Every keyword OpenSSH 9.2 knows (readconf.c keywords[]) and Debian's additions: an unknown one is an
# error, as for ssh; the ones clusterctl does not use are checked for nothing more.
_KEYWORDS_TEXT = """
protocol cipher fallbacktorsh globalknownhostsfile2 rhostsauthentication userknownhostsfile2 useroaming usersh
useprivilegedport afstokenpassing kerberosauthentication kerberostgtpassing rsaauthentication
rhostsrsaauthentication compressionlevel gssapiauthentication gssapidelegatecredentials pkcs11provider
smartcarddevice forwardagent forwardx11 forwardx11trusted forwardx11timeout exitonforwardfailure xauthlocation
gatewayports passwordauthentication kbdinteractiveauthentication kbdinteractivedevices
challengeresponseauthentication skeyauthentication tisauthentication pubkeyauthentication dsaauthentication
hostbasedauthentication identityfile identityfile2 identitiesonly certificatefile addkeystoagent identityagent
hostname hostkeyalias proxycommand port ciphers macs remoteforward localforward permitremoteopen user host match
escapechar globalknownhostsfile userknownhostsfile connectionattempts batchmode checkhostip stricthostkeychecking
compression tcpkeepalive keepalive numberofpasswordprompts syslogfacility loglevel logverbose dynamicforward
preferredauthentications hostkeyalgorithms casignaturealgorithms bindaddress bindinterface clearallforwardings
enablesshkeysign verifyhostkeydns nohostauthenticationforlocalhost rekeylimit connecttimeout addressfamily
serveraliveinterval serveralivecountmax sendenv setenv controlpath controlmaster controlpersist hashknownhosts
include tunnel tunneldevice localcommand permitlocalcommand remotecommand visualhostkey kexalgorithms ipqos
requesttty sessiontype stdinnull forkafterauthentication proxyusefdpass canonicaldomains canonicalizefallbacklocal
canonicalizehostname canonicalizemaxdots canonicalizepermittedcnames streamlocalbindmask streamlocalbindunlink
revokedhostkeys fingerprinthash updatehostkeys hostbasedacceptedalgorithms hostbasedkeytypes
pubkeyacceptedalgorithms pubkeyacceptedkeytypes ignoreunknown proxyjump securitykeyprovider knownhostscommand
requiredrsasize enableescapecommandline
gssapikeyexchange gssapiclientidentity gssapiserveridentity gssapirenewalforcesrekey gssapitrustdns
gssapikexalgorithms protocolkeepalives setuptimeout
"""
_KNOWN_KEYWORDS = frozenset(_KEYWORDS_TEXT.split())
_ALIASES = {"identityfile2": "identityfile", "protocolkeepalives": "serveraliveinterval",
            "setuptimeout": "serveraliveinterval"}


@dataclass
class _Options:
    """What the config files set so far; -1 / None / empty mean "not yet" (the first value wins)."""

    hostname: str | None = None
    user: str | None = None
    port: int = -1
    identity_files: list[tuple[str, int]] = field(default_factory=list)
    certificate_files: list[tuple[str, int]] = field(default_factory=list)
    identities_only: str | None = None
    strict_host_key_checking: str | None = None
    server_alive_interval: int = -1
    connect_timeout: int = -1
    host_key_alias: str | None = None
    user_known_hosts_files: list[str] | None = None
    global_known_hosts_files: list[str] | None = None
    proxy_command: str | None = None
    jump_host: str | None = None
    jump_user: str | None = None
    jump_port: int = -1
    jump_extra: str | None = None
    canonicalize_hostname: int = -1
    ignore_unknown: str | None = None


class _ConfigError(Exception):
    pass


class _Resolver:
    """readconf.c and the resolution steps of ssh.c's main(), for the keys in KEYS."""

    def __init__(self, host_arg: str, home: Path) -> None:
        self.host_arg = host_arg
        self.home = home
        self.options = _Options()
        self.local_user = _local_user()
        self.want_final_pass = False

    def resolve(self, explicit: Path | None, system_config: Path) -> list[tuple[str, str]]:
        try:
            return self._resolve(explicit, system_config)
        except _ConfigError as exc:
            raise InvalidInputError(f"ssh config for {self.host_arg}: {exc}",
                                    f"fix {described_config()}, or point {CONFIG_ENV} to another file") from None

    def _resolve(self, explicit: Path | None, system_config: Path) -> list[tuple[str, str]]:
        options = self.options
        self._read_all(explicit, system_config, self.host_arg, final=False)
        host = self.host_arg
        if options.hostname is not None:
            host = _expand(options.hostname, {"h": self.host_arg}, environment=False)
        address = _canonical_address(host)
        host = address if address is not None else (host if _looks_like_address(host) else host.lower())
        if options.canonicalize_hostname > 0:
            self.want_final_pass = True  # (clusterctl does not canonicalize through DNS: see README)
        if self.want_final_pass:
            options.hostname = host
            self._read_all(explicit, system_config, host, final=True)
        return self._lines(host)

    def _read_all(self, explicit: Path | None, system_config: Path, host: str, final: bool) -> None:
        if explicit is not None:
            if str(explicit).lower() == "none":
                return
            if not self._read_file(explicit, host, user_config=True, final=final, check_permissions=False,
                                   active=[True], depth=0):
                raise _ConfigError(f"cannot open {explicit}")
            return
        self._read_file(self.home / ".ssh" / "config", host, user_config=True, final=final, check_permissions=True,
                        active=[True], depth=0)
        self._read_file(system_config, host, user_config=False, final=final, check_permissions=False,
                        active=[True], depth=0)

    def _read_file(self, path: Path, host: str, *, user_config: bool, final: bool, check_permissions: bool,
                   active: list[bool], depth: int, never_match: bool = False) -> bool:
        if depth > _MAX_INCLUDE_DEPTH:
            raise _ConfigError("too many recursive configuration includes")
        try:
            with open(path, "rb") as handle:
                if check_permissions:
                    status = os.fstat(handle.fileno())
                    if (status.st_uid not in (0, os.getuid())) or status.st_mode & 0o022:
                        raise _ConfigError(f"bad owner or permissions on {path}")
                data = handle.read()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError):
            return False
        except OSError as exc:
            raise _ConfigError(f"cannot read {path}: {exc.strerror}") from None
        bad = []
        for number, raw in enumerate(data.decode(errors="surrogateescape").split("\n"), 1):
            try:
                self._line(raw, host, path, number, user_config=user_config, final=final, active=active,
                           depth=depth, never_match=never_match)
            except _ConfigError as exc:
                bad.append(f"{path} line {number}: {exc}")
        if bad:
            raise _ConfigError("; ".join(bad[:3]))
        return True

    def _line(self, raw: str, host: str, path: Path, number: int, *, user_config: bool, final: bool,
              active: list[bool], depth: int, never_match: bool) -> None:
        line = raw.rstrip(_WHITESPACE + "\f")
        keyword, rest = _strdelim(line)
        if keyword == "":
            keyword, rest = _strdelim(rest)
        if not keyword or keyword.startswith("#"):
            return
        keyword = keyword.lower()
        rest = (rest or "").lstrip(_WHITESPACE)
        if not rest:
            raise _ConfigError(f'no argument after keyword "{keyword}"')
        if keyword not in _KNOWN_KEYWORDS:
            ignored = self.options.ignore_unknown
            if ignored is not None and match_pattern_list(keyword, ignored, lower=True) == 1:
                return
            raise _ConfigError(f"Bad configuration option: {keyword}")
        keyword = _ALIASES.get(keyword, keyword)
        args = _argv_split(rest)
        if args is None:
            raise _ConfigError("invalid quotes")
        is_active = active[0]
        options = self.options
        if keyword == "host":
            active[0] = False
            for pattern in args:
                if never_match:
                    break
                negated = pattern.startswith("!")
                if _match_pattern(host, pattern[1:] if negated else pattern):
                    if negated:
                        active[0] = False
                        break
                    active[0] = True
            return
        if keyword == "match":
            matched, leftover = self._match(rest, host, final)
            if leftover:
                raise _ConfigError("keyword match extra arguments at end of line")
            active[0] = False if never_match else matched
            return
        if keyword == "include":
            self._include(args, host, user_config=user_config, final=final, active=active, depth=depth)
            return
        if keyword in ("proxycommand", "proxyjump"):
            value = rest.lstrip(_WHITESPACE + "=")
            if keyword == "proxycommand":
                if is_active and options.proxy_command is None:
                    options.proxy_command = value
            else:
                self._proxy_jump(value, is_active)
            return
        if keyword in ("userknownhostsfile", "globalknownhostsfile"):
            for index, value in enumerate(args):
                if value.lower() == "none" and (index > 0 or len(args) > 1):
                    raise _ConfigError(f'keyword {keyword} "none" argument must appear alone.')
            attribute = "user_known_hosts_files" if keyword == "userknownhostsfile" else "global_known_hosts_files"
            if is_active and getattr(options, attribute) is None:
                setattr(options, attribute, list(args))
            return
        if keyword not in ("hostname", "user", "port", "identityfile", "certificatefile", "identitiesonly",
                           "stricthostkeychecking", "serveraliveinterval", "connecttimeout", "hostkeyalias",
                           "canonicalizehostname", "ignoreunknown"):
            return  # a keyword clusterctl does not use
        if not args or not args[0]:
            raise _ConfigError("Missing argument.")
        if len(args) > 1:
            raise _ConfigError(f"keyword {keyword} extra arguments at end of line")
        value = args[0]
        self._set(keyword, value, is_active, _FROM_USER if user_config else _FROM_SYSTEM)

    def _set(self, keyword: str, value: str, is_active: bool, source: int) -> None:
        options = self.options
        if keyword in ("identityfile", "certificatefile"):
            entries = options.identity_files if keyword == "identityfile" else options.certificate_files
            if is_active and (value, source) not in entries:
                entries.append((value, source))
        elif keyword == "port":
            port = _a2port(value)
            if port <= 0:
                raise _ConfigError(f"Bad port '{value}'.")
            if is_active and options.port == -1:
                options.port = port
        elif keyword in ("serveraliveinterval", "connecttimeout"):
            seconds = -1 if value == "none" else _convtime(value)
            if seconds is None:
                raise _ConfigError("invalid time value.")
            attribute = "server_alive_interval" if keyword == "serveraliveinterval" else "connect_timeout"
            if is_active and getattr(options, attribute) == -1:
                setattr(options, attribute, seconds)
        elif keyword in ("identitiesonly", "stricthostkeychecking", "canonicalizehostname"):
            tables: dict[str, Mapping[str, object]] = {"identitiesonly": _FLAG_NAMES,
                                                       "stricthostkeychecking": _STRICT_NAMES,
                                                       "canonicalizehostname": _CANONICALIZE}
            parsed = tables[keyword].get(value.lower())
            if parsed is None:
                raise _ConfigError(f'unsupported option "{value}".')
            attribute = {"identitiesonly": "identities_only", "stricthostkeychecking": "strict_host_key_checking",
                         "canonicalizehostname": "canonicalize_hostname"}[keyword]
            unset = -1 if keyword == "canonicalizehostname" else None
            if is_active and getattr(options, attribute) == unset:
                setattr(options, attribute, parsed)
        else:  # hostname, user, hostkeyalias, ignoreunknown: strings
            attribute = {"hostname": "hostname", "user": "user", "hostkeyalias": "host_key_alias",
                         "ignoreunknown": "ignore_unknown"}[keyword]
            if is_active and getattr(options, attribute) is None:
                setattr(options, attribute, value)

    def _proxy_jump(self, value: str, is_active: bool) -> None:
        """readconf.c parse_jump(): only the last hop is parsed into user/host/port; the others stay text."""
        options = self.options
        if value.lower() == "none":
            if is_active and options.jump_host is None:
                options.jump_host, options.jump_port = "none", 0
            return
        text = value.split("#", 1)[0].rstrip()
        is_active = is_active and options.proxy_command is None and options.jump_host is None
        hops = text.split(",")
        parsed = [parse_hop(hop) for hop in reversed(hops)]
        if any(hop is None for hop in parsed):
            raise _ConfigError(f'Invalid ProxyJump "{value}"')
        if is_active:
            options.jump_user, options.jump_host, options.jump_port = parsed[0]  # type: ignore[misc]
            options.proxy_command = "none"
            if len(hops) > 1:
                options.jump_extra = text[:text.rfind(",")]

    def _include(self, args: list[str], host: str, *, user_config: bool, final: bool, active: list[bool],
                 depth: int) -> None:
        for arg in args:
            if arg.startswith("~") and not user_config:
                raise _ConfigError(f"bad include path {arg}.")
            if not arg.startswith(("/", "~")):
                arg = f"~/.ssh/{arg}" if user_config else f"/etc/ssh/{arg}"
            pattern = str(self.home) + arg[1:] if arg.startswith("~/") or arg == "~" else os.path.expanduser(arg)
            was_active = active[0]
            for path in sorted(glob.glob(pattern)):
                # An included file starts in the including line's state and cannot change it.
                self._read_file(Path(path), host, user_config=user_config, final=final, check_permissions=True,
                                active=active, depth=depth + 1, never_match=not was_active)
                active[0] = was_active

    def _match(self, text: str, host_arg: str, final: bool) -> tuple[bool, str]:
        """readconf.c match_cfg_line(): (matched, what was left unparsed)."""
        options = self.options
        port = options.port if options.port > 0 else 22
        remote_user = options.user if options.user is not None else self.local_user
        if final:
            host = options.hostname or host_arg
        elif options.hostname is not None:
            host = _expand(options.hostname, {"h": host_arg}, environment=False)
        else:
            host = host_arg
        result, attributes = True, 0
        rest: str | None = text
        while True:
            attribute, rest = _strdelim(rest)
            if not attribute:
                break
            if attribute.startswith("#"):
                rest = None
                break
            negate = attribute.startswith("!")
            name = attribute[1:].lower() if negate else attribute.lower()
            if name == "all":
                following, _ = _strdelim(rest) if attributes <= 1 else ("", None)
                if attributes > 1 or (following and not following.startswith("#")):
                    raise _ConfigError(f"'{attribute}' cannot be combined with other Match attributes")
                return result and not negate, ""
            attributes += 1
            if name in ("canonical", "final"):
                if name == "final":
                    self.want_final_pass = True
                if final == negate:
                    result = False
                continue
            argument, rest = _strdelim(rest)
            if not argument or argument.startswith("#"):
                raise _ConfigError(f"Missing Match criteria for {name}")
            if name == "host":
                matched = match_pattern_list(host.lower(), argument, lower=True) == 1
            elif name == "originalhost":
                matched = match_pattern_list(self.host_arg.lower(), argument, lower=True) == 1
            elif name == "user":
                matched = match_pattern_list(remote_user, argument, lower=False) == 1
            elif name == "localuser":
                matched = match_pattern_list(self.local_user, argument, lower=False) == 1
            elif name == "exec":
                tokens = _client_tokens(host_arg=self.host_arg, hostname=host, port=port, user=remote_user,
                                        host_key_alias=options.host_key_alias or host)
                command = _expand(argument, tokens, environment=False)
                if not result:
                    continue  # ssh skips the command once an earlier criterion failed
                matched = _run_match_exec(command) == 0
            else:
                raise _ConfigError(f"Unsupported Match attribute {name}")
            if matched == negate:
                result = False
        if attributes == 0:
            raise _ConfigError("One or more attributes required for Match")
        return result, rest or ""

    def _lines(self, host: str) -> list[tuple[str, str]]:
        """ssh.c's defaults and token expansion, then readconf.c dump_client_config() for KEYS."""
        options = self.options
        user = options.user if options.user is not None else self.local_user
        port = options.port if options.port > 0 else 22
        identities = [path for path, _ in options.identity_files] or [f"~/.ssh/{name}" for name in _DEFAULT_IDENTITIES]
        system_files = options.global_known_hosts_files or ["/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2"]
        user_files = options.user_known_hosts_files or ["~/.ssh/known_hosts", "~/.ssh/known_hosts2"]
        if [f.lower() for f in system_files] == ["none"]:
            system_files = []
        if [f.lower() for f in user_files] == ["none"]:
            user_files = []
        alias = options.host_key_alias.lower() if options.host_key_alias is not None else None
        tokens = _client_tokens(host_arg=self.host_arg, hostname=host, port=port, user=user, host_key_alias=alias)
        try:
            user_files = [_expand(_expand_tilde(f, self.home), tokens, environment=True) for f in user_files]
        except _ConfigError as exc:
            raise _ConfigError(f"UserKnownHostsFile: {exc}") from None
        lines = [("user", user), ("hostname", host), ("port", str(port)),
                 ("identitiesonly", options.identities_only or "no"),
                 ("stricthostkeychecking", options.strict_host_key_checking or "ask"),
                 ("serveraliveinterval", str(max(options.server_alive_interval, 0)))]
        if alias is not None:
            lines.append(("hostkeyalias", alias))
        lines += [("identityfile", path) for path in identities]
        lines += [("certificatefile", path) for path, _ in options.certificate_files]
        lines.append(("globalknownhostsfile", " ".join(system_files) or "none"))
        lines.append(("userknownhostsfile", " ".join(user_files) or "none"))
        lines.append(("connecttimeout", "none" if options.connect_timeout == -1 else str(options.connect_timeout)))
        jump = options.jump_host
        if jump is not None and not (jump == "none" and options.jump_port == 0 and options.jump_user is None):
            numeric = ":" in jump or all(c in "0123456789." for c in jump)
            spec = (f"{options.jump_extra}," if options.jump_extra else "") + (
                f"{options.jump_user}@" if options.jump_user else "") + (f"[{jump}]" if numeric else jump) + (
                f":{options.jump_port}" if options.jump_port > 0 else "")
            lines.append(("proxyjump", spec))
        elif options.proxy_command is not None and options.proxy_command.lower() != "none":
            lines.append(("proxycommand", options.proxy_command))
        return lines


# -- OpenSSH's small parsers and matchers, as in misc.c and match.c ------------------------------


def _strdelim(text: str | None) -> tuple[str | None, str | None]:
    """misc.c strdelim(): the next token (split on whitespace or one '=', honouring double quotes) and the rest."""
    if text is None:
        return None, None
    index = next((i for i, c in enumerate(text) if c in _WHITESPACE + '"='), None)
    if index is None:
        return text, None
    if text[index] == '"':
        text = text[:index] + text[index + 1:]
        close = text.find('"', index)
        if close == -1:
            return None, None
        return text[:close], text[close + 1:].lstrip(_WHITESPACE)
    token, rest = text[:index], text[index + 1:].lstrip(_WHITESPACE)
    if text[index] != "=" and rest.startswith("="):
        rest = rest[1:].lstrip(_WHITESPACE)
    return token, rest


def _argv_split(text: str) -> list[str] | None:
    """misc.c argv_split() with comments: words, with quotes and backslash escapes; None on unbalanced quotes."""
    args: list[str] = []
    i, n = 0, len(text)
    while i < n:
        if text[i] in " \t":
            i += 1
            continue
        if text[i] == "#":
            break
        quote, word = "", []
        while i < n:
            c = text[i]
            if c == "\\" and i + 1 < n and (text[i + 1] in "'\"\\" or (not quote and text[i + 1] == " ")):
                word.append(text[i + 1])
                i += 2
                continue
            if not quote and c in " \t":
                break
            if not quote and c in "\"'":
                quote = c
            elif quote and c == quote:
                quote = ""
            else:
                word.append(c)
            i += 1
        if quote:
            return None
        args.append("".join(word))
    return args


def _match_pattern(string: str, pattern: str) -> bool:
    """match.c match_pattern(): ``*`` and ``?`` wildcards, case-sensitive."""
    return _pattern_regex(pattern).fullmatch(string) is not None


@functools.lru_cache(maxsize=256)
def _pattern_regex(pattern: str) -> re.Pattern[str]:
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern), re.DOTALL)


def match_pattern_list(string: str, patterns: str, *, lower: bool) -> int:
    """match.c match_pattern_list(): 1 for a positive match, -1 if a negated pattern matches, else 0."""
    positive = 0
    for pattern in patterns.split(","):
        negated = pattern.startswith("!")
        pattern = pattern[1:] if negated else pattern
        if _match_pattern(string, pattern.lower() if lower else pattern):
            if negated:
                return -1
            positive = 1
    return positive


def parse_hop(spec: str) -> tuple[str | None, str, int] | None:
    """``[user@]host[:port]``, ``[user@][host]:port`` or ``ssh://[user@]host[:port]``: (user, host, port or -1)."""
    if spec.startswith("ssh://"):
        rest = spec[len("ssh://"):]
        user = None
        if "@" in rest:
            user, rest = rest.split("@", 1)
            user = user.split(";", 1)[0]
            if not user:
                return None
        host, delimiter, tail = _hpdelim(rest, "/:")
        if not host:
            return None
        port = -1
        if tail:
            if delimiter == ":":
                tail, _, path = tail.partition("/")
                port = _a2port(tail)
                if port <= 0 or path:
                    return None
            elif tail:
                return None  # a path is not allowed
        return user, host, port
    user = None
    if "@" in spec:
        user, spec = spec.rsplit("@", 1)
        if not user:
            return None
    host, _, tail = _hpdelim(spec, ":/")
    if not host:
        return None
    port = _a2port(tail) if tail else -1
    if tail and port <= 0:
        return None
    return user, host, port


def _hpdelim(text: str, delimiters: str) -> tuple[str | None, str, str]:
    """misc.c hpdelim2(): (host without brackets, the delimiter, the rest)."""
    if text.startswith("["):
        close = text.find("]")
        if close == -1:
            return None, "", ""
        host, after = text[1:close], text[close + 1:]
        if after and after[0] not in delimiters:
            return None, "", ""
        return host, after[:1], after[1:]
    index = next((i for i, c in enumerate(text) if c in delimiters), len(text))
    return text[:index], text[index:index + 1], text[index + 1:]


def _a2port(text: str) -> int:
    if text.isdigit():
        port = int(text)
        return port if port <= 65535 else -1
    try:
        return socket.getservbyname(text, "tcp")
    except OSError:
        return -1


def _convtime(text: str) -> int | None:
    """misc.c convtime(): ``90``, ``1h30m``, ``2d``... in seconds; None if invalid."""
    if not text:
        return None
    units = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    total, i = 0, 0
    while i < len(text):
        j = i
        while j < len(text) and text[j].isdigit():
            j += 1
        if j == i:
            return None
        unit = text[j:j + 1].lower()
        if unit not in units:
            return None
        total += int(text[i:j]) * units[unit]
        i = j + (1 if unit else 0)
    return total if total <= 2**31 - 1 else None


def _expand(text: str, tokens: Mapping[str, str], *, environment: bool) -> str:
    """misc.c percent_expand() / percent_dollar_expand(): ``%x`` tokens, ``%%``, and ``${VAR}``."""
    out, i = [], 0
    while i < len(text):
        c = text[i]
        if environment and text.startswith("${", i):
            end = text.find("}", i + 2)
            if end == -1:
                raise _ConfigError(f"environment variable '{text[i + 2:]}' missing closing '}}'")
            name = text[i + 2:end]
            if not name:
                raise _ConfigError("zero-length environment variable")
            if name not in os.environ:
                raise _ConfigError(f"env var ${{{name}}} has no value")
            out.append(os.environ[name])
            i = end + 1
            continue
        if c != "%":
            out.append(c)
            i += 1
            continue
        if i + 1 >= len(text):
            raise _ConfigError(f"invalid format in {text!r}")
        token = text[i + 1]
        if token == "%":
            out.append("%")
        elif token in tokens:
            out.append(tokens[token])
        else:
            raise _ConfigError(f"unknown key %{token} in {text!r}")
        i += 2
    return "".join(out)


def _expand_tilde(path: str, home: Path) -> str:
    """misc.c tilde_expand(): ``~`` and ``~/x`` from home, ``~user/x`` from that user's home."""
    if not path.startswith("~"):
        return path
    head, slash, tail = path[1:].partition("/")
    if head:
        try:
            base = pwd.getpwnam(head).pw_dir
        except KeyError:
            raise _ConfigError(f"no such user {head}") from None
    else:
        base = str(home)
    tail = tail.lstrip("/")
    return base.rstrip("/") + "/" + tail if (slash or tail) else base.rstrip("/") + "/"


def _client_tokens(*, host_arg: str, hostname: str, port: int, user: str, host_key_alias: str | None
                   ) -> dict[str, str]:
    """DEFAULT_CLIENT_PERCENT_EXPAND_ARGS: %C %L %i %k %l %n %p %d %h %r %u."""
    this_host = socket.gethostname()
    digest = hashlib.sha1(f"{this_host}{hostname}{port}{user}".encode()).hexdigest()
    return {"C": digest, "L": this_host.split(".")[0], "i": str(os.getuid()), "k": host_key_alias or host_arg,
            "l": this_host, "n": host_arg, "p": str(port), "d": str(_home()), "h": hostname, "r": user,
            "u": _local_user()}


def _looks_like_address(host: str) -> bool:
    """ssh.c is_addr_fast(): such names are never lowercased."""
    return "%" in host or ":" in host or all(c in "0123456789." for c in host)


def _canonical_address(host: str) -> str | None:
    """ssh.c resolve_addr(): a numeric address in its canonical form (``::0001`` -> ``::1``); None for a name."""
    try:
        found = socket.getaddrinfo(host, "22", 0, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST | socket.AI_NUMERICSERV)
    except (socket.gaierror, UnicodeError, ValueError):
        return None
    if len(found) != 1:
        return None
    try:
        numeric, _ = socket.getnameinfo(found[0][4], socket.NI_NUMERICHOST | socket.NI_NUMERICSERV)
    except (socket.gaierror, OSError):
        return None
    return numeric if numeric.lower() != host.lower() else host


def _run_match_exec(command: str) -> int:
    """readconf.c execute_in_shell(): ``$SHELL -c COMMAND`` with stdin and stdout on /dev/null."""
    shell = os.environ.get("SHELL") or "/bin/sh"
    if not os.access(shell, os.X_OK):
        raise _ConfigError(f'shell "{shell}" is not executable')
    try:
        done = subprocess.run([shell, "-c", command], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=False)
    except OSError as exc:
        raise _ConfigError(f"match exec {command!r}: {exc.strerror}") from None
    if done.returncode < 0:
        raise _ConfigError(f"match exec {command!r} error")
    return done.returncode


def _home() -> Path:
    """``$HOME`` (clusterctl's ``~``), else the passwd entry's home."""
    return Path(os.path.expanduser("~"))


def _local_user() -> str:
    """The login name ssh uses for %u, ``Match localuser`` and the default User: the passwd entry of our uid."""
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:  # no passwd entry, e.g. in a bare container
        return os.environ.get("USER") or os.environ.get("LOGNAME") or str(os.getuid())


__all__ = ["KEYS", "SshOptions", "explicit_config", "match_pattern_list", "openssh_usable", "options_for", "parse_hop",
           "resolve", "resolve_with_openssh", "resolve_with_python"]
