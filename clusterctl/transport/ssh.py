"""``connection: ssh``: a host reached through paramiko, connected as OpenSSH's ``ssh`` would.

The connection and its errors live here: connect (through ProxyJump hops or a ProxyCommand), run a
command, read and write files over SFTP, forward a port. How to reach a host comes from
``ssh_config`` (resolved as ``ssh -G`` does), whether to trust it from ``known_hosts``, which keys
to offer from ``identities``. Every library error becomes a one-line ``HostError`` with a hint.

A password (``CLUSTERCTL_SSH_PASSWORD`` or the prompt) is offered only after keys failed, and only
to a server whose host key was trusted before this connection: a key first seen now, under
``accept-new``, could be a spoofed host's.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import os
import shlex
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from errno import ECONNREFUSED
from itertools import pairwise

import paramiko

from clusterctl import paths
from clusterctl.errors import HostError, InvalidInputError, UnresolvableHostError
from clusterctl.inventory import HostSettings
from clusterctl.transport import certificates, identities, known_hosts, ssh_config
from clusterctl.transport.base import (
    MAX_OUTPUT_BYTES,
    STREAM_END_WAIT,
    CommandResult,
    LineReader,
    too_much_output,
)
from clusterctl.transport.ssh_config import SshOptions

CONNECT_TIMEOUT = 10.0  # seconds for TCP connect, SSH handshake, authentication and opening a channel
KEEPALIVE_INTERVAL = 30  # seconds, unless ServerAliveInterval sets one
PASSWORD_ENV = "CLUSTERCTL_SSH_PASSWORD"
MAX_HOPS = 8  # ProxyJump chains, including a first hop's own ProxyJump
# sshd allows 10 sessions per connection (MaxSessions); keep one free for SFTP and one spare.
MAX_CONCURRENT_RUNS = 8
# Every command runs as `sh -c '<say pid>; exec "$@"' sh ARGV...`: the same process, exit status and
# streams, plus one first line on stderr naming its pid, so that a command that outlives its timeout can
# be ended on the host with everything it started (sshd does not end it when the channel closes, and
# it refuses RFC 4254 "signal" requests for root sessions).
_PID_LINE = b"CLUSTERCTL-PID "
_ANNOUNCE_PID = 'printf "CLUSTERCTL-PID %s\\n" "$$" >&2; exec "$@"'
# Kills the command's process group (sshd made each session its own) and the command itself.
_END_SESSION = ('stat=$(cat "/proc/$1/stat" 2>/dev/null) && set -- "$1" ${stat##*) } && [ "$4" -gt 1 ] '
                '&& kill -9 "-$4" 2>/dev/null; kill -9 "$1" 2>/dev/null; true')  # dash's kill takes no --
_AUTH_HINT = f"check `identity_file:` / IdentityFile, that your key is loaded in ssh-agent, or set {PASSWORD_ENV}"
# StrictHostKeyChecking as `ssh -G` prints it -> clusterctl's policy. clusterctl cannot ask in the
# middle of a fan-out ("ask", the default, and "no" behave like accept-new), and never connects to
# a host whose key changed or was revoked.
_POLICY_FROM_CONFIG = {"true": "strict", "accept-new": "accept-new", "ask": "accept-new", "false": "accept-new"}
# paramiko logs failed handshakes with tracebacks from its own threads; with no handler at all, Python
# would print them on stderr next to our one-line HostError. Handlers the CLI installs still get them.
logging.getLogger("paramiko").addHandler(logging.NullHandler())


@dataclass(frozen=True)
class _Endpoint:
    """One machine to authenticate to: the target, or a ProxyJump hop on the way."""

    name: str  # as the user wrote it (alias or hop), for messages and the password prompt
    options: SshOptions
    host_key_policy: str  # "strict" or "accept-new"
    is_hop: bool = False

    @property
    def hostname(self) -> str:
        return self.options.hostname

    @property
    def port(self) -> int:
        return self.options.port

    @property
    def user(self) -> str:
        return self.options.user

    @property
    def timeout(self) -> float:
        return self.options.connect_timeout or CONNECT_TIMEOUT

    @property
    def known_hosts_name(self) -> str:
        """How OpenSSH names this server in known_hosts."""
        return known_hosts.known_hosts_name(self.hostname, self.port, self.options.host_key_alias)


class _HostKeyRefusedError(Exception):
    """The server's host key is not trusted; carries the verdict and the key for the message."""

    def __init__(self, verdict: known_hosts.Verdict, key: paramiko.PKey) -> None:
        super().__init__(f"host key of {verdict.name} refused: {verdict.status.value}")
        self.verdict, self.key = verdict, key


