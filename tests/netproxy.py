"""A TCP proxy between authsvc and a Redis, whose faults a test switches on and off.

``NetProxy(upstream_port)`` listens on a free loopback port in the test's own event loop
and copies bytes both ways. The faults, each until ``normal()``:

- ``latency``: seconds added before each chunk is passed on, both ways;
- ``bandwidth``: bytes per second each way, per connection;
- ``cut_replies(after=N)``: every connection (or the next ``times`` ones) is reset once
  ``N`` bytes of replies have passed since the call: a reply cut in the middle of a
  pipeline; with ``stall=True`` the connection goes silent there instead (hung);
- ``lose_replies(containing=b"...")``: a connection whose request holds those bytes is
  reset when the reply arrives, before any of it passes: the command ran, its reply is
  lost;
- ``hang()``: the connections open now go silent (they read and drop, never answer), as a
  peer that vanished without a FIN or RST; new ones work;
- ``half_open = True``: every connection, new ones too, accepts and reads but never
  forwards or answers;
- ``reset_all()``: every open connection is reset (RST) at once.

``sent(b"...")`` counts how often bytes were sent towards Redis (forwarded or dropped).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Callable

LOOPBACK = "127.0.0.1"
CHUNK = 65_536


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with an RST rather than a FIN, as a middlebox that drops a connection does."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Link:
    """One client connection and its upstream connection."""

    def __init__(
        self, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter, proxy: NetProxy
    ) -> None:
        self.client = client
        self.upstream = upstream
        self.proxy = proxy
        self.silent = False  # hung: reads and drops, forwards nothing
        self.reply_bytes = 0  # replies passed since the proxy's cut was armed
        self.cut_armed_at = proxy.cut_generation
        self.lose_next_reply = False
        self.closed = False

    def reset(self) -> None:
        if not self.closed:
            self.closed = True
            self.proxy.resets += 1
            _reset(self.client)
            _reset(self.upstream)


class NetProxy:
    """A proxy to ``LOOPBACK:upstream_port``; ``url`` is the Redis URL to give authsvc."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.resets = 0  # connections the proxy has reset
        self.connections = 0  # connections accepted
        self.requests: list[bytes] = []  # every chunk sent towards Redis, in order
        self.normal()

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, LOOPBACK, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            link.reset()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    # -- the faults ----------------------------------------------------------------------

    def normal(self) -> None:
        """Every fault off; connections that were hung stay hung (a real peer's would)."""
        self.latency = 0.0
        self.bandwidth: int | None = None
        self.half_open = False
        self._cut_after: int | None = None
        self._cuts_left: int | None = None
        self._stall = False
        self.cut_generation = getattr(self, "cut_generation", 0) + 1
        self._lose_marker: bytes | None = None
        self._losses_left = 0

    def cut_replies(self, after: int, times: int | None = None, *, stall: bool = False) -> None:
        """Reset a connection once ``after`` reply bytes have passed on it from now on, or
        with ``stall`` hang it there; ``times`` connections, or every one (``None``)."""
        self._cut_after = after
        self._cuts_left = times
        self._stall = stall
        self.cut_generation += 1

    def lose_replies(self, containing: bytes, times: int = 1) -> None:
        """Reset the connection of the next ``times`` requests that hold ``containing``,
        once Redis has run them and before their reply passes."""
        self._lose_marker = containing
        self._losses_left = times

    def hang(self) -> None:
        """The connections open now read and drop, and never answer again."""
        for link in self._links:
            link.silent = True

    def sent(self, marker: bytes) -> int:
        """How many times ``marker`` was in what clients sent towards Redis."""
        return sum(chunk.count(marker) for chunk in self.requests)

    def reset_all(self) -> None:
        for link in list(self._links):
            link.reset()

    # -- copying ---------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(LOOPBACK, self.upstream_port)
        except OSError:
            _reset(writer)
            return
        link = _Link(writer, up_writer, self)
        link.silent = self.half_open
        self._links.add(link)
        requests = self._spawn(self._pump(link, reader, up_writer, self._on_request))
        replies = self._spawn(self._pump(link, up_reader, writer, self._on_reply))
        try:
            await asyncio.wait([requests, replies], return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._links.discard(link)
            for task in (requests, replies):
                task.cancel()
            if not link.closed:
                link.closed = True
                writer.close()
                up_writer.close()

    def _spawn(self, coroutine: object) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coroutine)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _on_request(self, link: _Link, data: bytes) -> tuple[bytes, bool]:
        if self._lose_marker is not None and self._losses_left > 0 and self._lose_marker in data:
            self._losses_left -= 1
            link.lose_next_reply = True
        return data, False

    def _on_reply(self, link: _Link, data: bytes) -> tuple[bytes, bool]:
        """What of ``data`` passes, and whether the connection is reset after it."""
        if link.lose_next_reply:
            return b"", True
        if self._cut_after is None or (self._cuts_left is not None and self._cuts_left <= 0):
            return data, False
        if link.cut_armed_at != self.cut_generation:
            link.cut_armed_at, link.reply_bytes = self.cut_generation, 0
        room = self._cut_after - link.reply_bytes
        if len(data) < room:
            link.reply_bytes += len(data)
            return data, False
        if self._cuts_left is not None:
            self._cuts_left -= 1
        return data[: max(room, 0)], True

    async def _pump(
        self,
        link: _Link,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        inspect: Callable[[_Link, bytes], tuple[bytes, bool]],
    ) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while True:
                data = await reader.read(CHUNK)
                if not data:
                    return
                if inspect == self._on_request:
                    self.requests.append(data)
                if link.silent or self.half_open:
                    link.silent = True
                    continue  # read, and dropped: the peer never hears back
                if self.latency:
                    await asyncio.sleep(self.latency)
                data, cut = inspect(link, data)
                await self._write(writer, data)
                if cut and inspect == self._on_reply and self._stall:
                    link.silent = True
                elif cut:
                    link.reset()
                    return

    async def _write(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        if not data:
            return
        if self.bandwidth is None:
            writer.write(data)
            await writer.drain()
            return
        piece = max(1, self.bandwidth // 50)  # 50 writes a second at most
        for start in range(0, len(data), piece):
            writer.write(data[start : start + piece])
            await writer.drain()
            await asyncio.sleep(min(piece, len(data) - start) / self.bandwidth)
