"""Every Prometheus metric of authsvc, registered on a registry of each app's own.

With ``--workers N`` the parent sets PROMETHEUS_MULTIPROC_DIR to a fresh directory before
it spawns the workers, so prometheus-client keeps every figure in a per-process file there
(its multiprocess mode, chosen when the library is imported: the one place authsvc's
metrics depend on the environment). Whichever worker answers a scrape then reads and sums
the files of all of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import get_args

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from authsvc.domain.events import (
    AccountAction,
    LoginOutcome,
    RefreshOutcome,
    RevokeReason,
    SecurityEventType,
)

# The classic text format, which every Prometheus version reads; authsvc's names need
# nothing newer.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
# The route label of a request that matched no route: one value, whatever the path, so
# that scanners cannot grow the number of series.
UNMATCHED_ROUTE = "unmatched"
# The method label of a request with any other method, so that invented methods cannot
# grow the number of series either.
OTHER_METHOD = "other"
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Seconds. From a cached verify (well under a millisecond) to a login with argon2id
# (tens to hundreds of milliseconds) and a store timing out (AUTHSVC_STORE_TIMEOUT, 2 s).
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """The counters and histograms of one app; also the service's ``SessionEvents``."""

    def __init__(self, *, multiprocess_dir: Path | None = None) -> None:
        self.registry = CollectorRegistry()
        self._multiprocess_dir = multiprocess_dir
        # (route, method, status) -> its counter and histogram: labels() validates and
        # locks on every call, which a request should not pay for twice.
        self._request_series: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self.http_requests = Counter(
            "authsvc_http_requests_total",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.http_request_duration = Histogram(
            "authsvc_http_request_duration_seconds",
            "Time from the request's arrival to its response, by route template.",
            ["route"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        # A scrape counts itself. Summed over the live workers in multiprocess mode.
        self.http_requests_in_flight = Gauge(
            "authsvc_http_requests_in_flight",
            "Requests received and not yet answered.",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.logins = Counter(
            "authsvc_logins_total",
            "Login attempts, by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self.refreshes = Counter(
            "authsvc_refreshes_total",
            "Refresh token presentations, by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self.revocations = Counter(
            "authsvc_sessions_revoked_total",
            "Sessions ended before their time, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.security_events = Counter(
            "authsvc_security_events_total",
            "Security events recorded (GET /v1/auth/events), by type.",
            ["type"],
            registry=self.registry,
        )
        self.account_changes = Counter(
            "authsvc_account_changes_total",
            "Accounts changed by their owner or an operator, by action.",
            ["action"],
            registry=self.registry,
        )
        self.store_errors = Counter(
            "authsvc_store_errors_total",
            "Store calls that failed because Redis was unreachable or refused.",
            registry=self.registry,
        )
        # Every outcome and reason is a series from the start, so that rate() and alerts
        # see a 0 rather than nothing before the first event.
        # Kept, so that counting one is an increment: labels() validates and locks.
        self._logins = {outcome: self.logins.labels(outcome) for outcome in get_args(LoginOutcome)}
        self._refreshes = {
            outcome: self.refreshes.labels(outcome) for outcome in get_args(RefreshOutcome)
        }
        self._revocations = {
            reason: self.revocations.labels(reason) for reason in get_args(RevokeReason)
        }
        self._security_events = {
            kind: self.security_events.labels(kind) for kind in get_args(SecurityEventType)
        }
        self._account_changes = {
            action: self.account_changes.labels(action) for action in get_args(AccountAction)
        }

    def request_finished(self, route: str, method: str, status: int, seconds: float) -> None:
        if method not in KNOWN_METHODS:
            method = OTHER_METHOD
        key = (route, method, status)
        series = self._request_series.get(key)
        if series is None:
            series = self._request_series[key] = (
                self.http_requests.labels(route, method, str(status)),
                self.http_request_duration.labels(route),
            )
        series[0].inc()
        series[1].observe(seconds)

    def login_finished(self, outcome: LoginOutcome) -> None:
        self._logins[outcome].inc()

    def refresh_finished(self, outcome: RefreshOutcome) -> None:
        self._refreshes[outcome].inc()

    def sessions_revoked(self, reason: RevokeReason, count: int = 1) -> None:
        if count > 0:
            self._revocations[reason].inc(count)

    def security_event(self, event_type: SecurityEventType) -> None:
        self._security_events[event_type].inc()

    def account_changed(
        self, action: AccountAction, user_id: str, *, session_id: str | None = None
    ) -> None:
        self._account_changes[action].inc()

    def store_error(self) -> None:
        self.store_errors.inc()

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric: of all workers, when there are several.

        Reads files in multiprocess mode: call it off the event loop.
        """
        if self._multiprocess_dir is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(self._multiprocess_dir))  # type: ignore[no-untyped-call]
        return generate_latest(registry)
