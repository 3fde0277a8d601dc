"""schemathesis hooks of tests/test_schemathesis.py: what a schema-valid request may be refused for.

JSON Schema cannot say three things the server checks, and the document says them in words:
the password policy (``weak_password``: zxcvbn, and lengths set by the operator), the rules on
a username's normalised form (NFKC, trimming and case folding can lengthen or empty a name, and
control, format, private-use and unassigned characters are refused), which credentials and
refresh tokens exist (``invalid_grant``, a 400 on /oauth/token as RFC 6749 §5.2 says), and
whether a ``DPoP`` header is a proof signed for the request (``invalid_dpop_proof``, a 400
there as RFC 9449 §5.2 says). They show
on the operations that take a new password or credentials, where the test's configuration
lets schemathesis's positive_data_acceptance take a 400; this check then fails any 400 to a
schema-valid request there that is not one of those refusals, so everything else is held to
the document as on every other operation.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from schemathesis import Case, CheckContext, Response
from schemathesis.openapi.checks import RejectedPositiveData
from schemathesis.specs.openapi.checks import is_unexpected_http_status_case

from authsvc.domain.passwords import USERNAME_MAX_LENGTH, normalize_username
from authsvc.errors import InvalidRequest

REGISTER = "POST /v1/users"
OAUTH_TOKEN = "POST /oauth/token"
CHANGE_PASSWORD = "POST /v1/auth/password"
SET_PASSWORD = "PUT /v1/admin/users/{user_id}/password"
# The operations where positive_data_acceptance takes a 400, for this module's check to judge.
JUDGED = (REGISTER, OAUTH_TOKEN, CHANGE_PASSWORD, SET_PASSWORD)


def _error(response: Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, str) else None


def breaks_only_the_normalised_username_rules(username: object) -> bool:
    """Whether a username the schema allows (1 to 64 characters as sent) is refused for its
    normalised form, which no JSON Schema keyword can describe."""
    if not isinstance(username, str) or not 1 <= len(username) <= USERNAME_MAX_LENGTH:
        return False
    try:
        normalize_username(username)
    except InvalidRequest:
        return True
    return False


def refused_for_what_no_schema_says(case: Case[Any], response: Response) -> bool:
    error = _error(response)
    if case.operation.label == OAUTH_TOKEN:
        # An unknown refresh token or wrong credentials, or a DPoP header that is no proof
        # of this request; never a malformed request.
        return error in ("invalid_grant", "invalid_dpop_proof")
    if error == "weak_password":
        return True
    if case.operation.label in (CHANGE_PASSWORD, SET_PASSWORD):
        return False  # the password policy is all a schema-valid body may break there
    body = case.body if isinstance(case.body, dict) else {}
    return error == "invalid_request" and breaks_only_the_normalised_username_rules(
        body.get("username")
    )


@schemathesis.check
def schema_valid_requests_are_refused_only_for_what_no_schema_says(
    ctx: CheckContext, response: Response, case: Case[Any]
) -> bool | None:
    if case.operation.label not in JUDGED or response.status_code != 400:
        return None
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return None
    if is_unexpected_http_status_case(case) or refused_for_what_no_schema_says(case, response):
        return None
    raise RejectedPositiveData(
        operation=case.operation.label,
        message=(
            "Valid data should have been accepted\n"
            "A 400 here is only for the password policy, a username's normalised form or "
            "unknown credentials (see tests/schemathesis_hooks.py)"
        ),
        status_code=response.status_code,
        allowed_statuses=["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"],
    )
