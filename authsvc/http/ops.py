"""/healthz, /readyz, /metrics and /openapi.json: what load balancers, orchestrators,
Prometheus and tools ask."""

from __future__ import annotations

import asyncio
import importlib.resources

from aiohttp import web

from authsvc.errors import StoreUnavailable
from authsvc.http.appkeys import EMBEDDED_STORE_STATE, METRICS, SETTINGS, STORE
from authsvc.http.io import json_response
from authsvc.telemetry.metrics import CONTENT_TYPE

routes = web.RouteTableDef()

# The OpenAPI 3.1 document of the whole HTTP surface, kept by hand beside this module and
# shipped as package data; docs/api.md is its twin for people.
OPENAPI_DOCUMENT = importlib.resources.files("authsvc.http").joinpath("openapi.json").read_bytes()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    """Liveness: 200 while the process serves, whatever the store does, but for one case:
    the embedded store's process is known to be dead (it is being started again; see
    ``EmbeddedValkey.supervise``). A store that is slow, or a Redis URL's that is down,
    is for /readyz to report: restarting authsvc would not bring it back.
    """
    state = request.app.get(EMBEDDED_STORE_STATE)
    if state is not None and state.gone:
        raise StoreUnavailable(
            "the embedded store's process has died; it is being started again",
            retry_after=request.app[SETTINGS].store_retry_after,
        )
    return json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    """Readiness: 200 when the store answers a PING, else 503 with Retry-After.

    The body also carries what the store's own settings put at risk (an evicting
    maxmemory-policy, persistence off): the service is ready, but an operator should know.
    """
    store = request.app[STORE]
    try:
        await store.ping()
        check = store.check or await store.check_settings()
    except StoreUnavailable:
        retry_after = request.app[SETTINGS].store_retry_after
        return json_response(
            {"status": "unavailable", "store": "unreachable"},
            status=503,
            headers={"Retry-After": str(retry_after)},
        )
    return json_response({"status": "ok", "store": "ok", "store_warnings": list(check.warnings)})


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 document of this service, as it is kept in the package."""
    return web.Response(body=OPENAPI_DOCUMENT, content_type="application/json", charset="utf-8")


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format, summed over every worker of this instance."""
    body = await asyncio.to_thread(request.app[METRICS].exposition)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})
