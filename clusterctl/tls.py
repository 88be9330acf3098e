"""TLS for a cluster: a CA and certificates made with the cryptography library, or the user's own.

`security: {tls: auto}` makes a CA and three certificate/key pairs (scheduler, worker, client)
under the cluster's state directory, mode 0600. `up` copies the scheduler's and the workers'
pairs, with the CA, into each host's run directory; the client's pair stays here for `status`,
`down` and for `clusterctl env`, so that a plain `Client()` connects.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clusterctl.errors import InvalidInputError

ROLES = ("scheduler", "worker", "client")
VALID_DAYS = 365


@dataclass(frozen=True)
class TlsFiles:
    """Paths of one role's CA, certificate and key (local, or on a host)."""

    ca_file: str
    cert: str
    key: str


def local_files(directory: Path, role: str) -> TlsFiles:
    return TlsFiles(str(directory / "ca.pem"), str(directory / f"{role}.pem"), str(directory / f"{role}-key.pem"))


def remote_files(run_dir: str, role: str) -> TlsFiles:
    """Where `up` puts a role's files in a host's run directory."""
    directory = f"{run_dir}/tls"
    return TlsFiles(f"{directory}/ca.pem", f"{directory}/{role}.pem", f"{directory}/{role}-key.pem")


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o600)


def generate(directory: Path, cluster: str, names: list[str]) -> None:
    """A CA and a pair for each role in ``directory`` (0700, files 0600), unless already there.

    ``names`` are the scheduler host's names and addresses, put in the certificates'
    subjectAltName so that clients that check hostnames accept them too.
    """
    if all(Path(p).exists() for role in ROLES for p in vars(local_files(directory, role)).values()):
        return
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"clusterctl CA for {cluster}")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    alt_names: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    for name in names:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt_names.append(x509.DNSName(name))
    for role in ROLES:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{cluster} {role}")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
            .add_extension(x509.SubjectAlternativeName(list(dict.fromkeys(alt_names))), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        files = local_files(directory, role)
        _write_private(Path(files.key), key.private_bytes(serialization.Encoding.PEM,
                                                          serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
        _write_private(Path(files.cert), cert.public_bytes(serialization.Encoding.PEM))
    _write_private(directory / "ca.pem", ca_cert.public_bytes(serialization.Encoding.PEM))
    # The CA key signs nothing after this: keeping it would only be a risk.


def check_readable(spec: Any) -> None:
    """The user's own TLS files exist and look like PEM, before anything is started."""
    for what in ("ca_file", "cert", "key"):
        path = getattr(spec, what)
        try:
            head = Path(path).expanduser().read_bytes()[:4096]
        except OSError as exc:
            raise InvalidInputError(f"security.tls.{what}: cannot read {path}: {exc.strerror}") from None
        if b"-----BEGIN" not in head:
            raise InvalidInputError(f"security.tls.{what}: {path} is not a PEM file")


def adopt(directory: Path, ca_file: str, cert: str, key: str) -> None:
    """The user's own files, copied (0600) into ``directory`` for every role."""
    sources = {"ca": ca_file, "cert": cert, "key": key}
    data = {}
    for what, path in sources.items():
        try:
            data[what] = Path(path).expanduser().read_bytes()
        except OSError as exc:
            raise InvalidInputError(f"security.tls.{what if what != 'ca' else 'ca_file'}: cannot read {path}: "
                                    f"{exc.strerror}") from None
        if b"-----BEGIN" not in data[what]:
            raise InvalidInputError(f"security.tls: {path} is not a PEM file")
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    _write_private(directory / "ca.pem", data["ca"])
    for role in ROLES:
        files = local_files(directory, role)
        _write_private(Path(files.cert), data["cert"])
        _write_private(Path(files.key), data["key"])


def client_environment(files: TlsFiles) -> dict[str, str]:
    """dask config, as environment variables, that makes a plain `Client()` use these files."""
    return {
        "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True",
        "DASK_DISTRIBUTED__COMM__TLS__CA_FILE": files.ca_file,
        "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT": files.cert,
        "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY": files.key,
    }
