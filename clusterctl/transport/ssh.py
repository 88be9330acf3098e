"""``connection: ssh``: a host reached through paramiko, configured like OpenSSH.

The only module that imports paramiko. It honours the user's ssh config (HostName, User, Port,
IdentityFile, ProxyJump, ProxyCommand), the ssh-agent and default keys, checks host keys against
``~/.ssh/known_hosts`` (read-only) and clusterctl's own known_hosts, and turns every library error
into a one-line ``HostError`` with a hint.
"""

from __future__ import annotations

import getpass
import logging
import os
import shlex
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from errno import ECONNREFUSED
from itertools import pairwise
from pathlib import Path

import paramiko

from clusterctl import paths
from clusterctl.errors import HostError, UnresolvableHostError
from clusterctl.inventory import HostSettings
from clusterctl.transport.base import CommandResult

CONNECT_TIMEOUT = 10.0  # seconds for TCP connect, SSH handshake, authentication and opening a channel
KEEPALIVE_INTERVAL = 30  # seconds, like ServerAliveInterval
PASSWORD_ENV = "CLUSTERCTL_SSH_PASSWORD"
# sshd allows 10 sessions per connection (MaxSessions); keep one free for SFTP and one spare.
MAX_CONCURRENT_RUNS = 8
_AUTH_HINT = f"check `identity_file:` / IdentityFile, that your key is loaded in ssh-agent, or set {PASSWORD_ENV}"
_KNOWN_HOSTS_LOCK = threading.Lock()  # transports of several hosts may append at the same time
# paramiko logs failed handshakes with tracebacks from its own threads; with no handler at all, Python
# would print them on stderr next to our one-line HostError. Handlers the CLI installs still get them.
logging.getLogger("paramiko").addHandler(logging.NullHandler())


@dataclass(frozen=True)
class _Endpoint:
    """One machine to authenticate to: the target, or a ProxyJump hop on the way."""

    name: str  # as the user wrote it (alias or hop), for messages and the password prompt
    hostname: str
    port: int
    user: str
    identity_files: tuple[str, ...]
    proxy_jump: tuple[str, ...]
    proxy_command: str | None
    is_hop: bool = False

    @property
    def known_hosts_name(self) -> str:
        """How OpenSSH names this server in known_hosts."""
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"


class _UnknownHostKeyError(paramiko.SSHException):
    def __init__(self, name: str, key: paramiko.PKey) -> None:
        super().__init__(f"unknown host key for {name}")
        self.name, self.key = name, key


