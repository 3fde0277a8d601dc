"""Follow a Sentinel master across failovers at once, not at the next reconnect.

redis-py's ``SentinelConnectionPool`` asks the sentinels only when it opens a connection,
and keeps using pooled ones until they fail. After a planned ``SENTINEL FAILOVER`` the old
master stays up and writable until the sentinels demote it (about ten seconds), and every
write it takes in that window is discarded when it resyncs from the new master: answered
200, then lost. So here:

- ``MasterWatcher`` (one task per client, so one per worker) subscribes to
  ``+switch-master`` on one sentinel, moving to the next when that one fails, and asks
  ``SENTINEL MASTERS`` every ``CHECK_INTERVAL`` seconds in case a message was missed.
  It tells the pool the master's address.
- ``FollowingPool`` counts master addresses in ``generation``. A connection remembers the
  generation it was opened under; one opened under an earlier generation is closed before
  it sends, and a reply read on it after the switch is refused with ``MasterSwitched``
  (the command ran on the old master, whose writes are being thrown away, or not at all:
  its caller gets 503, never a retry that could run it twice).
- ``FollowingConnection`` asks ``ROLE`` of every server it connects to, and treats
  ``READONLY``, ``MASTERDOWN`` and ``LOADING`` as "not the master (any more)": the address
  is forgotten, the connection closed, and the command retried once by redis-py's
  ``Retry`` on a fresh connection. That retry is safe: these replies mean the command did
  not run. A replica refuses the first write of an authsvc script with ``READONLY`` and the
  script stops there (``redis.call`` raises; our scripts never ``pcall``), and nothing
  before it wrote; a script declared with ``#!lua flags=`` is refused before it starts;
  ``MASTERDOWN`` and ``LOADING`` refuse every command before it runs. A script cannot
  run half on a master and half after its demotion: a script is atomic, and ``REPLICAOF``
  runs between commands. So the scripts keep no ``#!lua`` line: flags would add nothing
  here, and a flagged script that writes is refused outright under OOM.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import SSLConnection
from redis.asyncio.sentinel import (
    Sentinel,
    SentinelConnectionPool,
    SentinelManagedConnection,
)
from redis.exceptions import (
    BusyLoadingError,
    ConnectionError,
    MasterDownError,
    NoPermissionError,
    ReadOnlyError,
    RedisError,
)

logger = logging.getLogger(__name__)

# How often the watcher asks a sentinel for the master when no message came: the bound on
# how long a missed +switch-master (a sentinel that restarted, a lost pubsub connection)
# keeps authsvc on the old master.
CHECK_INTERVAL = 2.0
# What a sentinel publishes when it has moved the master: "<name> <old ip> <old port>
# <new ip> <new port>".
SWITCH_CHANNEL = "+switch-master"
# The wait before going round the sentinels again when none answered, doubling up to the
# cap while none does.
RESUBSCRIBE_DELAY = 0.5
RESUBSCRIBE_DELAY_CAP = 5.0

Address = tuple[str, int]


class MasterSwitched(RedisError):
    """A reply came from a server that stopped being the master while it was awaited."""


class FollowingConnection(SentinelManagedConnection):
    """A connection to the master of its pool's generation, and to no other server."""

    connection_pool: FollowingPool
    generation = -1

    async def _connect_retry(self) -> None:
        await self.connect_check_health(
            check_health=self.connection_pool.check_connection, retry_socket_connect=False
        )

    async def connect_check_health(
        self, check_health: bool = True, retry_socket_connect: bool = True
    ) -> None:
        # Every (re)connect asks the pool where the master is: redis-py's own reconnect,
        # on a send after a retry closed the connection, would go back to the old host.
        if self.is_connected:
            return
        address, self.generation = await self.connection_pool.current_master()
        self.host, self.port = address
        await super().connect_check_health(check_health=check_health, retry_socket_connect=False)
        await self._check_role(address)

    async def _check_role(self, address: Address) -> None:
        """Refuse a server that is no master: the sentinels' answer may be out of date."""
        await super().send_packed_command(self.pack_command("ROLE"), check_health=False)
        try:
            role = await super().read_response()
        except NoPermissionError:
            return  # an ACL user without +role: READONLY is still caught on writes
        if role and role[0] in (b"master", "master"):
            return
        self.connection_pool.forget(address, self.generation)
        await self.disconnect()
        raise ConnectionError("the server the sentinels named is not a master")

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if self.is_connected and self.generation != self.connection_pool.generation:
            # Opened to a master that has since been replaced: reconnect before sending.
            await self.disconnect()
        await super().send_packed_command(command, check_health=check_health)

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        pool = self.connection_pool
        try:
            # Past SentinelManagedConnection's: its READONLY handling is the one below.
            response = await super(SentinelManagedConnection, self).read_response(*args, **kwargs)
        except (ReadOnlyError, MasterDownError, BusyLoadingError) as exc:
            # The command did not run (see the module docstring): redis-py's Retry sends
            # it once more, on a fresh connection to the master the sentinels name.
            pool.forget((self.host, self.port), self.generation)
            await self.disconnect()
            raise ConnectionError(f"not the master: {type(exc).__name__}") from exc
        if self.generation != pool.generation:
            await self.disconnect()
            raise MasterSwitched("the master changed while this reply was awaited")
        return response


