"""A small fleet CA for peer mutual TLS (``swarmupdate tls ca`` and ``swarmupdate tls issue``).

For fleets without a PKI of their own: an ECDSA P-256 CA, and per-machine certificates valid for both
TLS server and client use (an agent is both). A fleet with Vault, step-ca or a corporate CA uses that
instead: the agent only needs a CA file, a certificate and its key (see docs/configuration.md).
Every file is written atomically; private keys are mode 0600.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from swarmupdate.errors import ConfigError
from swarmupdate.fsutil import atomic_write_bytes

__all__ = ["CA_CERT", "CA_KEY", "IssuedCert", "init_ca", "issue"]

CA_CERT = "ca.pem"
CA_KEY = "ca.key"


@dataclass(frozen=True)
class IssuedCert:
    cert: Path
    key: Path
    not_after: datetime.datetime


def init_ca(directory: Path, *, name: str = "swarmupdate fleet CA", days: int = 3650) -> Path:
    """Create ``ca.pem`` and ``ca.key`` in ``directory``; returns the certificate's path.

    Raises:
        ConfigError: the CA exists already (never overwritten) or ``days`` is not positive.
    """
    if days < 1:
        raise ConfigError(f"--days {days}: must be at least 1")
    cert_path, key_path = directory / CA_CERT, directory / CA_KEY
    for path in (cert_path, key_path):
        if path.exists():
            raise ConfigError(f"{path}: exists already; a fleet CA is never overwritten")
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    atomic_write_bytes(key_path, _key_pem(key), 0o600)
    atomic_write_bytes(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return cert_path


def issue(
    ca_dir: Path,
    name: str,
    out_dir: Path,
    *,
    ips: list[str] | None = None,
    dns: list[str] | None = None,
    days: int = 90,
) -> IssuedCert:
    """Issue ``<out_dir>/<name>.pem`` and ``<name>.key`` for one machine, signed by the CA in ``ca_dir``.

    ``name`` is the certificate's common name (the node id, say); ``ips`` and ``dns`` go into its
    subjectAltName, for peers that set ``check_hostname``.

    Raises:
        ConfigError: the CA cannot be read, an address is not an IP address, or ``days`` < 1.
    """
    if days < 1:
        raise ConfigError(f"--days {days}: must be at least 1")
    if not name or "/" in name or name.startswith(".") or not name.isprintable():
        raise ConfigError(f"{name!r}: not usable as a certificate and file name")
    ca_cert, ca_key = _load_ca(ca_dir)
    alt: list[x509.GeneralName] = []
    for d in dns or []:
        if not (d and d.isascii() and d.isprintable()):
            raise ConfigError(f"--dns {d!r}: not an ASCII DNS name (write IDNA names as xn--...)")
        alt.append(x509.DNSName(d))
    for ip in ips or []:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(ip)))
        except ValueError:
            raise ConfigError(f"--ip {ip!r}: not an IP address") from None
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    not_after = min(now + datetime.timedelta(days=days), ca_cert.not_valid_after_utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(cert_sign=False), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
    )
    if alt:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    out_dir.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = out_dir / f"{name}.pem", out_dir / f"{name}.key"
    atomic_write_bytes(key_path, _key_pem(key), 0o600)
    atomic_write_bytes(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return IssuedCert(cert_path, key_path, not_after)


def _load_ca(ca_dir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert_path, key_path = ca_dir / CA_CERT, ca_dir / CA_KEY
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"{cert_path}: cannot read the fleet CA: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise ConfigError(f"{cert_path}: not a PEM certificate: {exc}") from exc
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except OSError as exc:
        raise ConfigError(f"{key_path}: cannot read the fleet CA key: {exc.strerror or exc}") from exc
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{key_path}: not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{key_path}: not an ECDSA key (this CA makes ECDSA P-256 keys)")
    return cert, key


def _usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
