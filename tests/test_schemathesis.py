"""schemathesis against a real ``authsvc serve``: the served /openapi.json says what it does.

``st run --checks all`` with a fixed seed and a bounded number of examples per operation, as
a user would run it: every phase (the document's examples, its boundaries, fuzzing and
stateful sequences) and every check, so a 5xx, a response off the document, a request the
document allows that the server refuses, or one it forbids that the server takes, fails here.
It logs in for the Bearer endpoints (again after each logout) and presents an introspection
client's and an operator client's Basic credentials, so those answer from their real paths,
not with 401s.

Two settings widen schemathesis's defaults, each for what the document cannot say in JSON
Schema and says in words: 413 counts as refusing a schema-violating request (a body over
AUTHSVC_MAX_BODY_SIZE), and a 400 to a schema-valid registration or token request is judged
by tests/schemathesis_hooks.py, which lets through only the password policy, a username's
normalised form and unknown credentials.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis.asyncio
from contract import DOCUMENT, HTTP_METHODS
from servers import TEST_PASSWORD, Servers

pytestmark = pytest.mark.process

SEED = 20_261_203
MAX_EXAMPLES = 25  # per operation and phase: the whole run takes about 15 s on two cores
RUN_TIMEOUT = 300
HOOKS = Path(__file__).with_name("schemathesis_hooks.py")
USERNAME = "alice"
INTROSPECTION_CLIENT = ("gateway", "gateway-secret")
ADMIN_CLIENT = ("ops", "ops-secret")
# Every operation reachable on every request: nothing here may answer 429.
GENEROUS = "1000000/1"

CONFIG = f"""\
hooks = "{HOOKS}"
color = false

[generation]
database = "none"

# Not missing_auth: POST /v1/auth/refresh answers its made-up refresh tokens 401 (the
# stateful phase rotates real ones, through the document's links), which it takes for that.
[warnings]
fail-on = ["unused_openapi_auth", "rate_limited"]

[checks.negative_data_rejection]
expected-statuses = [
    "400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx",
]

[auth.openapi.introspectionClient]
username = "{INTROSPECTION_CLIENT[0]}"
password = "{INTROSPECTION_CLIENT[1]}"

[auth.openapi.adminClient]
username = "{ADMIN_CLIENT[0]}"
password = "{ADMIN_CLIENT[1]}"

[auth.dynamic.openapi.bearer]
path = "/v1/auth/login"
payload = {{ username = "{USERNAME}", password = "{TEST_PASSWORD}" }}
extract_selector = "/access_token"

[[operations]]
include-name = [
    "POST /v1/users", "POST /oauth/token", "POST /v1/auth/password",
    "PUT /v1/admin/users/{{user_id}}/password",
]
checks.positive_data_acceptance.expected-statuses = [
    "2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx",
]
"""


def run_schemathesis(
    base_url: str, workdir: Path, *, kept_user_id: str
) -> subprocess.CompletedProcess[str]:
    """``st run`` on ``base_url``/openapi.json; its files (none by default) stay in ``workdir``."""
    config = workdir / "schemathesis.toml"
    config.write_text(CONFIG)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEMATHESIS_")}
    env["AUTHSVC_TEST_KEPT_USER_ID"] = kept_user_id  # see schemathesis_hooks.before_call
    return subprocess.run(
        [
            *(sys.executable, "-m", "schemathesis.cli"),
            *("--config-file", str(config)),
            *("run", f"{base_url}/openapi.json"),
            *("--checks", "all"),
            *("--seed", str(SEED)),
            *("--max-examples", str(MAX_EXAMPLES)),
            *("--workers", "1"),
            *("--request-timeout", "10"),
        ],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )


def readable(output: str, width: int = 400) -> str:
    """The run's report with its longest lines (the curl of a huge body) cut."""
    return "\n".join(
        line if len(line) <= width else f"{line[:width]}... ({len(line)} characters)"
        for line in output.splitlines()
    )


def test_schemathesis_finds_the_server_as_the_document_says(
    servers: Servers, tmp_path: Path, redis_url: str, redis_client: redis.asyncio.Redis
) -> None:
    server = servers.start(
        tmp_path / "authsvc.log",
        {
            "AUTHSVC_REDIS_URL": redis_url,
            "AUTHSVC_INTROSPECTION_CLIENTS": ":".join(INTROSPECTION_CLIENT),
            "AUTHSVC_ADMIN_CLIENTS": ":".join(ADMIN_CLIENT),
            "AUTHSVC_PASSWORD_GRANT": "true",
            "AUTHSVC_LOGIN_RATE_LIMIT": GENEROUS,
            "AUTHSVC_LOGIN_FAILURE_LIMIT": GENEROUS,
            "AUTHSVC_REGISTRATION_RATE_LIMIT": GENEROUS,
            "AUTHSVC_REFRESH_RATE_LIMIT": GENEROUS,
            "AUTHSVC_CLIENT_AUTH_FAILURE_LIMIT": GENEROUS,
        },
    )
    registered = server.register(USERNAME)
    assert registered.status == 201

    result = run_schemathesis(server.base_url, tmp_path, kept_user_id=registered.body["user_id"])

    report = readable(result.stdout + result.stderr)
    assert result.returncode == 0, f"schemathesis found a mismatch:\n{report}"
    # Every operation of the document but GET /openapi.json: schemathesis leaves out the one
    # that serves the document it runs on.
    operations = sum(
        method in HTTP_METHODS for item in DOCUMENT["paths"].values() for method in item
    )
    assert f"Tested: {operations - 1}\n" in report, report
