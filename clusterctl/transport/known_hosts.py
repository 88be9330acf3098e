"""Host keys checked as OpenSSH checks them (sshconnect.c check_host_key, hostfile.c).

Entries come from the files the ssh config names (UserKnownHostsFile, GlobalKnownHostsFile; by
default ``~/.ssh/known_hosts`` and ``/etc/ssh/ssh_known_hosts``) and clusterctl's own file, where
``accept-new`` remembers keys. Host fields may be patterns (``*``, ``?``, ``!negation``), hashed
(``|1|salt|hash``) or ``[host]:port``. ``@cert-authority`` lines trust host certificates their CA
signed, once the certificate's dates and principals are checked; ``@revoked`` lines refuse a key
(or a CA) whatever else trusts it.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import os
import struct
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from clusterctl.transport import certificates
from clusterctl.transport.certificates import Certificate
from clusterctl.transport.ssh_config import match_pattern_list

CERT_AUTHORITY, REVOKED = "@cert-authority", "@revoked"
_WRITE_LOCK = threading.Lock()  # transports of several hosts may append at the same time


class Status(enum.Enum):
    TRUSTED = "trusted"  # a known key, or a valid certificate from a trusted CA
    NEW = "new"  # nothing known for this name (or only other names)
    CHANGED = "changed"  # another key is known for this name
    REVOKED = "revoked"  # the key, or the CA that signed it, is marked @revoked


@dataclass(frozen=True)
class Entry:
    """One usable known_hosts line."""

    marker: str  # "", CERT_AUTHORITY or REVOKED
    hosts: str  # the host field: patterns, or one hashed name
    key_type: str
    key: bytes  # the public key blob
    path: str
    line: int

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"

    def matches(self, name: str) -> bool:
        """hostfile.c match_maybe_hashed()."""
        if self.hosts.startswith("|"):
            return _hashed_name_matches(name, self.hosts)
        return match_pattern_list(name.lower(), self.hosts, lower=True) == 1  # match.c match_hostname()


@dataclass(frozen=True)
class Verdict:
    status: Status
    name: str  # the known_hosts name looked up: host, [host]:port, or HostKeyAlias
    entry: Entry | None = None  # the line that trusts (TRUSTED), conflicts (CHANGED) or revokes (REVOKED)
    certified: bool = False  # TRUSTED through @cert-authority
    certificate_problem: str | None = None  # a certificate from a trusted CA, refused for this reason
    revoked_ca: bool = False  # REVOKED: the CA's key rather than the host's


def known_hosts_name(hostname: str, port: int, host_key_alias: str | None = None) -> str:
    """How OpenSSH names a server in known_hosts (sshconnect.c get_hostfile_hostname_ipaddr)."""
    if host_key_alias:
        return host_key_alias
    return hostname if port == 22 else f"[{hostname}]:{port}"


class KnownHosts:
    """The entries of a set of known_hosts files, read once per connection."""

    def __init__(self, entries: Sequence[Entry]) -> None:
        self.entries = list(entries)

    @classmethod
    def read(cls, paths: Iterable[str | Path]) -> KnownHosts:
        entries: list[Entry] = []
        for path in paths:
            entries += _read_file(Path(path))
        return cls(entries)

    def for_name(self, name: str) -> list[Entry]:
        return [entry for entry in self.entries if entry.matches(name)]

    def check(self, key_type: str, key: bytes, certificate: Certificate | None, hostname: str, port: int,
              host_key_alias: str | None = None) -> Verdict:
        """The server's host key (and the certificate it came in, if any) against these entries."""
        name = known_hosts_name(hostname, port, host_key_alias)
        principal = host_key_alias or hostname
        verdict = self._check(name, key_type, key, certificate, principal)
        if verdict.status is Status.NEW and host_key_alias is None and port != 22:
            # OpenSSH also accepts a key (or CA) recorded for the bare host name.
            bare = self._check(hostname, key_type, key, certificate, principal)
            if bare.status is Status.TRUSTED:
                return bare
        return verdict

    def _check(self, name: str, key_type: str, key: bytes, certificate: Certificate | None,
               principal: str) -> Verdict:
        entries = self.for_name(name)
        problem = None
        if certificate is not None:
            revoked = _revoked(entries, certificate.public_key) or _revoked(entries, certificate.signature_key)
            if revoked is not None:
                return Verdict(Status.REVOKED, name, revoked, revoked_ca=revoked.key == certificate.signature_key)
            authority = next((e for e in entries if e.marker == CERT_AUTHORITY and e.key == certificate.signature_key),
                             None)
            if authority is not None:
                problem = certificate.problem(certificates.HOST_CERTIFICATE, principal)
                if problem is None:
                    return Verdict(Status.TRUSTED, name, authority, certified=True)
            # Like OpenSSH: without a trusting CA (or with a refused certificate), check the plain key.
        revoked = _revoked(entries, key)
        if revoked is not None:
            return Verdict(Status.REVOKED, name, revoked)
        status, found = Status.NEW, None
        for entry in entries:
            if entry.marker:
                continue
            if entry.key == key:
                return Verdict(Status.TRUSTED, name, entry)
            status, found = Status.CHANGED, entry
        return Verdict(status, name, found, certificate_problem=problem)

    def host_key_algorithms(self, algorithms: Sequence[str], hostname: str, port: int,
                            host_key_alias: str | None = None) -> list[str]:
        """sshconnect2.c order_hostkeyalgs(): prefer the algorithms of keys already known for this host,
        and certificates when a CA is trusted for it, keeping ``algorithms``' order otherwise."""
        entries = self.for_name(known_hosts_name(hostname, port, host_key_alias))
        known = {entry.key_type for entry in entries if not entry.marker}
        if not algorithms or _plain_type(algorithms[0]) in known:
            return list(algorithms)
        has_authority = any(entry.marker == CERT_AUTHORITY for entry in entries)
        first = [a for a in algorithms
                 if (certificates.is_certificate_type(a) and has_authority) or _plain_type(a) in known]
        return first + [a for a in algorithms if a not in first]


