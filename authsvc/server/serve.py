"""Run the server: one process, or a parent that supervises N workers on one port.

Workers share the listening port with SO_REUSEPORT and get the same key ring from the
parent, so a token signed by one verifies on all. With the embedded store the parent owns
the Valkey process and starts it again when it dies; the workers connect to it, and read
whether it is known to be dead (for /healthz) from memory the parent shares. For metrics
the parent makes a directory where every worker keeps its figures, so that one scrape
sums them all. A worker killed by a signal is started again in its place (``_restart_worker``).

SIGTERM or SIGINT stops a server gracefully: it closes its listening socket, lets the
requests in flight finish (a request whose headers came in is read to the end of its body
and answered with ``Connection: close``: parser_errors.py) for at most
AUTHSVC_SHUTDOWN_TIMEOUT seconds, closes its store connections, stops the embedded store,
and exits 0. A parent passes the signal on to its workers and waits for them within the
same bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import ipaddress
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import wait
from pathlib import Path

from aiohttp import web
from prometheus_client import multiprocess

from authsvc.config import Settings, SettingsError
from authsvc.http.appkeys import STORE
from authsvc.server.accesslog import ACCESS_LOGGER, AccessLogger
from authsvc.server.app import create_app
from authsvc.server.keyring import load_key_ring, rotation_policy
from authsvc.server.parser_errors import JsonErrorAppRunner
from authsvc.store.embedded import EmbeddedStoreError, EmbeddedValkey
from authsvc.store.supervision import StoreState
from authsvc.store.urls import parse_store_url
from authsvc.telemetry.logs import configure_logging, flush_logs
from authsvc.tokens.keys import KeyRecord, KeyRing, KeyRingError
from authsvc.tokens.rotation import ActiveKeys
from authsvc.version import VERSION

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# What a worker may take beyond the shutdown bound: closing its store connections.
WORKER_STOP_MARGIN = 10.0
# A worker killed by a signal is started again, at most this many times in this window.
WORKER_RESTARTS = 5
WORKER_RESTART_WINDOW = 60.0
# aiohttp's run_app default; above the 60 s idle timeout of nginx's upstream keepalive.
KEEPALIVE_TIMEOUT = 75.0
# prometheus-client reads it when it is imported, in each worker (see metrics.py).
MULTIPROC_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def _use_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def _warn_about_store_settings(app: web.Application) -> None:
    check = app[STORE].check
    for warning in check.warnings if check else ():
        logger.warning("store: %s", warning)


async def _serve_until_stopped(app: web.Application, settings: Settings, reuse_port: bool) -> None:
    runner = JsonErrorAppRunner(
        app,
        handle_signals=False,
        shutdown_timeout=settings.shutdown_timeout,
        keepalive_timeout=KEEPALIVE_TIMEOUT,
        access_log=ACCESS_LOGGER if settings.access_log else None,
        access_log_class=AccessLogger,
    )
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    # Ours rather than aiohttp's, which raise in the loop: a second signal (a Ctrl-C that
    # reached the worker and the parent's SIGTERM after it) must not cut the requests
    # that the first one lets finish.
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    try:
        await runner.setup()
        site = web.TCPSite(runner, settings.host, settings.port, reuse_port=reuse_port or None)
        await site.start()
        # Everything made so far (modules, the app, its clients) lives as long as the
        # process: out of the collector's way, a full collection has less to walk.
        gc.freeze()
        logger.info("listening on http://%s:%d", settings.host, settings.port)
        await stop.wait()
        logger.info(
            "stopping: no new connections; letting the requests in flight finish (at most %gs)",
            settings.shutdown_timeout,
        )
    finally:
        # Closes the listening socket, then idle connections, waits for the requests in
        # flight up to the bound, then runs cleanup_ctx: store connections, embedded store.
        await runner.cleanup()
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)
    logger.info("stopped")


def _run(
    settings: Settings,
    key_ring: KeyRing,
    *,
    reuse_port: bool,
    metrics_dir: Path | None = None,
    embedded_store_state: StoreState | None = None,
) -> None:
    _use_uvloop()
    app = create_app(
        settings,
        key_ring=key_ring,
        metrics_dir=metrics_dir,
        embedded_store_state=embedded_store_state,
    )
    # After the store opened (cleanup_ctx runs first), and only for a server, not the CLI.
    app.on_startup.append(_warn_about_store_settings)
    try:
        asyncio.run(_serve_until_stopped(app, settings, reuse_port))
    finally:
        flush_logs()  # a worker ends with os._exit: no logging.shutdown to do it


def _worker(
    settings: Settings,
    pems: list[KeyRecord],
    refresh_secret: bytes,
    metrics_dir: Path,
    embedded_store_state: StoreState | None,
) -> None:
    configure_logging(settings.log_level, settings.log_format)
    try:
        _run(
            settings,
            KeyRing.from_pems(pems, refresh_secret),
            reuse_port=True,
            metrics_dir=metrics_dir,
            embedded_store_state=embedded_store_state,
        )
    except (KeyRingError, EmbeddedStoreError, OSError) as exc:
        # One line, as the parent would say it; the parent then stops the others.
        logger.error("authsvc: %s", exc)
        raise SystemExit(2) from None


def _store_name(settings: Settings) -> str:
    if settings.redis_url is None:
        return "embedded"
    return parse_store_url(settings.redis_url).topology


def _check_issuer(settings: Settings) -> None:
    """Raises SettingsError when the default issuer would name no reachable address."""
    if settings.issuer is not None:
        return
    try:
        wildcard = not settings.host or ipaddress.ip_address(settings.host).is_unspecified
    except ValueError:
        return  # a host name: http://NAME:PORT is a URL clients can use
    if wildcard:
        raise SettingsError(
            f"AUTHSVC_ISSUER must be set when listening on {settings.host or 'every address'}: "
            f"the default issuer {settings.effective_issuer} is no URL a client can reach; "
            "set it to the public URL, e.g. AUTHSVC_ISSUER=http://localhost:8080"
        )


def serve(settings: Settings) -> int:
    """Serve until SIGINT or SIGTERM; return the process exit code."""
    _check_issuer(settings)
    key_ring = load_key_ring(settings)
    if settings.workers > 1:
        if _store_name(settings) == "memory":
            raise SettingsError(
                "invalid setting AUTHSVC_WORKERS: memory:// lives in one process; use 1 worker"
            )
        if settings.port == 0:
            raise SettingsError("invalid setting AUTHSVC_PORT: workers need a fixed port")
        # Each worker binds with SO_REUSEPORT; a port taken by another program would fail
        # in every worker at once: say it once, here, instead.
        _check_port_is_free(settings)
    logger.info(
        "authsvc %s starting on %s:%d: %d worker%s, store: %s",
        VERSION,
        settings.host,
        settings.port,
        settings.workers,
        "" if settings.workers == 1 else "s",
        _store_name(settings),
    )
    keys = ActiveKeys(key_ring, rotation_policy(settings))
    logger.info(
        "signing with kid %s; JWKS kids: %s (keys from %s)",
        keys.signer.kid,
        ", ".join(key.kid for key in reversed(keys.published)),
        settings.signing_keys_dir or "a key generated at start",
    )
    if settings.workers == 1:
        _run(settings, key_ring, reuse_port=False)
        return 0
    return _supervise(settings, key_ring)


def _check_port_is_free(settings: Settings) -> None:
    """Raises OSError (one line) when the workers could not listen on the address."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    try:
        with socket.create_server((settings.host, settings.port), family=family, reuse_port=True):
            pass
    except OSError as exc:
        raise OSError(
            f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}"
        ) from None


