"""A lean HTTP/1.1 client for the load generator: keep-alive connections on asyncio streams, one
POST and its whole answer at a time per connection, nothing else (no redirects, proxies, TLS,
cookies or decompression; loopback targets only).

Why not httpx: the load generator shares the machine's cores with the service it measures, and
httpx's async client spends ~1.6 ms of Python per request on loopback (measured against
`http.client` on the same idle service, loadtest/FINDINGS.md, "The load generator's own cost"),
time that every client-observed latency then includes and CPU the service then lacks. A search
box's real client sits on another machine; this one keeps its share of a benchmark small.
(`LoadConfig.http_client = "httpx"` still measures with httpx, for the comparison.)
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from urllib.parse import urlsplit


class HttpProtocolError(Exception):
    """The server's answer was not HTTP/1.1 this client can read."""


@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # names lower-cased
    body: bytes
    headers_s: float  # from the request's first byte written to the end of the headers read
    body_s: float  # reading the body


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    def close(self) -> None:
        self.writer.close()


class LeanHttpClient:
    """POSTs to one `base_url` over a pool of at most `connections` keep-alive connections."""

    def __init__(self, base_url: str, headers: dict[str, str], connections: int):
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"the lean client speaks plain http only: {base_url!r}")
        self.host, self.port = parts.hostname, parts.port or 80
        self.path_prefix = parts.path.rstrip("/")
        self.fixed = "".join(f"{k}: {v}\r\n" for k, v in {"host": parts.netloc, **headers}.items())
        self.idle: list[_Connection] = []
        self.slots = asyncio.Semaphore(connections)

    async def post(self, path: str, body: bytes) -> Answer:
        """POST `body` to `path` and read the whole answer."""
        async with self.slots:
            conn = self.idle.pop() if self.idle else None
            for last in (conn is None, True):  # a kept-alive connection may have been closed under it
                if conn is None:
                    conn = _Connection(*await asyncio.open_connection(self.host, self.port))
                try:
                    answer = await self._exchange(conn, path, body)
                    break
                except (ConnectionError, asyncio.IncompleteReadError):
                    conn.close()
                    if last:
                        raise
                    conn = None  # once more, on a new connection
                except BaseException:
                    conn.close()
                    raise
            if answer.headers.get("connection", "").lower() == "close":
                conn.close()
            else:
                self.idle.append(conn)
            return answer

    async def _exchange(self, conn: _Connection, path: str, body: bytes) -> Answer:
        head = (f"POST {self.path_prefix}{path} HTTP/1.1\r\n{self.fixed}"
                f"content-length: {len(body)}\r\n\r\n").encode("latin-1")
        t0 = time.perf_counter()
        conn.writer.write(head + body)
        await conn.writer.drain()
        status_line = await conn.reader.readuntil(b"\r\n")
        parts = status_line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise HttpProtocolError(f"not an HTTP/1.x status line: {status_line[:80]!r}")
        status = int(parts[1])
        headers = {}
        while (line := await conn.reader.readuntil(b"\r\n")) != b"\r\n":
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        t1 = time.perf_counter()
        if "content-length" in headers:
            data = await conn.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            data = await self._chunked(conn.reader)
        else:  # the body runs to the end of the connection
            data = await conn.reader.read()
            headers["connection"] = "close"
        return Answer(status, headers, data, t1 - t0, time.perf_counter() - t1)

    @staticmethod
    async def _chunked(reader: asyncio.StreamReader) -> bytes:
        out = bytearray()
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
            if size == 0:  # then trailers (none expected), up to an empty line
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                return bytes(out)
            out += await reader.readexactly(size)
            await reader.readexactly(2)

    async def close(self) -> None:
        for conn in self.idle:
            conn.close()
        self.idle.clear()