class FollowingSSLConnection(FollowingConnection, SSLConnection):
    """``FollowingConnection`` over TLS (``rediss+sentinel://``)."""


class FollowingPool(SentinelConnectionPool):
    """A Sentinel pool told of every switch by a ``MasterWatcher``."""

    def __init__(self, service_name: str, sentinel_manager: Sentinel, **kwargs: Any) -> None:
        tls = kwargs.pop("ssl", False)
        kwargs["connection_class"] = FollowingSSLConnection if tls else FollowingConnection
        super().__init__(service_name, sentinel_manager, **kwargs)  # type: ignore[no-untyped-call]
        self.generation = 0
        self.master_address: Address | None = None

    async def current_master(self) -> tuple[Address, int]:
        """The master's address and its generation; the sentinels are asked when the
        pool knows none (at start, or after a server refused to be the master).

        Raises:
            MasterNotFoundError: when no sentinel names a master.
        """
        if self.master_address is None:
            address = await self.sentinel_manager.discover_master(self.service_name)
            if self.master_address is None:  # no switch was reported meanwhile
                self.switch(address)
        assert self.master_address is not None
        return self.master_address, self.generation

    async def get_master_address(self) -> Address:
        address, _ = await self.current_master()
        return address

    def switch(self, address: Address) -> bool:
        """Follow the master to ``address``; True when it moved.

        Connections of an earlier generation are not reused: each is closed before its
        next send, a reply read on one is refused (``MasterSwitched``), and the watcher
        closes the idle ones at once.
        """
        address = (str(address[0]), int(address[1]))
        if address == self.master_address:
            return False
        previous = self.master_address
        self.master_address = address
        self.generation += 1
        if previous is not None:
            logger.warning(
                "Redis master of %r moved from %s:%s to %s:%s",
                self.service_name, *previous, *address,
            )  # fmt: skip
        return True

    def forget(self, address: Address, generation: int) -> None:
        """A server at ``address`` refused to be the master: ask the sentinels again."""
        if self.generation == generation and self.master_address == address:
            self.master_address = None
            self.generation += 1


class MasterWatcher:
    """Subscribe to ``+switch-master`` on a sentinel and tell the pool of each switch."""

    def __init__(self, sentinel: Sentinel, pool: FollowingPool, service_name: str) -> None:
        self._sentinel = sentinel
        self._pool = pool
        self._service_name = service_name
        self._task: asyncio.Task[None] | None = None
        self._subscribed = False

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        index = 0
        delay = RESUBSCRIBE_DELAY
        while True:
            clients = self._sentinel.sentinels
            client = clients[index % len(clients)]
            try:
                await self._follow(client)
            except (RedisError, OSError) as exc:  # down, hung, or refusing: the next one
                # Warned once per loss, not once per try while every sentinel is away.
                log = logger.warning if self._subscribed else logger.debug
                log("sentinel watch lost (%s): trying the next sentinel", type(exc).__name__)
            if self._subscribed:
                self._subscribed = False
                delay = RESUBSCRIBE_DELAY
            index += 1
            if index % len(clients) == 0:
                await asyncio.sleep(delay)
                delay = min(delay * 2, RESUBSCRIBE_DELAY_CAP)

    async def _follow(self, client: Redis) -> None:
        pubsub = client.pubsub()
        try:
            await pubsub.subscribe(SWITCH_CHANNEL)
            loop = asyncio.get_running_loop()
            # A switch may have happened while nobody listened: ask once subscribed.
            await self._follow_to(await self._check(client))
            self._subscribed = True
            checked = loop.time()
            while True:
                wait = max(0.0, checked + CHECK_INTERVAL - loop.time())
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=wait)
                if message is not None:
                    await self._follow_to(self._switched_to(message.get("data")))
                if loop.time() - checked >= CHECK_INTERVAL:
                    await self._follow_to(await self._check(client))
                    checked = loop.time()
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _switched_to(self, data: Any) -> Address | None:
        text = data.decode() if isinstance(data, bytes) else str(data)
        fields = text.split()
        if len(fields) == 5 and fields[0] == self._service_name and fields[4].isdigit():
            return (fields[3], int(fields[4]))
        return None

    async def _check(self, client: Redis) -> Address | None:
        """The master as the subscribed sentinel reports it, None while it has none.

        Asked of the same sentinel as the messages come from: another may not have
        learnt of a switch yet, and would send authsvc back to the old master.
        """
        masters: dict[str, dict[str, Any]] = await client.sentinel_masters()  # type: ignore[assignment]
        state = masters.get(self._service_name)
        if not state or not self._sentinel.check_master_state(state, self._service_name):
            return None  # mid-failover: the message will tell
        return (str(state["ip"]), int(state["port"]))

    async def _follow_to(self, address: Address | None) -> None:
        if address is not None and self._pool.switch(address):
            # Idle connections to the old master are closed now; those in use are not
            # reused (FollowingConnection checks the generation).
            await self._pool.disconnect(inuse_connections=False)