def _supervise(settings: Settings, key_ring: KeyRing) -> int:
    embedded: EmbeddedValkey | None = None
    state: StoreState | None = None
    if settings.redis_url is None:
        embedded = EmbeddedValkey(settings.data_dir)
        settings = dataclasses.replace(settings, redis_url=embedded.start())
        # This process restarts the store when it dies; the workers only read the state
        # (shared memory) for their /healthz, and reconnect by themselves.
        state = StoreState()
        embedded.supervise(state)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in STOP_SIGNALS}
    # A fresh directory each start: files left by an earlier run would be summed too.
    metrics_dir = Path(tempfile.mkdtemp(prefix="authsvc-metrics-"))
    previous_multiproc = os.environ.get(MULTIPROC_VARIABLE)
    os.environ[MULTIPROC_VARIABLE] = str(metrics_dir)  # inherited by the spawned workers
    context = multiprocessing.get_context("spawn")

    def make_worker(i: int) -> multiprocessing.process.BaseProcess:
        return context.Process(
            target=_worker,
            args=(settings, key_ring.to_pems(), key_ring.refresh_secret, metrics_dir, state),
            name=f"worker-{i}",
        )

    workers = [make_worker(i) for i in range(settings.workers)]
    exit_code = 0
    restarts: list[float] = []  # when workers were started again, for the crash-loop bound
    try:
        for process in workers:
            process.start()
        while not stop.is_set():
            # A Ctrl-C reaches the workers too (one process group): a worker that exits
            # once the stop was asked for is not a failure.
            ended = wait([process.sentinel for process in workers], timeout=0.5)
            if not ended or stop.is_set():
                continue
            index = next(i for i, p in enumerate(workers) if p.sentinel in ended)
            if not _restart_worker(workers, index, restarts, metrics_dir, make_worker):
                logger.error("a worker exited unexpectedly; stopping the others")
                exit_code = 1
                break
        if stop.is_set():
            logger.info(
                "stopping %d workers: letting the requests in flight finish (at most %gs)",
                len(workers),
                settings.shutdown_timeout,
            )
    finally:
        _stop_workers(workers, settings.shutdown_timeout + WORKER_STOP_MARGIN, metrics_dir)
        if embedded is not None:
            embedded.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if previous_multiproc is None:
            os.environ.pop(MULTIPROC_VARIABLE, None)
        else:
            os.environ[MULTIPROC_VARIABLE] = previous_multiproc
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return exit_code