class _PasswordWithheldError(paramiko.AuthenticationException):
    """Keys failed and a password exists, but the host's key was first seen on this connection."""

    def __init__(self, key: paramiko.PKey) -> None:
        super().__init__("password withheld from a host seen for the first time")
        self.key = key


class _Transport(paramiko.Transport):
    """paramiko's Transport offering host key algorithms in OpenSSH's order: certificates first (paramiko
    puts them last), then reordered for the keys and CAs known for the host."""

    host_key_order: tuple[str, ...] = ()

    @property
    def preferred_keys(self) -> tuple[str, ...]:
        return self.host_key_order or tuple(super().preferred_keys)

    def openssh_host_key_algorithms(self) -> list[str]:
        """paramiko's host key algorithms in OpenSSH 9.2's default order: the certificate types first."""
        default = list(super().preferred_keys)
        certified = [a for a in default if certificates.is_certificate_type(a)]
        return certified + [a for a in default if a not in certified]


class SSHStream(LineReader):
    def __init__(self, channel: paramiko.Channel, release: Callable[[], None], feeder: threading.Thread,
                 input_open: bool = False) -> None:
        self._channel = channel
        self._release: Callable[[], None] | None = release
        self._feeder = feeder
        self._input_open = input_open
        super().__init__(channel.makefile("rb").readline)

    def exit_status(self, timeout: float) -> int | None:
        if not self._channel.status_event.wait(timeout):
            return None
        return self._channel.recv_exit_status()

    def send(self, data: bytes) -> None:
        self._feeder.join()  # the first input goes first
        try:
            self._channel.sendall(data)
        except (EOFError, paramiko.SSHException) as exc:
            raise OSError(f"cannot send to the command: {_one_line(exc)}") from None

    def close(self) -> None:
        if self._input_open:  # the end of its input first: an agent waiting on it exits, and we see it go
            self._input_open = False
            self._feeder.join()
            with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
                self._channel.shutdown_write()
            self.ended.wait(STREAM_END_WAIT)
        self._channel.close()  # sshd closes the command's output: the agent exits
        release, self._release = self._release, None
        if release is not None:
            release()