def remember(path: Path, name: str, key_type: str, key: bytes) -> None:
    """Append ``name key_type base64`` to ``path`` (mode 0600), as ssh does for a key it accepted."""
    line = f"{name} {key_type} {base64.b64encode(key).decode()}\n"
    with _WRITE_LOCK:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":  # never extend a last line lacking its newline
                line = "\n" + line
            os.write(fd, line.encode())
        finally:
            os.close(fd)


def _read_file(path: Path) -> list[Entry]:
    """hostfile.c hostkeys_foreach_file(): lines that do not parse are skipped, as OpenSSH does."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    entries = []
    for number, raw in enumerate(text.split("\n"), 1):
        entry = _parse_line(raw, str(path), number)
        if entry is not None:
            entries.append(entry)
    return entries


def _parse_line(raw: str, path: str, number: int) -> Entry | None:
    line = raw.lstrip(" \t").rstrip("\r")
    if not line or line.startswith("#"):
        return None
    marker = ""
    if line.startswith("@"):
        marker, _, line = _split_field(line)
        if marker not in (CERT_AUTHORITY, REVOKED) or line.startswith("@"):
            return None  # unknown marker, or more than one
    hosts, _, line = _split_field(line)
    key_type, _, line = _split_field(line)
    encoded, _, _ = _split_field(line)
    if not hosts or not key_type or not encoded:
        return None
    try:
        key = base64.b64decode(encoded, validate=True)
        (length,) = struct.unpack(">I", key[:4])
        embedded = key[4:4 + length].decode()
    except (binascii.Error, struct.error, UnicodeDecodeError):
        return None
    if embedded != key_type or certificates.is_certificate_type(key_type):
        return None
    return Entry(marker, hosts, key_type, key, path, number)


def _split_field(text: str) -> tuple[str, str, str]:
    """The first field of ``text`` (ended by a space or tab), the separator, and the rest after whitespace."""
    for index, char in enumerate(text):
        if char in " \t":
            return text[:index], char, text[index:].lstrip(" \t")
    return text, "", ""


def _revoked(entries: Iterable[Entry], key: bytes) -> Entry | None:
    return next((e for e in entries if e.marker == REVOKED and e.key == key), None)


def _hashed_name_matches(name: str, field: str) -> bool:
    """``|1|base64(salt)|base64(HMAC-SHA1(salt, name))``, as ``HashKnownHosts`` writes."""
    parts = field.split("|")
    if len(parts) != 4 or parts[1] != "1":
        return False
    try:
        salt = base64.b64decode(parts[2], validate=True)
        expected = base64.b64decode(parts[3], validate=True)
    except binascii.Error:
        return False
    if len(salt) != hashlib.sha1().digest_size:
        return False
    return hmac.compare_digest(hmac.new(salt, name.encode(), hashlib.sha1).digest(), expected)


def _plain_type(algorithm: str) -> str:
    plain = algorithm.removesuffix("-cert-v01@openssh.com")
    return "ssh-rsa" if plain in ("rsa-sha2-256", "rsa-sha2-512") else plain
