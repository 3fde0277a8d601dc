"""Checks of real responses against the OpenAPI document, ``authsvc/http/openapi.json``.

The document's schemas are JSON Schema 2020-12 (OpenAPI 3.1), so jsonschema validates
bodies and header values against them, with every ``$ref`` resolved in the document by
``referencing``. A response matches when the document lists its status for that operation,
every required header is there and valid, its content type is one the document gives, and
its body is valid against that content's schema (or empty where the document gives none).
"""

from __future__ import annotations

import importlib.resources
import json
from collections.abc import Mapping
from typing import Any

import jsonschema
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

DOCUMENT_BYTES = importlib.resources.files("authsvc.http").joinpath("openapi.json").read_bytes()
DOCUMENT: dict[str, Any] = json.loads(DOCUMENT_BYTES)
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}

_URI = "urn:authsvc:openapi"
_REGISTRY: Registry[Any] = Registry().with_resource(
    _URI, Resource.from_contents(DOCUMENT, default_specification=DRAFT202012)
)


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _node(pointer: str) -> Any:
    node: Any = DOCUMENT
    for token in pointer.split("/")[1:]:
        token = token.replace("~1", "/").replace("~0", "~")
        node = node[int(token)] if isinstance(node, list) else node[token]
    return node


def _follow(pointer: str) -> str:
    """The pointer of the object at ``pointer``, after its chain of ``$ref``s."""
    node = _node(pointer)
    while isinstance(node, Mapping) and "$ref" in node:
        pointer = node["$ref"].removeprefix("#")
        node = _node(pointer)
    return pointer


def _validator(schema_pointer: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(
        {"$ref": f"{_URI}#{schema_pointer}"},
        registry=_REGISTRY,
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
    )


def _validate(instance: Any, schema_pointer: str, what: str) -> None:
    error = jsonschema.exceptions.best_match(_validator(schema_pointer).iter_errors(instance))
    if error is not None:
        raise AssertionError(
            f"{what} does not match {schema_pointer}: {error.message}"
            f" at {'/'.join(map(str, error.absolute_path)) or 'the top'}\n{instance!r}"
        )


def _header_value(text: str, schema_pointer: str) -> Any:
    """A header's text as the document's simple-style schema reads it."""
    if _node(_follow(schema_pointer)).get("type") == "integer" and text.strip().isdigit():
        return int(text)
    return text


def _assert_response_object(pointer: str, response: Any, body: bytes, where: str) -> None:
    pointer = _follow(pointer)
    spec = _node(pointer)
    for name in spec.get("headers", {}):
        header_pointer = _follow(f"{pointer}/headers/{_escape(name)}")
        header = _node(header_pointer)
        value = response.headers.get(name)
        if value is None:
            assert not header.get("required"), f"{where}: required header {name} is missing"
            continue
        schema_pointer = f"{header_pointer}/schema"
        _validate(_header_value(value, schema_pointer), schema_pointer, f"{where}: header {name}")
    content = spec.get("content")
    if not content:
        assert body == b"", f"{where}: the document gives no body, the response has {body!r}"
        return
    media_type = response.content_type
    assert media_type in content, f"{where}: content type {media_type} is not in {list(content)}"
    if "schema" not in content[media_type]:
        return
    schema_pointer = f"{pointer}/content/{_escape(media_type)}/schema"
    is_json = media_type == "application/json" or media_type.endswith("+json")
    instance = json.loads(body) if is_json else body.decode("utf-8")
    _validate(instance, schema_pointer, f"{where}: body")


def operation_pointer(method: str, path_template: str) -> str:
    """The pointer of a documented operation; fails when the document has none."""
    item = DOCUMENT["paths"].get(path_template)
    assert item is not None, f"{path_template} is not a path of the document"
    assert method.lower() in item, f"{method} {path_template} is not in the document"
    return f"/paths/{_escape(path_template)}/{method.lower()}"


def request_body_allowed(method: str, path_template: str, body: Any) -> bool:
    """Whether the request-body schema of a documented operation (one media type) allows
    ``body``, a JSON value or a form as a dict of its parameters."""
    content = f"{operation_pointer(method, path_template)}/requestBody/content"
    (media_type,) = _node(content)
    return bool(_validator(f"{content}/{_escape(media_type)}/schema").is_valid(body))


def assert_matches_document(method: str, path_template: str, response: Any, body: bytes) -> None:
    """Assert that a response of ``method path_template`` is one the document describes.

    ``response`` is an aiohttp client response (status, headers, content_type); ``body``
    is what it carried, already read.
    """
    where = f"{method} {path_template} -> {response.status}"
    responses = f"{operation_pointer(method, path_template)}/responses"
    listed = _node(responses)
    for key in (str(response.status), f"{response.status // 100}XX"):
        if key in listed:
            _assert_response_object(f"{responses}/{key}", response, body, where)
            return
    raise AssertionError(f"{where}: the document lists only {sorted(listed)}\n{body!r}")


def assert_matches_any_path_response(response: Any, body: bytes) -> None:
    """Assert that a 404 or 405, which any path can answer, is as the document says."""
    where = f"{response.method} {response.url.path} -> {response.status}"
    listed = DOCUMENT["x-any-path-responses"]
    assert str(response.status) in listed, f"{where}: not an any-path response of the document"
    _assert_response_object(f"/x-any-path-responses/{response.status}", response, body, where)


async def assert_documented(response: Any, method: str, path_template: str, status: int) -> bytes:
    """Assert the status, then that the document describes the response; return the body."""
    body: bytes = await response.read()
    assert response.status == status, f"{method} {path_template}: {response.status} {body!r}"
    assert_matches_document(method, path_template, response, body)
    return body


def media_examples() -> list[tuple[str, Any, str]]:
    """(where, example, schema pointer) of every example the document gives a request body
    or a response."""
    found = []
    operations = [
        (f"/paths/{_escape(path)}/{method}", operation)
        for path, item in DOCUMENT["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    ]
    pointers = (
        [
            f"{pointer}/requestBody"
            for pointer, operation in operations
            if "requestBody" in operation
        ]
        + [
            f"{pointer}/responses/{status}"
            for pointer, operation in operations
            for status in operation["responses"]
        ]
        + [f"/components/responses/{name}" for name in DOCUMENT["components"]["responses"]]
    )
    for pointer in pointers:
        if "$ref" in _node(pointer):
            continue
        for media_type, media in _node(pointer).get("content", {}).items():
            media_pointer = f"{pointer}/content/{_escape(media_type)}"
            if "example" in media:
                found.append((media_pointer, media["example"], f"{media_pointer}/schema"))
            for name, example in media.get("examples", {}).items():
                found.append(
                    (f"{media_pointer}/{name}", example["value"], f"{media_pointer}/schema")
                )
    return found


def assert_valid(instance: Any, schema_pointer: str, what: str) -> None:
    """Assert that ``instance`` is valid against the document's schema at ``schema_pointer``."""
    _validate(instance, schema_pointer, what)
