"""The access log: one short line per request, without query strings or headers.

aiohttp's default access logger formats a dozen fields and a timestamp per request, which
cost more than a whole /healthz. This one logs what operators read (peer, method, path,
status, size, duration, request id) and never the query string, where a client might put
a token. The same values go on the record as fields, which the JSON format writes out.
"""

from __future__ import annotations

import logging

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from authsvc.requestid import HEADER

ACCESS_LOGGER = logging.getLogger("authsvc.access")


class AccessLogger(AbstractAccessLogger):
    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        duration_ms = round(time * 1000, 1)
        self.logger.info(
            '%s "%s %s" %d %d %.1fms',
            request.remote,
            request.method,
            request.path,
            response.status,
            response.body_length,
            duration_ms,
            extra={
                # The id every response carries: the caller's, or the one made for it.
                "request_id": response.headers.get(HEADER, "-"),
                "remote": request.remote,
                "method": request.method,
                "path": request.path,
                "status": response.status,
                "bytes": response.body_length,
                "duration_ms": duration_ms,
            },
        )

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)
