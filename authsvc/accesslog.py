"""The access log: one short line per request, without query strings or headers.

aiohttp's default access logger formats a dozen fields and a timestamp per request, which
cost more than a whole /healthz. This one logs what operators read (peer, method, path,
status, size, duration; the request id comes with every line of the request, see
``logs``) and never the query string, where a client might put a token. For the JSON
format the same values also go on the record as fields of their own.
"""

from __future__ import annotations

import logging

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

ACCESS_LOGGER = logging.getLogger("authsvc.access")


class AccessLogger(AbstractAccessLogger):
    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        self._log(request, response, time * 1000, None)

    def _log(
        self,
        request: BaseRequest,
        response: StreamResponse,
        duration_ms: float,
        extra: dict[str, object] | None,
    ) -> None:
        self.logger.info(
            '%s "%s %s" %d %d %.1fms',
            request.remote,
            request.method,
            request.path,
            response.status,
            response.body_length,
            duration_ms,
            extra=extra,
        )

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)


class JsonAccessLogger(AccessLogger):
    """The same line, its values also as fields: what log pipelines filter on."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        duration_ms = round(time * 1000, 1)
        fields: dict[str, object] = {
            "remote": request.remote,
            "method": request.method,
            "path": request.path,
            "status": response.status,
            "bytes": response.body_length,
            "duration_ms": duration_ms,
        }
        self._log(request, response, duration_ms, fields)