def _restart_worker(
    workers: list[multiprocessing.process.BaseProcess],
    index: int,
    restarts: list[float],
    metrics_dir: Path,
    make_worker: Callable[[int], multiprocessing.process.BaseProcess],
) -> bool:
    """Start a worker killed by a signal again in its place; False when it should not be.

    A worker killed by a signal (the OOM killer's SIGKILL, a crash) is started again at
    once: the others go on serving meanwhile, and only the requests it had in flight are
    lost. A worker that exited by itself (a start that failed: a key ring or a port it
    could not use, exit status 2) would fail again: the server stops. So does one killed
    more than WORKER_RESTARTS times within WORKER_RESTART_WINDOW seconds (a crash loop).
    """
    dead = workers[index]
    dead.join()
    code = dead.exitcode
    if dead.pid is not None:
        multiprocess.mark_process_dead(dead.pid, str(metrics_dir))  # type: ignore[no-untyped-call]
    now = time.monotonic()
    restarts[:] = [at for at in restarts if now - at < WORKER_RESTART_WINDOW]
    if code is None or code >= 0 or len(restarts) >= WORKER_RESTARTS:
        return False
    restarts.append(now)
    replacement = make_worker(index)
    replacement.start()
    workers[index] = replacement
    logger.error(
        "worker %s was killed by %s; started worker %s in its place",
        dead.pid,
        _signal_name(-code),
        replacement.pid,
    )
    return True


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _stop_workers(
    workers: Sequence[multiprocessing.process.BaseProcess], timeout: float, metrics_dir: Path
) -> None:
    for process in workers:
        if process.is_alive() and process.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()  # SIGTERM: each worker stops gracefully
    for process in workers:
        process.join(timeout)
        if process.is_alive():
            logger.warning("worker %s did not stop within %gs; killing it", process.pid, timeout)
            process.kill()
            process.join()
        if process.pid is not None:
            # prometheus-client's multiprocess mode asks for it (its live gauges).
            multiprocess.mark_process_dead(process.pid, str(metrics_dir))  # type: ignore[no-untyped-call]
