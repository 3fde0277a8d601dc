"""CommandBatcher: the store calls of one loop turn share a pipeline, each with its own reply."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from support import free_port

from authsvc.store.batching import CommandBatcher


class PipelineSpy:
    """Counts the pipelines and lone commands a client sends."""

    def __init__(self, client: redis.asyncio.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
        self.pipelines: list[int] = []
        self.lone = 0
        pipeline, execute_command = client.pipeline, client.execute_command

        def counted_pipeline(**kwargs: Any) -> Any:
            pipe = pipeline(**kwargs)
            execute = pipe.execute

            async def counted_execute(**options: Any) -> Any:
                self.pipelines.append(len(pipe.command_stack))
                return await execute(**options)

            pipe.execute = counted_execute  # type: ignore[method-assign]
            return pipe

        async def counted_command(*args: Any, **options: Any) -> Any:
            self.lone += 1
            return await execute_command(*args, **options)

        monkeypatch.setattr(client, "pipeline", counted_pipeline)
        monkeypatch.setattr(client, "execute_command", counted_command)


async def test_calls_of_one_turn_share_one_pipeline_each_with_its_reply(
    redis_client: redis.asyncio.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    await redis_client.mset({f"k{i}": f"v{i}" for i in range(20)})
    spy = PipelineSpy(redis_client, monkeypatch)
    batcher = CommandBatcher(redis_client)

    replies = await asyncio.gather(*(batcher.execute("GET", f"k{i}") for i in range(20)))

    assert replies == [f"v{i}".encode() for i in range(20)]
    assert (spy.pipelines, spy.lone) == ([20], 0)


async def test_a_lone_call_is_a_plain_command(
    redis_client: redis.asyncio.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = PipelineSpy(redis_client, monkeypatch)
    batcher = CommandBatcher(redis_client)
    assert await batcher.execute("SET", "k", "v") is True
    assert await batcher.execute("GET", "k") == b"v"
    assert (spy.pipelines, spy.lone) == ([], 2)


async def test_an_error_reply_reaches_its_caller_only(redis_client: redis.asyncio.Redis) -> None:
    batcher = CommandBatcher(redis_client)
    await redis_client.set("text", "not a number")
    replies = await asyncio.gather(
        batcher.execute("INCR", "counter"),
        batcher.execute("INCR", "text"),
        batcher.execute("EVALSHA", "0" * 40, 0),
        batcher.execute("INCR", "counter"),
        return_exceptions=True,
    )
    assert replies[0] == 1 and replies[3] == 2
    assert isinstance(replies[1], ResponseError)
    assert type(replies[2]).__name__ == "NoScriptError"  # Script loads it and calls again


async def test_a_cancelled_caller_leaves_the_others_their_replies(
    redis_client: redis.asyncio.Redis,
) -> None:
    batcher = CommandBatcher(redis_client)
    first, second = batcher.execute("INCR", "n"), batcher.execute("INCR", "n")
    first.cancel()
    assert await second == 2
    assert await redis_client.get("n") == b"2"  # the cancelled command was sent all the same


@pytest.mark.slow  # redis-py's connection retries: seconds
async def test_an_unreachable_store_fails_every_caller_of_the_batch() -> None:
    client = redis.asyncio.Redis(port=free_port(), socket_connect_timeout=1)
    batcher = CommandBatcher(client)
    try:
        replies = await asyncio.gather(
            *(batcher.execute("GET", f"k{i}") for i in range(3)), return_exceptions=True
        )
    finally:
        await client.aclose()
    assert all(isinstance(reply, RedisConnectionError) for reply in replies)
