"""One rooted error hierarchy, split by who is at fault.

::

    SwarmUpdateError                  root: every error we raise on purpose
    ├── ConfigError                   the operator's input is wrong (file, key, reason)
    ├── RepositoryStateError          the publisher's repository refuses the operation
    │   ├── UnknownAppError           no such application role
    │   ├── ReleaseExistsError        that version of that app is already published
    │   └── SigningError              a key is missing, wrong, or below the threshold
    ├── RemoteDataError               data from outside is bad: signature, hash, length,
    │   │                             expiry, format (origin, peer, tracker or network)
    │   └── ChunkVerificationError    a chunk's bytes do not match its signed digest
    ├── TransferError                 a transfer failed: connect, timeout, HTTP status
    │   ├── HTTPStatusError           the server answered with an unexpected status
    │   └── FetchError                a chunk/bitfield fetch from a peer or the origin failed,
    │                                 with the kind of failure the swarm core acts on
    └── StoreError                    the local disk refused (full, read-only, corrupt)

Foreign exceptions (httpx, tuf, OSError) are translated at the boundary with
``raise OurError(...) from exc`` so callers only handle ours.
"""

from __future__ import annotations

__all__ = [
    "ChunkVerificationError",
    "ConfigError",
    "FetchError",
    "HTTPStatusError",
    "ReleaseExistsError",
    "RemoteDataError",
    "RepositoryStateError",
    "SigningError",
    "StoreError",
    "SwarmUpdateError",
    "TransferError",
    "UnknownAppError",
]


class SwarmUpdateError(Exception):
    """Root of every error swarmupdate raises on purpose."""

    #: process exit code used by the command line for this kind of error
    exit_code = 1


class ConfigError(SwarmUpdateError):
    """The operator's input (a config file, an argument) is wrong."""

    exit_code = 2


class RepositoryStateError(SwarmUpdateError):
    """The publisher's repository refuses the operation."""

    exit_code = 3


class UnknownAppError(RepositoryStateError):
    """No application role of that name."""


class ReleaseExistsError(RepositoryStateError):
    """That version of that application is already published."""


class SigningError(RepositoryStateError):
    """A signing key is missing, wrong or below the role's threshold."""


class RemoteDataError(SwarmUpdateError):
    """Data that came from outside is bad (signature, hash, length, expiry, format)."""

    exit_code = 4


class ChunkVerificationError(RemoteDataError):
    """A chunk's bytes do not match the digest in the signed manifest."""


class TransferError(SwarmUpdateError):
    """A transfer failed: could not connect, timed out, or the server refused."""

    exit_code = 5


class HTTPStatusError(TransferError):
    """The server answered with an unexpected HTTP status."""

    def __init__(self, status: int, url: str) -> None:
        super().__init__(f"HTTP {status} from {url}")
        self.status = status
        self.url = url


class FetchError(TransferError):
    """A fetch from a peer or the origin failed.

    ``kind`` is what the swarm core acts on: ``corrupt`` (bad, short or overlong bytes: ban),
    ``missing`` (404), ``busy`` (429, with ``retry_after``), ``timeout``, ``error`` (connection).
    """

    def __init__(self, kind: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.retry_after = retry_after


class StoreError(SwarmUpdateError):
    """The local disk refused: full, read-only, or holding something unexpected."""

    exit_code = 6