class SSHTransport:
    """A lazily opened SSH connection to one host, shared by every call (and thread)."""

    def __init__(self, alias: str, settings: HostSettings,
                 password_prompt: Callable[[str], str] | None = None) -> None:
        self.host = alias
        self._settings = settings
        self._password_prompt = password_prompt
        self._lock = threading.RLock()
        self._sftp_lock = threading.Lock()
        self._sessions = threading.BoundedSemaphore(MAX_CONCURRENT_RUNS)
        self._clients: list[paramiko.Transport] = []  # jump hops first, the target last
        self._sftp: paramiko.SFTPClient | None = None
        self._tunnels: list[socket.socket] = []
        # Resolve the config now, for `address`; a broken config is reported when we connect.
        self._target: _Endpoint | None = None
        self._config_error: HostError | None = None
        try:
            options = ssh_config.options_for(alias, settings)
            self._target = _Endpoint(alias, options, self._policy(options))
        except InvalidInputError as exc:
            self._config_error = HostError(alias, exc.message, exc.hint)
        self.address = settings.address or (self._target.hostname if self._target else alias)

    def __repr__(self) -> str:
        return f"SSHTransport({self.host!r}, address={self.address!r})"

    def __enter__(self) -> SSHTransport:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            for server in self._tunnels:
                server.close()
            self._tunnels = []
            if self._sftp is not None:
                self._sftp.close()
                self._sftp = None
            for client in reversed(self._clients):  # the target first, then the hops it runs through
                client.close()
            self._clients = []

    # -- commands and files ------------------------------------------------------------------

    def connect(self) -> None:
        try:
            self._client()
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise HostError(self.host, f"ssh error while connecting: {_one_line(exc)}") from None

    def run(self, argv: list[str], *, stdin: bytes | None = None, timeout: float = 60.0) -> CommandResult:
        deadline = time.monotonic() + timeout
        result = None
        if self._sessions.acquire(timeout=timeout):
            try:
                stderr = bytearray()
                channel = self._open_session()
                try:
                    result = self._exchange(channel, argv, stdin, deadline, stderr)
                finally:
                    channel.close()  # also ends the reader threads of a command that timed out
                    if result is None:  # timed out, or too much output: it would run on there
                        self._end_on_host(stderr)
            except (paramiko.SSHException, EOFError, OSError) as exc:
                raise HostError(self.host, f"ssh error while running {argv[0]}: {_one_line(exc)}") from None
            finally:
                self._sessions.release()
        if result is None:
            raise HostError(self.host, f"{argv[0]} did not finish within {timeout:g}s")
        return result

    def _end_on_host(self, stderr: bytearray) -> None:
        """Kill the command that announced its pid on ``stderr``, and its process group, on the host."""
        first = bytes(stderr).partition(b"\n")[0]
        if not first.startswith(_PID_LINE) or not first[len(_PID_LINE):].isdigit():
            return  # it never started (the connection or the shell failed first)
        channel = self._open_session()
        try:
            channel.exec_command(shlex.join(["sh", "-c", _END_SESSION, "sh", first[len(_PID_LINE):].decode()]))
            channel.shutdown_write()
            channel.status_event.wait(CONNECT_TIMEOUT)
        finally:
            channel.close()

    def _exchange(self, channel: paramiko.Channel, argv: list[str], stdin: bytes | None,
                  deadline: float, stderr: bytearray) -> CommandResult | None:
        """Run ``argv`` on ``channel``, its stderr into ``stderr``; None if it did not finish by ``deadline``."""
        # The one place where an argv becomes a string for a shell.
        channel.exec_command(shlex.join(["sh", "-c", _ANNOUNCE_PID, "sh", *argv]))
        stdout = bytearray()
        # Both streams are drained at once: an unread stderr would stall stdout when its window fills.
        workers = [threading.Thread(target=_drain, args=(channel.recv, stdout), daemon=True),
                   threading.Thread(target=_drain, args=(channel.recv_stderr, stderr), daemon=True)]
        if stdin:  # fed from a thread too, so a command that writes before it reads cannot deadlock
            workers.append(threading.Thread(target=_feed, args=(channel, stdin), daemon=True))
        else:
            channel.shutdown_write()  # EOF on stdin, like the local transport's DEVNULL
        for worker in workers:
            worker.start()
        for worker in workers:
            while worker.is_alive() and time.monotonic() < deadline and max(len(stdout), len(stderr)) <= MAX_OUTPUT_BYTES:
                worker.join(min(0.1, max(0.0, deadline - time.monotonic())))
        if max(len(stdout), len(stderr)) > MAX_OUTPUT_BYTES:  # run() closes the channel, which ends the command
            raise HostError(self.host, too_much_output(argv[0]))
        if any(w.is_alive() for w in workers) or not channel.status_event.wait(max(0.0, deadline - time.monotonic())):
            return None
        status = channel.recv_exit_status()
        transport = channel.get_transport()
        if status == -1 and not transport.is_active():  # -1 alone means killed by a signal
            raise HostError(self.host, f"the connection was lost while {argv[0]} ran")
        if stderr.startswith(_PID_LINE):
            del stderr[:stderr.find(b"\n") + 1]
        return CommandResult(status, stdout.decode(errors="replace"), stderr.decode(errors="replace"))

    def stream(self, argv: list[str], *, stdin: bytes, keep_input: bool = False) -> SSHStream:
        if not self._sessions.acquire(timeout=CONNECT_TIMEOUT):
            raise HostError(self.host, f"no free session to run {argv[0]} within {CONNECT_TIMEOUT:g}s")
        try:
            channel = self._open_session()
            channel.set_combine_stderr(True)
            channel.exec_command(shlex.join(argv))
        except (paramiko.SSHException, EOFError, OSError) as exc:
            self._sessions.release()
            raise HostError(self.host, f"ssh error while running {argv[0]}: {_one_line(exc)}") from None
        except BaseException:
            self._sessions.release()
            raise
        feeder = threading.Thread(target=_feed, args=(channel, stdin, keep_input), daemon=True)
        feeder.start()
        return SSHStream(channel, self._sessions.release, feeder, keep_input)

    def put_file(self, path: str, data: bytes, mode: int = 0o600) -> None:
        with self._sftp_lock:
            sftp = self._open_sftp()
            try:
                with sftp.open(_sftp_path(path), "wb") as handle:
                    handle.chmod(mode)  # before the first byte, so the data is never readable under a wider mode
                    handle.set_pipelined(True)
                    handle.write(data)
            except (OSError, paramiko.SSHException) as exc:
                raise HostError(self.host, f"cannot write {path}: {_reason(exc)}",
                                "does the parent directory exist and is it writable by the ssh user?") from None

    def open_tunnel(self, remote_host: str, remote_port: int, listener: socket.socket | None = None) -> int:
        """Like `ssh -L`: a free port on this machine's 127.0.0.1 (or the caller's ``listener``, e.g. a
        Unix socket) whose connections are carried to ``remote_host:remote_port`` as seen from the
        host. It lasts until ``close()``."""
        transport = self._client()
        server = listener or socket.create_server(("127.0.0.1", 0))
        self._tunnels.append(server)

        def accept() -> None:
            while True:
                try:
                    connection, peer = server.accept()
                except OSError:
                    return  # closed
                try:
                    channel = transport.open_channel("direct-tcpip", (remote_host, remote_port),
                                                     peer if isinstance(peer, tuple) else ("127.0.0.1", 0),
                                                     timeout=CONNECT_TIMEOUT)
                except (paramiko.SSHException, OSError):
                    connection.close()
                    continue
                threading.Thread(target=_pump, args=(connection, channel), daemon=True).start()

        threading.Thread(target=accept, daemon=True).start()
        return server.getsockname()[1] if server.family != socket.AF_UNIX else 0

    def _open_session(self) -> paramiko.Channel:
        transport = self._client()
        try:
            return transport.open_session(timeout=CONNECT_TIMEOUT)
        except paramiko.ChannelException as exc:
            raise HostError(self.host, f"the server refused a new session: {exc.text}",
                            "raise MaxSessions in the host's sshd_config") from None

    def _open_sftp(self) -> paramiko.SFTPClient:
        channel = self._sftp.get_channel() if self._sftp is not None else None
        if channel is None or channel.closed or not channel.get_transport().is_active():
            try:
                self._sftp = paramiko.SFTPClient.from_transport(self._client())
            except paramiko.SSHException as exc:
                raise HostError(self.host, f"cannot start SFTP: {_one_line(exc)}",
                                "enable `Subsystem sftp` in the host's sshd_config") from None
        assert self._sftp is not None
        return self._sftp

    # -- connecting --------------------------------------------------------------------------

    def _client(self) -> paramiko.Transport:
        """The authenticated transport to the target; connects (again) if needed."""
        with self._lock:
            if self._clients:
                if self._clients[-1].is_active():
                    return self._clients[-1]
                self.close()
            self._clients = self._connect()
            return self._clients[-1]

    def _connect(self) -> list[paramiko.Transport]:
        if self._target is None:
            assert self._config_error is not None
            raise self._config_error
        target = self._target
        hops = self._hops(target)
        first = hops[0] if hops else target
        sock: paramiko.ProxyCommand | paramiko.Channel | socket.socket | None = None
        clients: list[paramiko.Transport] = []
        try:
            sock = self._first_socket(first)
            for hop, after in pairwise([*hops, target]):
                clients.append(self._login(hop, sock))
                sock = self._forward(clients[-1], hop, after)
            clients.append(self._login(target, sock))
        except BaseException:
            for client in reversed(clients):  # a failed login closed its own transport, and with it `sock`
                client.close()
            raise
        return clients

    def _first_socket(self, endpoint: _Endpoint) -> paramiko.ProxyCommand | socket.socket:
        """A TCP connection to ``endpoint``, or its ProxyCommand run as OpenSSH runs it (``$SHELL -c "exec ..."``)."""
        try:
            command = endpoint.options.expand_proxy_command()
        except InvalidInputError as exc:
            raise HostError(self.host, exc.message, exc.hint) from None
        if command is not None:
            shell = os.environ.get("SHELL") or "/bin/sh"
            return paramiko.ProxyCommand(shlex.join([shell, "-c", command]))
        try:
            return socket.create_connection((endpoint.hostname, endpoint.port), timeout=endpoint.timeout)
        except OSError as exc:
            raise self._connect_error(exc, endpoint) from None

    def _hops(self, target: _Endpoint) -> list[_Endpoint]:
        """The ProxyJump chain to ``target``, first hop first. Like OpenSSH, the first hop's own ProxyJump
        and ProxyCommand are honoured (each hop is reached with ``ssh -J`` through the earlier ones)."""
        chain: list[_Endpoint] = []
        specs = target.options.proxy_jump
        while specs:
            hops = [self._hop(spec) for spec in specs]
            chain = hops + chain
            if len(chain) > MAX_HOPS:
                raise HostError(self.host, f"more than {MAX_HOPS} ProxyJump hops (a loop?)",
                                f"check ProxyJump in {ssh_config.described_config()}")
            specs = hops[0].options.proxy_jump
        return chain

    def _hop(self, spec: str) -> _Endpoint:
        """A ProxyJump entry, ``[user@]host[:port]`` or ``ssh://...``, itself resolved through ssh config."""
        parsed = ssh_config.parse_hop(spec.strip())
        if parsed is None:
            raise HostError(self.host, f"cannot parse ProxyJump {spec!r}", "write it as [user@]host[:port]")
        user, host, port = parsed
        endpoint = self._endpoint(host, user=user, port=port if port > 0 else None)
        # Named for messages as people write it (ssh -G prints a numeric host in brackets).
        name = (f"{user}@" if user else "") + (f"[{host}]" if ":" in host else host) + (f":{port}" if port > 0 else "")
        return _Endpoint(name, endpoint.options, endpoint.host_key_policy, is_hop=True)

    def _endpoint(self, name: str, *, user: str | None = None, port: int | None = None) -> _Endpoint:
        """``name`` resolved through ssh config as ``ssh -G -l USER -p PORT NAME`` would."""
        try:
            options = ssh_config.resolve(name, user=user, port=port)
        except InvalidInputError as exc:
            raise HostError(self.host, exc.message, exc.hint) from None
        return _Endpoint(name, options, self._policy(options))

    def _policy(self, options: SshOptions) -> str:
        """The inventory's host_key_policy, else StrictHostKeyChecking's, else accept-new."""
        return self._settings.host_key_policy or _POLICY_FROM_CONFIG.get(options.strict_host_key_checking,
                                                                         "accept-new")

    def _login(self, endpoint: _Endpoint, sock: paramiko.ProxyCommand | paramiko.Channel | socket.socket
               ) -> paramiko.Transport:
        """Handshake, host key check and authentication on ``sock``; the transport on success."""
        own_known_hosts = paths.known_hosts_file()
        known = known_hosts.KnownHosts.read([*endpoint.options.known_hosts_files, own_known_hosts])
        transport = _Transport(sock)
        transport.host_key_order = tuple(known.host_key_algorithms(
            transport.openssh_host_key_algorithms(), endpoint.hostname, endpoint.port,
            endpoint.options.host_key_alias))
        transport.banner_timeout = transport.handshake_timeout = transport.auth_timeout = endpoint.timeout
        agent: paramiko.Agent | None = None
        try:
            transport.start_client(timeout=endpoint.timeout)
            key = transport.get_remote_server_key()
            verdict = self._check_host_key(known, key, endpoint)
            agent = _agent()
            self._authenticate(transport, endpoint, agent, trusted=verdict.status is known_hosts.Status.TRUSTED)
            if verdict.status is known_hosts.Status.NEW:  # accept-new: remembered once logged in with a key
                known_hosts.remember(own_known_hosts, verdict.name, key.get_name(), key.asbytes())
        except HostError:
            transport.close()
            raise
        except InvalidInputError as exc:  # a token in IdentityFile/CertificateFile that ssh would refuse too
            transport.close()
            raise HostError(self.host, exc.message, exc.hint) from None
        except OSError as exc:
            transport.close()
            if exc.filename is not None:  # remembering the key failed
                raise HostError(self.host, f"cannot record the host key in {exc.filename}: {exc.strerror}",
                                "check the permissions of $CLUSTERCTL_HOME") from None
            raise self._connect_error(exc, endpoint) from None
        except (EOFError, paramiko.SSHException, _HostKeyRefusedError) as exc:
            transport.close()
            raise self._connect_error(exc, endpoint) from None
        finally:
            if agent is not None:
                agent.close()  # signing is done once logged in
        transport.set_keepalive(endpoint.options.server_alive_interval or KEEPALIVE_INTERVAL)
        return transport

    def _check_host_key(self, known: known_hosts.KnownHosts, key: paramiko.PKey, endpoint: _Endpoint
                        ) -> known_hosts.Verdict:
        certificate = None
        blob = getattr(key, "public_blob", None)
        if blob is not None and certificates.is_certificate_type(blob.key_type):
            try:
                certificate = certificates.parse(blob.key_blob)
            except certificates.CertificateFormatError:
                certificate = None  # checked as its plain key, like a certificate from an unknown CA
        verdict = known.check(key.get_name(), key.asbytes(), certificate, endpoint.hostname, endpoint.port,
                              endpoint.options.host_key_alias)
        refuse = verdict.status in (known_hosts.Status.CHANGED, known_hosts.Status.REVOKED) or (
            verdict.status is known_hosts.Status.NEW
            # Stricter than OpenSSH, which would trust the plain key on first use under accept-new:
            # a certificate our CA signed but that fails its checks is never a first contact.
            and (endpoint.host_key_policy == "strict" or verdict.certificate_problem is not None))
        if refuse:
            raise _HostKeyRefusedError(verdict, key)
        return verdict

    def _authenticate(self, transport: paramiko.Transport, endpoint: _Endpoint, agent: paramiko.Agent | None,
                      trusted: bool) -> None:
        """Keys in OpenSSH's order, then a password, as OpenSSH's PreferredAuthentications would."""
        extra = []
        if endpoint.is_hop and self._settings.identity_file:
            # OpenSSH would not offer the inventory's key to a jump host; offering it last saves a config entry.
            extra.append(os.path.expanduser(self._settings.identity_file))
        agent_keys = list(agent.get_keys()) if agent is not None else []
        failure: paramiko.AuthenticationException | None = None
        for identity in identities.identities(endpoint.options, agent_keys, extra):
            try:
                transport.auth_publickey(endpoint.user, identity.key)
            except paramiko.BadAuthenticationType as exc:
                failure = exc
                break  # the server takes no keys
            except paramiko.AuthenticationException as exc:
                failure = exc
                if not transport.is_active():
                    break
                continue
            if transport.is_authenticated():
                return
        if not transport.is_active() or not self._password_available():
            raise failure or paramiko.AuthenticationException("no key was accepted")
        if not trusted:
            raise _PasswordWithheldError(transport.get_remote_server_key())
        transport.auth_password(endpoint.user, self._password(endpoint))
        if not transport.is_authenticated():  # the server wants yet another method
            raise paramiko.AuthenticationException("the password was not enough")

    def _forward(self, hop: paramiko.Transport, endpoint: _Endpoint, after: _Endpoint) -> paramiko.Channel:
        """A direct-tcpip channel from ``hop`` to the next machine: the socket for the next login."""
        try:
            return hop.open_channel("direct-tcpip", (after.hostname, after.port), ("127.0.0.1", 0),
                                    timeout=endpoint.timeout)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            reason = exc.text if isinstance(exc, paramiko.ChannelException) else _one_line(exc)
            raise HostError(self.host, f"ProxyJump hop {endpoint.name} cannot reach {after.hostname}:{after.port}: "
                            f"{reason}", "is sshd running there? check `port:`, and AllowTcpForwarding on the hop"
                            ) from None

    def _password_available(self) -> bool:
        return bool(os.environ.get(PASSWORD_ENV)) or (
            self._password_prompt is not None and sys.stdin is not None and sys.stdin.isatty())

    def _password(self, endpoint: _Endpoint) -> str:
        """The password from the environment, else from the prompt (only asked when available)."""
        password = os.environ.get(PASSWORD_ENV)
        if password:
            return password
        assert self._password_prompt is not None
        return self._password_prompt(endpoint.name)

    def _connect_error(self, exc: BaseException, endpoint: _Endpoint) -> HostError:
        """The one-line HostError for a failure to reach or log in to ``endpoint``."""
        where = f"{endpoint.hostname}:{endpoint.port}"
        prefix = f"ProxyJump hop {endpoint.name}: " if endpoint.is_hop else ""
        message, hint = f"ssh error: {_one_line(exc)}", None
        if isinstance(exc, _HostKeyRefusedError):
            message, hint = self._host_key_message(exc, endpoint)
        elif isinstance(exc, _PasswordWithheldError):
            message = (f"authentication failed for user {endpoint.user}: no key was accepted, and a password is "
                       f"offered only to a host whose key was known before; this one's {exc.key.get_name()} key "
                       f"({exc.key.fingerprint}) was seen for the first time")
            hint = (f"if that is the host's key, add it: ssh-keyscan -p {endpoint.port} {endpoint.hostname} >> "
                    f"{shlex.quote(str(paths.known_hosts_file()))}")
        elif isinstance(exc, paramiko.AuthenticationException):
            message, hint = f"authentication failed for user {endpoint.user}", _AUTH_HINT
        elif isinstance(exc, socket.gaierror):
            message = f"cannot resolve hostname {endpoint.hostname}"
            hint = f"check `address:` in the inventory, or HostName in {ssh_config.described_config()}"
        elif isinstance(exc, ConnectionRefusedError) or getattr(exc, "errno", None) == ECONNREFUSED:
            message, hint = f"connection refused on {where}", "is sshd running? check `port:`"
        elif isinstance(exc, TimeoutError):
            message, hint = f"timed out connecting to {where}", "is the host up and the port open in its firewall?"
        elif isinstance(exc, OSError):
            message = f"cannot connect to {where}: {_reason(exc)}"
        elif isinstance(exc, paramiko.ProxyCommandFailure):
            message = f"ProxyCommand failed: {' '.join(str(exc.error).split())}"
            hint = f"check ProxyCommand in {ssh_config.described_config()}"
        elif (isinstance(exc, EOFError) or str(exc).startswith("Error reading SSH protocol banner")
              or str(exc) == "No existing session"):  # what paramiko says when the handshake timed out
            message = f"no ssh server answered on {where} (closed, or no SSH banner within {endpoint.timeout:g}s)"
            hint = (f"check ProxyCommand in {ssh_config.described_config()}" if endpoint.options.proxy_command
                    else "is that port sshd's? check `port:`")
        error_type = UnresolvableHostError if isinstance(exc, socket.gaierror) else HostError
        return error_type(self.host, prefix + message, hint)

    def _host_key_message(self, refused: _HostKeyRefusedError, endpoint: _Endpoint) -> tuple[str, str | None]:
        verdict, key = refused.verdict, refused.key
        name, fingerprint = verdict.name, key.fingerprint
        entry = verdict.entry
        if verdict.status is known_hosts.Status.REVOKED:
            assert entry is not None
            what = "the CA that signed its certificate" if verdict.revoked_ca else f"its {key.get_name()} key"
            return (f"the host key of {name} is REVOKED: {what} ({fingerprint}) is marked @revoked in {entry.where}",
                    "a revoked key may be stolen; ask the host's administrator for its new key")
        if verdict.status is known_hosts.Status.CHANGED:
            assert entry is not None
            message = (f"the host key of {name} has CHANGED (server offers {fingerprint}, {entry.path} "
                       f"expects {_entry_fingerprint(entry)}): the host was reinstalled, or someone is "
                       f"intercepting the connection")
            hint = (f"if the change is expected, forget the old key: ssh-keygen -R {shlex.quote(name)} "
                    f"-f {shlex.quote(entry.path)}")
            return message, hint
        if verdict.certificate_problem is not None:
            return (f"the host certificate of {name} is not valid: {verdict.certificate_problem}, and its "
                    f"{key.get_name()} key ({fingerprint}) is not known",
                    "renew the host's certificate (ssh-keygen -s CA -h), or check you reached the right host")
        own = shlex.quote(str(paths.known_hosts_file()))
        return (f"the {key.get_name()} host key of {name} ({fingerprint}) is not known and host_key_policy is strict",
                f"check the fingerprint, then add it: ssh-keyscan -p {endpoint.port} {endpoint.hostname} >> {own}, "
                f"or run once with `host_key_policy: accept-new`")


