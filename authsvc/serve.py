"""Run the server: one process, or a parent that supervises N workers on one port.

Workers share the listening port with SO_REUSEPORT and get the same key ring from the
parent, so a token signed by one verifies on all. With the embedded store the parent owns
the Valkey process and the workers connect to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import multiprocessing
import signal
import threading
from multiprocessing.connection import wait

from aiohttp import web

from authsvc.accesslog import ACCESS_LOGGER, AccessLogger
from authsvc.app import create_app
from authsvc.config import Settings, SettingsError
from authsvc.http.appkeys import STORE
from authsvc.keys import KeyRing, load_key_ring
from authsvc.logs import configure_logging
from authsvc.store import parse_store_url
from authsvc.store.embedded import EmbeddedValkey

logger = logging.getLogger(__name__)

WORKER_STOP_TIMEOUT = 30.0


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


def _run(settings: Settings, key_ring: KeyRing, *, reuse_port: bool) -> None:
    _use_uvloop()
    app = create_app(settings, key_ring=key_ring)
    # After the store opened (cleanup_ctx runs first), and only for a server, not the CLI.
    app.on_startup.append(_warn_about_store_settings)
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        reuse_port=reuse_port or None,
        print=None,
        access_log=ACCESS_LOGGER if settings.access_log else None,
        access_log_class=AccessLogger,
    )


def _worker(settings: Settings, pems: list[tuple[str, bytes]], refresh_secret: bytes) -> None:
    configure_logging(settings.log_level, settings.log_format)
    _run(settings, KeyRing.from_pems(pems, refresh_secret), reuse_port=True)


def serve(settings: Settings) -> int:
    """Serve until SIGINT or SIGTERM; return the process exit code."""
    key_ring = load_key_ring(settings)
    logger.info(
        "authsvc listening on http://%s:%d (%d worker%s, store: %s)",
        settings.host,
        settings.port,
        settings.workers,
        "" if settings.workers == 1 else "s",
        "embedded" if settings.redis_url is None else parse_store_url(settings.redis_url).topology,
    )
    if settings.workers == 1:
        _run(settings, key_ring, reuse_port=False)
        return 0
    if settings.redis_url is not None and parse_store_url(settings.redis_url).topology == "memory":
        raise SettingsError(
            "invalid setting AUTHSVC_WORKERS: memory:// lives in one process; use 1 worker"
        )
    if settings.port == 0:
        raise SettingsError("invalid setting AUTHSVC_PORT: workers need a fixed port")
    return _supervise(settings, key_ring)


def _supervise(settings: Settings, key_ring: KeyRing) -> int:
    embedded: EmbeddedValkey | None = None
    if settings.redis_url is None:
        embedded = EmbeddedValkey(settings.data_dir)
        settings = dataclasses.replace(settings, redis_url=embedded.start())
    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(
            target=_worker,
            args=(settings, key_ring.to_pems(), key_ring.refresh_secret),
            name=f"worker-{i}",
        )
        for i in range(settings.workers)
    ]
    exit_code = 0
    try:
        for process in workers:
            process.start()
        while not stop.is_set():
            # A Ctrl-C reaches the workers too (one process group): a worker that exits
            # once the stop was asked for is not a failure.
            if wait([process.sentinel for process in workers], timeout=0.5) and not stop.is_set():
                logger.error("a worker exited unexpectedly; stopping the others")
                exit_code = 1
                break
    finally:
        for process in workers:
            if process.is_alive() and process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    process.terminate()
        for process in workers:
            process.join(WORKER_STOP_TIMEOUT)
            if process.is_alive():
                process.kill()
                process.join()
        if embedded is not None:
            embedded.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return exit_code
