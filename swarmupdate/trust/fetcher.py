"""An httpx-based ``FetcherInterface`` for python-tuf: the only place the trust client touches HTTP.

HTTP error statuses become ``DownloadHTTPError(status)``; every transport failure becomes a
``DownloadError`` so python-tuf tells "the transfer failed" from "the data is bad".
"""

from __future__ import annotations

import ssl
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, Any

import httpx
from tuf.api import exceptions as tuf_exc
from tuf.ngclient.fetcher import FetcherInterface

from swarmupdate import __version__

__all__ = ["FallbackFetcher", "HttpxFetcher"]

#: bytes read per iteration; large enough to keep per-chunk overhead low
_READ_SIZE = 256 * 1024


class HttpxFetcher(FetcherInterface):
    """Fetch with a shared ``httpx.Client`` (connection reuse, short connect timeout)."""

    def __init__(
        self,
        *,
        connect_timeout: float = 3.0,
        read_timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        client: httpx.Client | None = None,
        total_timeout: float = 300.0,
    ) -> None:
        self._total_timeout = total_timeout
        self._client = client or httpx.Client(
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
            headers={"User-Agent": f"swarmupdate/{__version__}"},
            transport=transport,
            follow_redirects=False,
        )

    def close(self) -> None:
        self._client.close()

    @contextmanager
    def download_file(self, url: str, max_length: int) -> Iterator[IO[bytes]]:
        """Like python-tuf's, plus an overall deadline, and the connection is closed on any error
        (not when the exception object is finally collected: a hostile server must not keep it)."""
        deadline = time.monotonic() + self._total_timeout
        received = 0
        chunks = self.fetch(url)
        try:
            with tempfile.TemporaryFile() as temp_file:
                for chunk in chunks:
                    received += len(chunk)
                    if received > max_length:
                        raise tuf_exc.DownloadLengthMismatchError(
                            f"{url}: {received} bytes, more than the allowed {max_length}"
                        )
                    if time.monotonic() > deadline:
                        raise tuf_exc.SlowRetrievalError(
                            f"{url}: not complete after {self._total_timeout:.0f}s"
                        )
                    temp_file.write(chunk)
                temp_file.seek(0)
                yield temp_file
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()

    def _fetch(self, url: str) -> Iterator[bytes]:
        return self._get(self._client, url)

    def _get(self, client: httpx.Client, url: str) -> Iterator[bytes]:
        try:
            request = client.build_request("GET", url)
            response = client.send(request, stream=True)
        except httpx.TimeoutException as exc:
            raise tuf_exc.SlowRetrievalError(f"{url}: timed out") from exc
        except httpx.HTTPError as exc:
            raise tuf_exc.DownloadError(f"{url}: {exc}") from exc
        if response.status_code != 200:
            response.close()
            raise tuf_exc.DownloadHTTPError(f"HTTP {response.status_code} from {url}", response.status_code)
        return self._chunks(response, url)

    @staticmethod
    def _chunks(response: httpx.Response, url: str) -> Iterator[bytes]:
        try:
            yield from response.iter_bytes(_READ_SIZE)
        except httpx.TimeoutException as exc:
            raise tuf_exc.SlowRetrievalError(f"{url}: timed out") from exc
        except httpx.HTTPError as exc:
            raise tuf_exc.DownloadError(f"{url}: {exc}") from exc
        finally:
            response.close()


class FallbackFetcher(HttpxFetcher):
    """Fetch from the origin; when it cannot be reached (or answers 5xx), ask peers instead.

    Metadata ``{metadata_url}NAME`` maps to ``{peer}/v1/metadata/NAME`` and targets
    ``{targets_url}PATH`` to ``{peer}/v1/targets/PATH``. Whatever a peer sends is verified by
    python-tuf exactly as if the origin had sent it; freshness stays bounded by the timestamp's
    expiry. When the origin is unreachable and a peer answers 404 (say, for the next root
    version), the 404 is reported, as the TUF workflow expects at the end of the root chain.

    ``peer_tls``: the client context of peer mutual TLS; peers are then asked over ``https://`` only,
    with this machine's certificate (the origin keeps the system's CAs).
    """

    def __init__(
        self,
        metadata_url: str,
        targets_url: str,
        peers: Callable[[], list[str]],
        *,
        max_peers: int = 4,
        peer_tls: ssl.SSLContext | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._peer_client = self._client
        self.peer_tls = False
        if peer_tls is not None:
            self.set_peer_tls(peer_tls)
        self.metadata_url = metadata_url.rstrip("/") + "/"
        self.targets_url = targets_url.rstrip("/") + "/"
        self.peers = peers
        self.max_peers = max_peers
        #: how many fetches were answered by a peer instead of the origin (for status and tests)
        self.served_by_peers = 0

    def close(self) -> None:
        super().close()
        if self._peer_client is not self._client:
            self._peer_client.close()

    def set_peer_tls(self, context: ssl.SSLContext) -> None:
        """Ask peers with this client context from now on (a renewed certificate or fleet CA). A fetch
        under way keeps the old client, which is closed when garbage collected."""
        self._peer_client = httpx.Client(
            timeout=self._client.timeout,
            headers={"User-Agent": f"swarmupdate/{__version__}"},
            verify=context,
            follow_redirects=False,
        )
        self.peer_tls = True

    def _peer_url(self, peer: str, url: str) -> str | None:
        if url.startswith(self.metadata_url):
            return f"{peer.rstrip('/')}/v1/metadata/{url[len(self.metadata_url) :]}"
        if url.startswith(self.targets_url):
            return f"{peer.rstrip('/')}/v1/targets/{url[len(self.targets_url) :]}"
        return None

    def _fetch(self, url: str) -> Iterator[bytes]:
        try:
            return super()._fetch(url)
        except tuf_exc.DownloadHTTPError as exc:
            if exc.status_code < 500:
                raise
            origin_error: tuf_exc.DownloadError = exc
        except tuf_exc.DownloadError as exc:
            origin_error = exc
        peer_404 = False
        peers = [p for p in self.peers() if not self.peer_tls or p.startswith("https://")]
        for peer in peers[: self.max_peers]:
            peer_url = self._peer_url(peer, url)
            if peer_url is None:
                break
            try:
                body = self._get(self._peer_client, peer_url)
            except tuf_exc.DownloadHTTPError as exc:
                peer_404 = peer_404 or exc.status_code == 404
                continue
            except tuf_exc.DownloadError:
                continue
            self.served_by_peers += 1
            return body
        if peer_404:
            raise tuf_exc.DownloadHTTPError(f"{url}: origin unreachable and peers do not hold it", 404)
        raise origin_error