class _HostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """Called by paramiko only for a server whose name is in no known_hosts file.

    A known name with a different key never gets here: paramiko raises BadHostKeyException.
    """

    def __init__(self, host: str, policy: str, record_to: Path) -> None:
        self.host, self.policy, self.record_to = host, policy, record_to

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        if self.policy == "strict":
            raise _UnknownHostKeyError(hostname, key)
        line = f"{hostname} {key.get_name()} {key.get_base64()}\n"
        try:
            with _KNOWN_HOSTS_LOCK:
                fd = os.open(self.record_to, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    size = os.fstat(fd).st_size
                    if size and os.pread(fd, 1, size - 1) != b"\n":  # never extend a last line lacking its newline
                        line = "\n" + line
                    os.write(fd, line.encode())
                finally:
                    os.close(fd)
        except OSError as exc:
            raise HostError(self.host, f"cannot record the host key in {self.record_to}: {exc.strerror}",
                            "check the permissions of $CLUSTERCTL_HOME") from None
        client.get_host_keys().add(hostname, key.get_name(), key)


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
        self._clients: list[paramiko.SSHClient] = []  # jump hops first, the target last
        self._sftp: paramiko.SFTPClient | None = None
        self._tunnels: list[socket.socket] = []
        # Resolve the config now, for `address`; a broken config is reported when we connect.
        self._target: _Endpoint | None = None
        self._config_error: HostError | None = None
        try:
            self._target = self._resolve(alias, hostname=settings.address, user=settings.user, port=settings.port)
        except HostError as exc:
            self._config_error = exc
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

    def run(self, argv: list[str], *, stdin: bytes | None = None, timeout: float = 60.0) -> CommandResult:
        deadline = time.monotonic() + timeout
        result = None
        if self._sessions.acquire(timeout=timeout):
            try:
                channel = self._open_session()
                try:
                    result = self._exchange(channel, argv, stdin, deadline)
                finally:
                    channel.close()  # also ends the reader threads of a command that timed out
            except (paramiko.SSHException, EOFError, OSError) as exc:
                raise HostError(self.host, f"ssh error while running {argv[0]}: {_one_line(exc)}") from None
            finally:
                self._sessions.release()
        if result is None:
            raise HostError(self.host, f"{argv[0]} did not finish within {timeout:g}s")
        return result

    def _exchange(self, channel: paramiko.Channel, argv: list[str], stdin: bytes | None,
                  deadline: float) -> CommandResult | None:
        """Run ``argv`` on ``channel``; None if it did not finish by ``deadline``."""
        channel.exec_command(shlex.join(argv))  # the one place where an argv becomes a string for a shell
        stdout, stderr = bytearray(), bytearray()
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
            worker.join(max(0.0, deadline - time.monotonic()))
        if any(w.is_alive() for w in workers) or not channel.status_event.wait(max(0.0, deadline - time.monotonic())):
            return None
        status = channel.recv_exit_status()
        transport = channel.get_transport()
        if status == -1 and not transport.is_active():  # -1 alone means killed by a signal
            raise HostError(self.host, f"the connection was lost while {argv[0]} ran")
        return CommandResult(status, stdout.decode(errors="replace"), stderr.decode(errors="replace"))

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

    def read_file(self, path: str) -> bytes:
        with self._sftp_lock:
            sftp = self._open_sftp()
            try:
                with sftp.open(_sftp_path(path), "rb") as handle:
                    handle.prefetch()
                    return handle.read()
            except (OSError, paramiko.SSHException) as exc:
                raise HostError(self.host, f"cannot read {path}: {_reason(exc)}") from None

    def open_tunnel(self, remote_host: str, remote_port: int) -> int:
        """Like `ssh -L`: a free port on this machine's 127.0.0.1 whose connections are carried to
        ``remote_host:remote_port`` as seen from the host. It lasts until ``close()``."""
        transport = self._client().get_transport()
        assert transport is not None
        server = socket.create_server(("127.0.0.1", 0))
        self._tunnels.append(server)

        def accept() -> None:
            while True:
                try:
                    connection, peer = server.accept()
                except OSError:
                    return  # closed
                try:
                    channel = transport.open_channel("direct-tcpip", (remote_host, remote_port), peer,
                                                     timeout=CONNECT_TIMEOUT)
                except (paramiko.SSHException, OSError):
                    connection.close()
                    continue
                threading.Thread(target=_pump, args=(connection, channel), daemon=True).start()

        threading.Thread(target=accept, daemon=True).start()
        return server.getsockname()[1]

    def _open_session(self) -> paramiko.Channel:
        transport = self._client().get_transport()
        assert transport is not None
        try:
            return transport.open_session(timeout=CONNECT_TIMEOUT)
        except paramiko.ChannelException as exc:
            raise HostError(self.host, f"the server refused a new session: {exc.text}",
                            "raise MaxSessions in the host's sshd_config") from None

    def _open_sftp(self) -> paramiko.SFTPClient:
        channel = self._sftp.get_channel() if self._sftp is not None else None
        if channel is None or channel.closed or not channel.get_transport().is_active():
            try:
                self._sftp = self._client().open_sftp()
            except paramiko.SSHException as exc:
                raise HostError(self.host, f"cannot start SFTP: {_one_line(exc)}",
                                "enable `Subsystem sftp` in the host's sshd_config") from None
        assert self._sftp is not None
        return self._sftp

    # -- connecting --------------------------------------------------------------------------

    def _client(self) -> paramiko.SSHClient:
        """The connected client for the target; connects (again) if needed."""
        with self._lock:
            if self._clients:
                transport = self._clients[-1].get_transport()
                if transport is not None and transport.is_active():
                    return self._clients[-1]
                self.close()
            self._clients = self._connect()
            return self._clients[-1]

    def _connect(self) -> list[paramiko.SSHClient]:
        if self._target is None:
            assert self._config_error is not None
            raise self._config_error
        target = self._target
        if self._settings.identity_file:  # the inventory's key replaces the config's IdentityFile
            identity = os.path.expanduser(self._settings.identity_file)
            if not os.path.isfile(identity):
                raise HostError(self.host, f"identity_file {self._settings.identity_file} does not exist",
                                "fix `identity_file:` in the inventory")
            target = replace(target, identity_files=(identity,))
        hops = [self._hop(spec) for spec in target.proxy_jump]
        first = hops[0] if hops else target
        sock: paramiko.ProxyCommand | paramiko.Channel | None = None
        if first.proxy_command:
            # OpenSSH runs ProxyCommand through the shell ("exec" so no shell lingers); paramiko
            # would only split it into words.
            sock = paramiko.ProxyCommand(shlex.join(["/bin/sh", "-c", "exec " + first.proxy_command]))
        clients: list[paramiko.SSHClient] = []
        try:
            for hop, after in pairwise([*hops, target]):
                clients.append(self._login(hop, sock))
                sock = self._forward(clients[-1], hop, after)
            clients.append(self._login(target, sock))
        except BaseException:
            for client in reversed(clients):  # a failed login closed its own client, and with it `sock`
                client.close()
            raise
        return clients

    def _hop(self, spec: str) -> _Endpoint:
        """A ProxyJump entry, ``[user@]host[:port]`` or ``ssh://...``, itself resolved through ssh config."""
        user, _, host_port = spec.strip().removeprefix("ssh://").rpartition("@")
        host, port = host_port, ""
        if host_port.startswith("["):  # [IPv6]:port
            host, _, rest = host_port[1:].partition("]")
            port = rest.removeprefix(":")
        elif host_port.count(":") == 1:
            host, port = host_port.split(":")
        if not host or (port and not port.isdigit()):
            raise HostError(self.host, f"cannot parse ProxyJump {spec!r}", "write it as [user@]host[:port]")
        hop = self._resolve(host, user=user or None, port=int(port) if port else None)
        # OpenSSH would not offer the inventory's key to a jump host; offering it last saves a config entry.
        extra = self._settings.identity_file
        if extra and os.path.isfile(os.path.expanduser(extra)):
            hop = replace(hop, identity_files=(*hop.identity_files, os.path.expanduser(extra)))
        return replace(hop, name=spec.strip(), proxy_jump=(), is_hop=True)  # named as the user wrote it

    def _resolve(self, name: str, *, hostname: str | None = None, user: str | None = None,
                 port: int | None = None) -> _Endpoint:
        """``name`` looked up in the ssh config, with explicit values taking precedence as ssh's -l/-p do."""
        config_path = paths.ssh_config_file()
        # ssh config keeps the first value it reads, so a leading stanza overrides the file and
        # %h/%p/%r in ProxyCommand see the values actually used.
        overrides = [f"{key} {value}" for key, value in (("HostName", hostname), ("User", user), ("Port", port))
                     if value is not None]
        try:
            text = config_path.read_text() if config_path.is_file() else ""
            options = paramiko.SSHConfig.from_text("\n".join(["Host *", *overrides, text])).lookup(name)
            port_value = int(options.get("port", 22))
        except (OSError, UnicodeDecodeError, ValueError, ImportError, paramiko.SSHException) as exc:
            # ImportError: `Match exec` needs the optional `invoke` package.
            raise HostError(self.host, f"cannot use ssh config {config_path}: {_one_line(exc)}",
                            "fix the file, or point CLUSTERCTL_SSH_CONFIG to another one") from None
        jump = options.get("proxyjump")
        identity_files = [os.path.expanduser(p) for p in options.get("identityfile", [])]
        return _Endpoint(
            name=name,
            hostname=options["hostname"],
            port=port_value,
            user=options.get("user") or _local_user(),
            # OpenSSH skips IdentityFile entries that do not exist (the defaults often do not).
            identity_files=tuple(p for p in identity_files if os.path.isfile(p)),
            proxy_jump=tuple(jump.split(",")) if jump and jump.lower() != "none" else (),
            proxy_command=options.get("proxycommand"),
        )

    def _login(self, endpoint: _Endpoint, sock: paramiko.ProxyCommand | paramiko.Channel | None
               ) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        own_known_hosts = paths.known_hosts_file()
        for known_hosts in (Path.home() / ".ssh" / "known_hosts", own_known_hosts):
            _load_known_hosts(client.get_host_keys(), known_hosts)
        policy = self._settings.host_key_policy or "accept-new"
        client.set_missing_host_key_policy(_HostKeyPolicy(self.host, policy, own_known_hosts))
        try:
            try:
                client.connect(endpoint.hostname, endpoint.port, username=endpoint.user,
                               key_filename=list(endpoint.identity_files) or None, allow_agent=True,
                               look_for_keys=True, sock=sock, timeout=CONNECT_TIMEOUT,
                               banner_timeout=CONNECT_TIMEOUT, auth_timeout=CONNECT_TIMEOUT,
                               channel_timeout=CONNECT_TIMEOUT)
            except paramiko.SSHException as exc:
                # paramiko tried the keys (identity files, agent, defaults); like OpenSSH, a password is last.
                transport = client.get_transport()
                keys_failed = (isinstance(exc, paramiko.AuthenticationException)
                               or str(exc) == "No authentication methods available")  # there were no keys
                if not keys_failed or transport is None or not transport.is_active():
                    raise
                password = self._password(endpoint)
                if password is None:
                    raise paramiko.AuthenticationException(str(exc)) from None
                transport.auth_password(endpoint.user, password)
        except HostError:
            client.close()
            raise
        except (OSError, EOFError, paramiko.SSHException) as exc:
            client.close()
            raise self._connect_error(exc, endpoint) from None
        transport = client.get_transport()
        assert transport is not None
        transport.set_keepalive(KEEPALIVE_INTERVAL)  # a long-lived idle connection must survive NAT timeouts
        return client

    def _forward(self, hop: paramiko.SSHClient, endpoint: _Endpoint, after: _Endpoint) -> paramiko.Channel:
        """A direct-tcpip channel from ``hop`` to the next machine: the socket for the next login."""
        transport = hop.get_transport()
        assert transport is not None
        try:
            return transport.open_channel("direct-tcpip", (after.hostname, after.port), ("127.0.0.1", 0),
                                          timeout=CONNECT_TIMEOUT)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            reason = exc.text if isinstance(exc, paramiko.ChannelException) else _one_line(exc)
            raise HostError(self.host, f"ProxyJump hop {endpoint.name} cannot reach {after.hostname}:{after.port}: "
                            f"{reason}", "is sshd running there? check `port:`, and AllowTcpForwarding on the hop"
                            ) from None

    def _password(self, endpoint: _Endpoint) -> str | None:
        password = os.environ.get(PASSWORD_ENV)
        if password:
            return password
        if self._password_prompt is not None and sys.stdin is not None and sys.stdin.isatty():
            return self._password_prompt(endpoint.name)
        return None

    def _connect_error(self, exc: BaseException, endpoint: _Endpoint) -> HostError:
        """The one-line HostError for a failure to reach or log in to ``endpoint``."""
        where = f"{endpoint.hostname}:{endpoint.port}"
        prefix = f"ProxyJump hop {endpoint.name}: " if endpoint.is_hop else ""
        own_known_hosts = paths.known_hosts_file()
        message, hint = f"ssh error: {_one_line(exc)}", None
        if isinstance(exc, _UnknownHostKeyError):
            message = (f"the {exc.key.get_name()} host key of {exc.name} ({exc.key.fingerprint}) is not known "
                       f"and host_key_policy is strict")
            hint = (f"check the fingerprint, then add it: ssh-keyscan -p {endpoint.port} {endpoint.hostname} >> "
                    f"{shlex.quote(str(own_known_hosts))}, or run once with `host_key_policy: accept-new`")
        elif isinstance(exc, paramiko.BadHostKeyException):
            name = endpoint.known_hosts_name
            holder = next((f for f in (own_known_hosts, Path.home() / ".ssh" / "known_hosts")
                           if _load_known_hosts(paramiko.HostKeys(), f).lookup(name)), own_known_hosts)
            message = (f"the host key of {name} has CHANGED (server offers {exc.key.fingerprint}, {holder} "
                       f"expects {exc.expected_key.fingerprint}): the host was reinstalled, or someone is "
                       f"intercepting the connection")
            hint = (f"if the change is expected, forget the old key: ssh-keygen -R {shlex.quote(name)} "
                    f"-f {shlex.quote(str(holder))}")
        elif isinstance(exc, paramiko.AuthenticationException):
            message, hint = f"authentication failed for user {endpoint.user}", _AUTH_HINT
        elif isinstance(exc, socket.gaierror):
            message = f"cannot resolve hostname {endpoint.hostname}"
            hint = f"check `address:` in the inventory, or HostName in {paths.ssh_config_file()}"
        elif isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError | ConnectionRefusedError):
            errors = getattr(exc, "errors", {}).values() or [exc]
            if all(e.errno == ECONNREFUSED for e in errors):
                message, hint = f"connection refused on {where}", "is sshd running? check `port:`"
            else:
                message = f"cannot connect to {where}: {_reason(next(iter(errors)))}"
        elif isinstance(exc, TimeoutError):
            message, hint = f"timed out connecting to {where}", "is the host up and the port open in its firewall?"
        elif isinstance(exc, OSError):
            message = f"cannot connect to {where}: {_reason(exc)}"
        elif isinstance(exc, paramiko.ProxyCommandFailure):
            message = f"ProxyCommand failed: {_one_line(exc.error)}"
            hint = f"check ProxyCommand in {paths.ssh_config_file()}"
        elif (isinstance(exc, EOFError) or str(exc).startswith("Error reading SSH protocol banner")
              or str(exc) == "No existing session"):  # what paramiko says when the handshake timed out
            message = f"no ssh server answered on {where} (closed, or no SSH banner within {CONNECT_TIMEOUT:g}s)"
            hint = (f"check ProxyCommand in {paths.ssh_config_file()}" if endpoint.proxy_command
                    else "is that port sshd's? check `port:`")
        error_type = UnresolvableHostError if isinstance(exc, socket.gaierror) else HostError
        return error_type(self.host, prefix + message, hint)


