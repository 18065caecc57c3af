"""An httpx-based ``FetcherInterface`` for python-tuf: the only place the trust client touches HTTP.

HTTP error statuses become ``DownloadHTTPError(status)``; every transport failure becomes a
``DownloadError`` so python-tuf tells "the transfer failed" from "the data is bad".
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

import httpx
from tuf.api import exceptions as tuf_exc
from tuf.ngclient.fetcher import FetcherInterface

from swarmupdate import __version__

__all__ = ["HttpxFetcher"]

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
        try:
            request = self._client.build_request("GET", url)
            response = self._client.send(request, stream=True)
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
