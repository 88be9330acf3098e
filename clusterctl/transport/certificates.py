"""OpenSSH certificates (PROTOCOL.certkeys): read one, check its CA signature, validity and principals.

paramiko carries certificates as opaque blobs; this module reads them, for host certificates checked
against ``@cert-authority`` lines (``known_hosts``) and for matching user certificates to their keys
(``identities``). The checks are those of OpenSSH's sshkey_cert_check_authority().
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass
from datetime import datetime, timezone

import paramiko

USER_CERTIFICATE, HOST_CERTIFICATE = 1, 2
FOREVER = 2**64 - 1
# CASignatureAlgorithms' default in OpenSSH 9.2: no SHA-1 ("ssh-rsa") signatures.
CA_SIGNATURE_ALGORITHMS = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
                           "rsa-sha2-512", "rsa-sha2-256")
# The fields of the certified public key, after the nonce, by certificate type.
_KEY_FIELDS = {
    "ssh-ed25519-cert-v01@openssh.com": ("ssh-ed25519", 1),
    "ssh-rsa-cert-v01@openssh.com": ("ssh-rsa", 2),
    "ecdsa-sha2-nistp256-cert-v01@openssh.com": ("ecdsa-sha2-nistp256", 2),
    "ecdsa-sha2-nistp384-cert-v01@openssh.com": ("ecdsa-sha2-nistp384", 2),
    "ecdsa-sha2-nistp521-cert-v01@openssh.com": ("ecdsa-sha2-nistp521", 2),
}
_KEY_CLASSES: dict[str, type[paramiko.PKey]] = {
    "ssh-ed25519": paramiko.Ed25519Key, "ssh-rsa": paramiko.RSAKey, "ecdsa-sha2-nistp256": paramiko.ECDSAKey,
    "ecdsa-sha2-nistp384": paramiko.ECDSAKey, "ecdsa-sha2-nistp521": paramiko.ECDSAKey,
}


class CertificateFormatError(ValueError):
    """The blob is not a certificate this module can read."""


@dataclass(frozen=True)
class Certificate:
    cert_type: str  # e.g. "ssh-ed25519-cert-v01@openssh.com"
    public_key: bytes  # the certified key, as a plain public key blob
    serial: int
    kind: int  # USER_CERTIFICATE or HOST_CERTIFICATE
    key_id: str
    principals: tuple[str, ...]
    valid_after: int
    valid_before: int
    critical_options: bytes
    signature_key: bytes  # the CA's public key blob
    signed_data: bytes  # everything the CA signed
    signature: bytes

    def problem(self, kind: int, name: str | None, now: float | None = None) -> str | None:
        """Why OpenSSH would refuse this certificate for ``name`` (None when it is valid): a disallowed or
        failing CA signature, the wrong kind, outside its validity period, ``name`` not among its
        principals, critical options on a host certificate."""
        when = int(time.time() if now is None else now)
        algorithm = _signature_algorithm(self.signature)
        if algorithm not in CA_SIGNATURE_ALGORITHMS:
            return f"its CA signed it with {algorithm}, which is not allowed"
        if not self.signature_is_valid():
            return "its CA signature does not verify"
        if self.kind != kind:
            return "it is not a host certificate" if kind == HOST_CERTIFICATE else "it is not a user certificate"
        if when < self.valid_after:
            return f"it is not valid before {_date(self.valid_after)}"
        if when >= self.valid_before:
            return f"it expired on {_date(self.valid_before)}"
        if self.principals and name is not None and name not in self.principals:
            return f"it names {', '.join(self.principals)}, not {name}"
        if kind == HOST_CERTIFICATE and self.critical_options:
            return "it has critical options, which a host certificate may not have"
        return None

    def signature_is_valid(self) -> bool:
        key_type = _Reader(self.signature_key).string().decode(errors="replace")
        key_class = _KEY_CLASSES.get(key_type)
        if key_class is None:
            return False
        try:
            ca = key_class(msg=paramiko.Message(self.signature_key))
            return bool(ca.verify_ssh_sig(self.signed_data, paramiko.Message(self.signature)))
        except (paramiko.SSHException, ValueError, TypeError, struct.error):
            return False


def is_certificate_type(name: str) -> bool:
    return name.endswith("-cert-v01@openssh.com")


def parse(blob: bytes) -> Certificate:
    """Read a certificate blob (as in a ``-cert.pub`` file, base64-decoded)."""
    reader = _Reader(blob)
    try:
        cert_type = reader.string().decode()
        if cert_type not in _KEY_FIELDS:
            raise CertificateFormatError(f"not a supported certificate type: {cert_type}")
        plain_type, fields = _KEY_FIELDS[cert_type]
        reader.string()  # nonce
        start = reader.offset
        for _ in range(fields):
            reader.string()  # mpints and strings share the length-prefixed encoding
        public_key = _string(plain_type.encode()) + blob[start:reader.offset]
        serial = reader.uint64()
        kind = reader.uint32()
        key_id = reader.string().decode(errors="replace")
        principals_reader = _Reader(reader.string())
        principals = []
        while not principals_reader.done:
            principals.append(principals_reader.string().decode(errors="replace"))
        valid_after, valid_before = reader.uint64(), reader.uint64()
        critical_options = reader.string()
        reader.string()  # extensions
        reader.string()  # reserved
        signature_key = reader.string()
        signed_data = blob[:reader.offset]
        signature = reader.string()
    except (struct.error, UnicodeDecodeError, IndexError) as exc:
        raise CertificateFormatError(f"malformed certificate: {exc}") from None
    return Certificate(cert_type, public_key, serial, kind, key_id, tuple(principals), valid_after, valid_before,
                       critical_options, signature_key, signed_data, signature)


def _signature_algorithm(signature: bytes) -> str:
    try:
        return _Reader(signature).string().decode(errors="replace")
    except struct.error:
        return "an unreadable algorithm"


def _date(seconds: int) -> str:
    if seconds >= FOREVER:
        return "forever"
    try:
        return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):
        return str(seconds)


def _string(value: bytes) -> bytes:
    return struct.pack(">I", len(value)) + value


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.offset = data, 0

    @property
    def done(self) -> bool:
        return self.offset >= len(self.data)

    def _take(self, size: int) -> bytes:
        if self.offset + size > len(self.data):
            raise struct.error("truncated")
        chunk = self.data[self.offset:self.offset + size]
        self.offset += size
        return chunk

    def uint32(self) -> int:
        return int(struct.unpack(">I", self._take(4))[0])

    def uint64(self) -> int:
        return int(struct.unpack(">Q", self._take(8))[0])

    def string(self) -> bytes:
        return self._take(self.uint32())