def _load_known_hosts(keys: paramiko.HostKeys, path: Path) -> paramiko.HostKeys:
    """Add ``path``'s entries to ``keys``, skipping lines paramiko cannot parse, as OpenSSH does."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return keys
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            entry = paramiko.hostkeys.HostKeyEntry.from_line(line, number)
        except (paramiko.SSHException, paramiko.hostkeys.InvalidHostKey, ValueError):
            continue
        if entry is not None and entry.key is not None:
            for name in entry.hostnames:
                keys.add(name, entry.key.get_name(), entry.key)
    return keys


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
    while chunk := read(65536):
        sink.extend(chunk)


def _feed(channel: paramiko.Channel, data: bytes) -> None:
    try:
        channel.sendall(data)
        channel.shutdown_write()
    except (OSError, EOFError, paramiko.SSHException):
        pass  # the command exited without reading all its input, like a closed pipe


def _sftp_path(path: str) -> str:
    """SFTP paths are relative to the remote home, which is what ``~/`` means."""
    if path == "~":
        return "."
    return path[2:] if path.startswith("~/") else path


def _local_user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no USER/LOGNAME and no passwd entry, e.g. in a bare container
        return str(os.getuid())


def _reason(exc: BaseException) -> str:
    return (exc.strerror if isinstance(exc, OSError) and exc.strerror else None) or _one_line(exc) or type(exc).__name__


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
