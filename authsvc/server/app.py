"""create_app(settings): routes, middleware and the resources opened in cleanup_ctx."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from authsvc.clock import Clock, system_clock
from authsvc.config import Settings
from authsvc.domain.accounts import AccountService
from authsvc.domain.passwords import Hasher, PasswordPolicy
from authsvc.domain.ratelimit import Limits, Throttle
from authsvc.domain.security_events import SecurityEvents
from authsvc.domain.sessions import SessionService
from authsvc.http import admin, oauth, ops, pages, v1
from authsvc.http.appkeys import (
    ACCOUNTS,
    ACTIVE_KEYS,
    CLOCK,
    DPOP_PROOFS,
    EMBEDDED_STORE_STATE,
    HASHER,
    KEY_RING,
    METRICS,
    SECURITY_EVENTS,
    SESSIONS,
    SETTINGS,
    STORE,
    THROTTLE,
    UNTRUSTED_FORWARDING_WARNED,
    Once,
)
from authsvc.http.observe import request_middleware, set_response_headers
from authsvc.server.keyring import load_key_ring, rotation_policy
from authsvc.store.connect import open_redis
from authsvc.store.embedded import EmbeddedValkey
from authsvc.store.records import EventLimits, SessionLimits
from authsvc.store.redis_store import Store
from authsvc.store.supervision import StoreState
from authsvc.telemetry.metrics import Metrics
from authsvc.tokens.access import AccessTokens
from authsvc.tokens.dpop import ProofVerifier
from authsvc.tokens.keys import KeyRing
from authsvc.tokens.refresh import RefreshTokens
from authsvc.tokens.rotation import ActiveKeys

logger = logging.getLogger(__name__)


def create_app(
    settings: Settings,
    *,
    clock: Clock = system_clock,
    key_ring: KeyRing | None = None,
    metrics_dir: Path | None = None,
    embedded_store_state: StoreState | None = None,
) -> web.Application:
    """Build the application; nothing is opened until it starts.

    ``metrics_dir`` is the directory of prometheus-client's multiprocess mode, and
    ``embedded_store_state`` the state of the embedded store the parent supervises, when
    this app is one of several workers (see ``serve``).
    """
    app = web.Application(
        client_max_size=settings.max_body_size,
        middlewares=[request_middleware],
    )
    app[SETTINGS] = settings
    app[CLOCK] = clock
    app[KEY_RING] = key_ring or load_key_ring(settings)
    app[UNTRUSTED_FORWARDING_WARNED] = Once()
    app[METRICS] = Metrics(multiprocess_dir=metrics_dir)
    app[DPOP_PROOFS] = ProofVerifier()
    if embedded_store_state is not None:
        app[EMBEDDED_STORE_STATE] = embedded_store_state
    app.on_response_prepare.append(set_response_headers)
    app.add_routes(v1.routes)
    app.add_routes(oauth.routes)
    app.add_routes(ops.routes)
    app.add_routes(admin.routes)
    app.add_routes(pages.routes)
    app.cleanup_ctx.append(_keys_ctx)
    app.cleanup_ctx.append(_store_ctx)
    app.cleanup_ctx.append(_services_ctx)
    return app


async def _keys_ctx(app: web.Application) -> AsyncIterator[None]:
    """Follow rotations in the keys directory; a rotation's steps fall due by time
    (ActiveKeys.at)."""
    settings, clock = app[SETTINGS], app[CLOCK]
    now = clock()
    keys = ActiveKeys(app[KEY_RING], rotation_policy(settings), now=now)
    keys.warn_about_clocks(now)
    app[ACTIVE_KEYS] = keys

    async def follow(keys_dir: Path) -> None:
        while True:
            await asyncio.sleep(settings.keys_poll_interval)
            ring = await asyncio.to_thread(keys.load_if_changed, keys_dir)
            if ring is not None:
                keys.replace(ring, clock())

    keys_dir = settings.signing_keys_dir
    if keys_dir is None:
        yield  # a key made at start: nothing to follow; time alone moves nothing
        return
    task = asyncio.create_task(follow(keys_dir))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    embedded: EmbeddedValkey | None = None
    url = settings.redis_url
    if url is None:
        embedded = EmbeddedValkey(settings.data_dir)
        # On the loop's own thread, not in a pool: the child's parent-death signal fires
        # when the thread that forked it ends. Nothing is served yet, so blocking is fine.
        url = embedded.start()
        # Restarted when it dies (from a thread of its own); /healthz fails meanwhile.
        app[EMBEDDED_STORE_STATE] = StoreState()
        embedded.supervise(app[EMBEDDED_STORE_STATE])
    limits = SessionLimits(
        idle_ttl=settings.refresh_token_ttl,
        max_age=settings.session_max_age,
        max_sessions=settings.max_sessions_per_user,
    )
    try:
        async with open_redis(url, socket_timeout=settings.store_timeout) as redis:
            app[STORE] = await Store.open(
                redis,
                limits,
                events=EventLimits(per_user=settings.events_per_user, ttl=settings.events_ttl),
                retry_after=settings.store_retry_after,
                on_unavailable=app[METRICS].store_error,
            )
            yield
    finally:
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)


async def _services_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    # Off the loop: the constructor computes the dummy hash, tens of milliseconds.
    hasher = await asyncio.to_thread(
        Hasher,
        time_cost=settings.argon2_time_cost,
        memory_cost=settings.argon2_memory_cost,
        parallelism=settings.argon2_parallelism,
        concurrency=settings.effective_hash_concurrency,
        queue_limit=settings.hash_queue_limit,
        legacy_raw_form=settings.legacy_password_hashes,
    )
    app[HASHER] = hasher
    app[THROTTLE] = throttle = Throttle(
        app[STORE],
        Limits(
            login=settings.login_rate_limit,
            login_failures=settings.login_failure_limit,
            registration=settings.registration_rate_limit,
            refresh=settings.refresh_rate_limit,
            client_auth_failures=settings.client_auth_failure_limit,
            ipv6_prefix=settings.rate_limit_ipv6_prefix,
        ),
    )
    access_tokens = AccessTokens(
        app[ACTIVE_KEYS],
        issuer=settings.effective_issuer,
        audience=settings.audience,
        client_id=settings.client_id,
        ttl=settings.access_token_ttl,
    )
    app[SECURITY_EVENTS] = security_events = SecurityEvents(app[STORE], app[METRICS])
    policy = PasswordPolicy(
        settings.password_min_length,
        settings.password_max_length,
        service_names=("authsvc", settings.audience, settings.client_id),
    )
    app[SESSIONS] = SessionService(
        app[STORE],
        hasher,
        access_tokens,
        RefreshTokens(app[KEY_RING].refresh_secret),
        policy,
        throttle,
        reuse_grace=settings.refresh_reuse_grace,
        sensitive_max_age=settings.sensitive_max_age,
        events=app[METRICS],
        security_events=security_events,
    )
    app[ACCOUNTS] = AccountService(
        app[STORE],
        hasher,
        policy,
        throttle,
        sensitive_max_age=settings.sensitive_max_age,
        events=app[METRICS],
        security_events=security_events,
    )
    yield
    await asyncio.to_thread(hasher.close)