def _agent() -> paramiko.Agent | None:
    """The ssh-agent at $SSH_AUTH_SOCK; None when there is none, or it does not answer."""
    try:
        return paramiko.Agent()
    except (paramiko.SSHException, OSError):
        return None


def _entry_fingerprint(entry: known_hosts.Entry) -> str:
    return "SHA256:" + base64.b64encode(hashlib.sha256(entry.key).digest()).decode().rstrip("=")


def _pump(connection: socket.socket, channel: paramiko.Channel) -> None:
    """Copy bytes both ways between a local socket and an SSH channel until either side closes."""
    import selectors

    with selectors.DefaultSelector() as selector, connection, channel:
        selector.register(connection, selectors.EVENT_READ, channel)
        selector.register(channel, selectors.EVENT_READ, connection)
        while True:
            for key, _ in selector.select(timeout=60):
                data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                if not data:
                    return
                key.data.sendall(data)


def _drain(read: Callable[[int], bytes], sink: bytearray) -> None:
    while len(sink) <= MAX_OUTPUT_BYTES and (chunk := read(65536)):  # past the cap, run() closes the channel
        sink.extend(chunk)


def _feed(channel: paramiko.Channel, data: bytes, keep_open: bool = False) -> None:
    try:
        channel.sendall(data)
        if not keep_open:
            channel.shutdown_write()
    except (OSError, EOFError, paramiko.SSHException):
        pass  # the command exited without reading all its input, like a closed pipe


def _sftp_path(path: str) -> str:
    """SFTP paths are relative to the remote home, which is what ``~/`` means."""
    if path == "~":
        return "."
    return path[2:] if path.startswith("~/") else path


def _reason(exc: BaseException) -> str:
    return (exc.strerror if isinstance(exc, OSError) and exc.strerror else None) or _one_line(exc) or type(exc).__name__


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
