"""The keys a login offers, in OpenSSH's order (sshconnect2.c pubkey_prepare, ssh.c load_public_identity_files).

1. certificates named by CertificateFile, each with its private key (from an IdentityFile or the agent);
2. agent keys that are also IdentityFiles;
3. the agent's other keys, unless IdentitiesOnly;
4. the remaining IdentityFiles in order, each followed by its ``<key>-cert.pub`` when no
   CertificateFile is configured.

Keys that cannot be used without a passphrase are skipped (clusterctl does not prompt for one).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import paramiko
from paramiko.pkey import PublicBlob

from clusterctl.transport import certificates
from clusterctl.transport.ssh_config import SshOptions


@dataclass(frozen=True)
class Identity:
    """A key to offer: ``key`` carries the certificate in ``public_blob`` when there is one."""

    key: paramiko.PKey
    source: str  # the file, or "agent"


@dataclass
class _Candidate:
    path: str
    private: paramiko.PKey | None  # None: missing, unreadable or encrypted
    public: bytes | None  # the plain public key blob, for matching with agent keys and certificates
    certificate: bytes | None = None  # a user certificate blob to offer with this key
    agent_key: paramiko.PKey | None = field(default=None, repr=False)


def identities(options: SshOptions, agent_keys: Sequence[paramiko.PKey], extra_files: Sequence[str] = ()
               ) -> list[Identity]:
    """The identities to offer for ``options``; ``extra_files`` are tried last (the inventory's key, for a hop)."""
    paths = [options.expand_path(p) for p in options.identity_files] + list(extra_files)
    files: list[_Candidate] = []
    for path in paths:
        files.append(_load(path))
        if not options.certificate_files:
            certificate = _read_certificate(path + "-cert.pub")
            if certificate is not None:
                files.append(_Candidate(path, files[-1].private, files[-1].public, certificate))
    preferred: list[_Candidate] = []
    for path in (options.expand_path(p) for p in options.certificate_files):
        certificate = _read_certificate(path)
        if certificate is not None:
            preferred.append(_Candidate(path, None, certificates.parse(certificate).public_key, certificate))
    others: list[_Candidate] = []
    for agent_key in agent_keys:
        blob = agent_key.asbytes()
        match = next((c for c in files if c.certificate is None and c.public == blob), None)
        if match is not None:
            files.remove(match)
            match.agent_key = agent_key
            preferred.append(match)
        elif not options.identities_only:
            others.append(_Candidate("agent", None, blob, agent_key=agent_key))
    ordered = preferred + others + files
    found = []
    for candidate in ordered:
        key = _signer(candidate, files + preferred, agent_keys)
        if key is None:
            continue
        if candidate.certificate is not None:
            key = copy.copy(key)
            try:
                key.load_certificate(paramiko.Message(candidate.certificate))
            except (ValueError, paramiko.SSHException):
                continue
        found.append(Identity(key, candidate.path if candidate.agent_key is None else f"{candidate.path} (agent)"))
    return found


def _signer(candidate: _Candidate, files: Sequence[_Candidate], agent_keys: Sequence[paramiko.PKey]
            ) -> paramiko.PKey | None:
    """The key that signs for ``candidate``: its own, the agent's, or (for a certificate) any with the same public key."""
    if candidate.agent_key is not None:
        return _plain(candidate.agent_key)
    if candidate.private is not None:
        return _plain(candidate.private)
    if candidate.certificate is None or candidate.public is None:
        return None
    for other in files:
        if other.public == candidate.public and other.private is not None:
            return _plain(other.private)
    return next((_plain(k) for k in agent_keys if k.asbytes() == candidate.public), None)


def _plain(key: paramiko.PKey) -> paramiko.PKey:
    """``key`` without a certificate attached (paramiko attaches ``<key>-cert.pub`` on its own)."""
    if getattr(key, "public_blob", None) is None:
        return key
    plain = copy.copy(key)
    plain.public_blob = None
    return plain


def _load(path: str) -> _Candidate:
    private: paramiko.PKey | None = None
    if os.path.isfile(path):
        try:
            private = paramiko.PKey.from_path(path)
        except (OSError, ValueError, TypeError, paramiko.SSHException):
            private = None  # encrypted (no passphrase prompt here), or not a key paramiko knows
    public = private.asbytes() if private is not None else None
    if public is None:
        try:
            public = PublicBlob.from_file(path + ".pub").key_blob
        except (OSError, ValueError, IndexError, paramiko.SSHException):
            public = None
    return _Candidate(path, private, public)


def _read_certificate(path: str) -> bytes | None:
    """A user certificate's blob from an OpenSSH ``-cert.pub`` file; None if absent or not one."""
    try:
        blob = PublicBlob.from_file(path)
        certificate = certificates.parse(blob.key_blob)
    except (OSError, ValueError, IndexError, paramiko.SSHException):
        return None
    return blob.key_blob if certificate.kind == certificates.USER_CERTIFICATE else None
