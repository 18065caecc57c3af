"""Mutual TLS between agents (optional per fleet): only machines holding a certificate of the fleet CA
can fetch chunks, bitfields, peer lists or metadata from an agent, and an agent only talks to such peers.

Chunk bytes are verified against signed hashes whatever the transport; what TLS adds is *who may take
part*: a machine outside the fleet can neither download the releases (which may be private) nor join
the swarm to waste its peers' upload slots. Identity is "holds a key certified by the fleet CA"; peer
URLs are usually bare addresses, so host names are checked only when ``check_hostname`` asks for it.

Certificates are short-lived in a well-run fleet: :meth:`PeerTLS.reload_if_changed` builds new
contexts from a renewed certificate, key or CA file (new connections use them; open ones keep theirs).
"""

from __future__ import annotations

import datetime
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from swarmupdate.errors import ConfigError

__all__ = ["PeerTLS", "PeerTLSConfig"]


@dataclass(frozen=True, slots=True)
class PeerTLSConfig:
    """The ``[peer_tls]`` table of the agent's configuration."""

    #: PEM file of the fleet CA (one or more certificates): peers must present a certificate it signed
    ca: Path
    #: PEM file of this machine's certificate (followed by any intermediates), signed by the fleet CA
    cert: Path
    #: PEM file of the certificate's private key (readable by the agent only)
    key: Path
    #: also require the peer's certificate to name the host of its URL (DNS or IP subjectAltName)
    check_hostname: bool = False


class PeerTLS:
    """The server and client contexts of one agent, built from its :class:`PeerTLSConfig`.

    :attr:`server` and :attr:`client` are replaced whole when the files change (never modified in place:
    a CA removed from the file must stop being trusted, and a handshake must never see a certificate
    without its key); users read them at each connection.

    Raises:
        ConfigError: a file cannot be read, is not PEM, or the key does not match the certificate;
            the message names the file.
    """

    def __init__(self, config: PeerTLSConfig) -> None:
        self.config = config
        self._stamp = self._files_stamp()
        self.server, self.client, self.not_after = _build(config)

    def reload_if_changed(self) -> bool:
        """Build new contexts when one of the files changed since the last load; True when replaced.

        A file that is now broken keeps the contexts as they were and raises ConfigError (the next call
        tries again).
        """
        stamp = self._files_stamp()
        if stamp == self._stamp:
            return False
        server, client, not_after = _build(self.config)
        self.server, self.client, self.not_after = server, client, not_after
        self._stamp = stamp
        return True

    def _files_stamp(self) -> tuple[tuple[int, int], ...]:
        out = []
        for path in (self.config.ca, self.config.cert, self.config.key):
            try:
                st = path.stat()
                out.append((st.st_mtime_ns, st.st_size))
            except OSError:
                out.append((0, 0))
        return tuple(out)


def _build(cfg: PeerTLSConfig) -> tuple[ssl.SSLContext, ssl.SSLContext, float]:
    """Fresh server and client contexts, and when our certificate expires (Unix time)."""
    not_after = _check_pem(cfg.cert, "certificate")
    _check_pem(cfg.ca, "CA certificate")
    server = _context(ssl.PROTOCOL_TLS_SERVER)
    client = _context(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = cfg.check_hostname
    for ctx in (server, client):
        _load_into(ctx, cfg)
    return server, client, not_after


def _context(purpose: ssl._SSLMethod) -> ssl.SSLContext:
    ctx = ssl.SSLContext(purpose)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED  # both ways: a server asks every client for its certificate
    return ctx


def _load_into(ctx: ssl.SSLContext, cfg: PeerTLSConfig) -> None:
    try:
        ctx.load_verify_locations(cafile=str(cfg.ca))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{cfg.ca}: peer_tls.ca: cannot load the fleet CA: {_reason(exc)}") from exc
    try:
        ctx.load_cert_chain(str(cfg.cert), str(cfg.key))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"{cfg.cert}, {cfg.key}: peer_tls.cert/key: cannot load this machine's certificate and key "
            f"(missing, not PEM, or the key does not match): {_reason(exc)}"
        ) from exc


def _check_pem(path: Path, what: str) -> float:
    """The first certificate's notAfter (Unix time); ConfigError naming ``path`` when unreadable."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the {what}: {exc.strerror or exc}") from exc
    try:
        cert = x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise ConfigError(f"{path}: not a PEM {what}: {exc}") from exc
    after: datetime.datetime = cert.not_valid_after_utc
    return after.timestamp()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc)
    if isinstance(exc, OSError):
        return str(exc.strerror or exc)
    return str(exc)
