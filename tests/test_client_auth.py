"""authsvc.http.client_auth on its own: the Basic header, form-urldecoding, the match."""

from __future__ import annotations

import base64

import pytest

from authsvc.errors import InvalidClient
from authsvc.http.client_auth import decode_basic, match_client

CLIENTS = (("gateway", "s3cret"), ("gw-client_1.x~y", "gw-secret_1.2~3"), ("other", "pw"))


def header(raw: bytes, scheme: str = "Basic") -> str:
    return f"{scheme} {base64.b64encode(raw).decode()}"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"gateway:s3cret", ("gateway", "s3cret")),
        (b"gw%2Dclient:gw%2Dsecret%2D123", ("gw-client", "gw-secret-123")),
        (b"a+b:c%2Bd+e", ("a b", "c+d e")),
        (b"id:se:cr:et", ("id", "se:cr:et")),  # only the first colon splits
        (b"id%3Ax:%3A", ("id:x", ":")),
        (b"%C3%A9t%C3%A9:caf\xc3\xa9", ("\u00e9t\u00e9", "caf\u00e9")),
        (b"id:", ("id", "")),
        (b"id:100%", ("id", "100%")),  # a % that escapes nothing stays
    ],
)
def test_the_id_and_secret_are_form_urldecoded(raw: bytes, expected: tuple[str, str]) -> None:
    assert decode_basic(header(raw)) == expected


def test_the_scheme_is_case_insensitive() -> None:
    assert decode_basic(header(b"a:b", "basic")) == ("a", "b")
    assert decode_basic(header(b"a:b", "BASIC")) == ("a", "b")


@pytest.mark.parametrize(
    "value",
    [
        "",
        "Basic",
        "Basic ",
        "Basic !!",
        "Basic Z2F0ZXdheQ",  # bad padding
        header(b"no colon"),
        header(b"a:b", "Bearer"),
        header(b"id:\xff"),  # not UTF-8
        header(b"id:%FF"),  # not UTF-8 once decoded
        "Basic " + "\u00e9",
    ],
)
def test_a_malformed_header_is_an_invalid_client(value: str) -> None:
    with pytest.raises(InvalidClient):
        decode_basic(value)


def test_the_matched_client_id_is_returned() -> None:
    assert match_client("gateway", "s3cret", CLIENTS) == "gateway"
    assert match_client("gw-client_1.x~y", "gw-secret_1.2~3", CLIENTS) == "gw-client_1.x~y"
    assert match_client("other", "pw", CLIENTS) == "other"


@pytest.mark.parametrize(
    ("client_id", "secret"),
    [
        ("gateway", "wrong"),
        ("gateway", "pw"),  # another client's secret
        ("nobody", "s3cret"),
        ("gateway", "s3cre"),
        ("gateway", "s3cret "),
        ("", ""),
    ],
)
def test_anything_else_is_an_invalid_client(client_id: str, secret: str) -> None:
    with pytest.raises(InvalidClient):
        match_client(client_id, secret, CLIENTS)


def test_no_configured_client_refuses_everyone() -> None:
    with pytest.raises(InvalidClient):
        match_client("gateway", "s3cret", ())
