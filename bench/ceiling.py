"""The ceiling: a bare aiohttp handler doing one Redis GET, nothing else.

It runs on the same stack as authsvc (uvloop, aiohttp, redis-py with hiredis, the client
built by ``authsvc.store.open_redis``) with no middleware and no access log, so what it
answers per second on a machine is as fast as any handler there can be that needs Redis.
Every scenario is reported as a ratio to it, measured in the same run.

    python bench/ceiling.py --port 8181 --redis-url redis://127.0.0.1:6390/0 [--reuse-port]
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator

import uvloop
from aiohttp import web
from redis.asyncio import Redis

from authsvc.store.connect import open_redis

KEY = "bench:ceiling"
REDIS = web.AppKey("redis", Redis)
URL = web.AppKey("url", str)


async def get(request: web.Request) -> web.Response:
    value = await request.app[REDIS].get(KEY)
    return web.Response(body=value or b"", content_type="application/json")


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
    async with open_redis(app[URL], socket_timeout=2.0) as redis:
        assert isinstance(redis, Redis)
        app[REDIS] = redis
        yield


def create_app(redis_url: str) -> web.Application:
    app = web.Application()
    app[URL] = redis_url
    app.cleanup_ctx.append(redis_ctx)
    app.router.add_get("/", get)
    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--reuse-port", action="store_true", help="for N processes on one port")
    args = parser.parse_args()
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    web.run_app(
        create_app(args.redis_url),
        host=args.host,
        port=args.port,
        reuse_port=args.reuse_port or None,
        access_log=None,
        print=None,
    )


if __name__ == "__main__":
    main()
