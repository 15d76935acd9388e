"""The OpenAPI document says what the service does: every status a route raises, path parameters as they are
validated, distinct schemas for distinct models, and patterns that are the validators' own."""

from __future__ import annotations

import inspect
import re
from typing import Any

import pytest
from pydantic import ValidationError

from perks.app import create_app
from perks.clients.fields import phone_number
from perks.core.config import Config
from perks.core.errors import MESSAGES
from perks.core.fields import CODE_PATTERN, multi_line, single_line
from perks.core.openapi import STATUS_OF, build_openapi, is_page, served_routes
from perks.core.endpoint import spec_of

# What a handler's own code shows it may answer (the services' refusals are declared in `errors=`).
RAISES = {
    r"\bNotFound\(|\bparse_id\((?!principal_of)|\bparse_code\(|\bensure_merchant_scope\(": 404,
    r"\bConflict\(": 409,
    r"\bBadRequest\(|\bvalidate\(|\bcheck_key\(": 400,
    r"\bTooManyAttempts\(": 429,
    r"\bDatabaseUnavailable\(": 503,
    r"\bUnauthorized\(": 401,
    r"\bForbidden\(": 403,
}


@pytest.fixture(scope="module")
def app() -> Any:
    config = Config.from_env({"DATABASE_URL": "postgresql://unused/unused", "PERKS_SECRET": "s" * 32})
    return create_app(config)


@pytest.fixture(scope="module")
def document(app) -> dict[str, Any]:
    return build_openapi(app)


def operations(app, document):
    """``(method, path, spec, handler, documented operation)`` of every documented route."""
    for method, path, handler in served_routes(app):
        spec = spec_of(handler)
        if spec is not None:
            yield method, path, spec, handler, document["paths"][path][method.lower()]


def test_every_status_a_handler_raises_is_documented(app, document):
    missing = []
    for method, path, spec, handler, op in operations(app, document):
        if is_page(path, spec):
            continue
        source = inspect.getsource(inspect.unwrap(handler))
        for pattern, status in RAISES.items():
            if re.search(pattern, source) and str(status) not in op["responses"]:
                missing.append((method, path, status))
        for code in re.findall(r"\bApiError\(\s*\"([a-z_]+)\"", source):
            if str(STATUS_OF[code]) not in op["responses"]:
                missing.append((method, path, code))
    assert not missing


def test_every_operation_documents_the_edge_statuses(app, document):
    wrong = []
    for method, path, spec, _, op in operations(app, document):
        if is_page(path, spec):
            continue
        expected = {"400"}  # NUL or invalid UTF-8 in any parameter or header
        if spec.body is not None:
            expected |= {"413", "415"}
        elif spec.consumes != "application/json":
            expected.add("413")
        if spec.roles:
            expected |= {"401", "403"}
        if spec.uses_database:
            expected.add("503")
        if re.search(r"{\w+}", path) and not re.search(r"/{(month|source)}$", path):
            expected.add("404")  # a path parameter that cannot be an id or a code is 404 (a month, a source: 400)
        if not expected <= set(op["responses"]):
            wrong.append((method, path, sorted(expected - set(op["responses"]))))
        for status, response in op["responses"].items():
            if int(status) >= 400:
                assert response["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    assert not wrong


def test_415_is_a_contract_code():
    assert STATUS_OF["unsupported_media_type"] == 415
    assert "unsupported_media_type" in MESSAGES


def test_path_parameters_are_documented_with_their_real_values(app, document):
    for _, path, _, _, op in operations(app, document):
        for param in (p for p in op.get("parameters", []) if p["in"] == "path"):
            name, schema = param["name"], param["schema"]
            if name in ("code", "tier", "perk", "source"):
                assert schema["pattern"] == CODE_PATTERN, (path, name)
            elif name.endswith("_id"):
                assert schema["format"] == "uuid", (path, name)
            else:
                assert name == "month" and schema["pattern"], (path, name)


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    return document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]] if "$ref" in schema else schema


def test_same_named_models_keep_their_own_schemas(document):
    staff_view = document["paths"]["/api/v1/clients/{client_id}"]["get"]["responses"]["200"]
    client = _resolve(document, staff_view["content"]["application/json"]["schema"])
    assert {"name", "phone", "birthday"} <= set(client["properties"])
    redeemed = document["paths"]["/api/v1/merchant/redemptions"]["post"]["responses"]["201"]
    created = _resolve(document, redeemed["content"]["application/json"]["schema"])
    masked = _resolve(document, created["properties"]["client"])
    assert set(masked["properties"]) == {"display_name", "tier"}
    # Every reference resolves.
    text = repr(document)
    for name in set(re.findall(r"#/components/schemas/([^'\"]+)", text)):
        assert name in document["components"]["schemas"], name


SAMPLES = [
    "", " ", "\t", "a", " a ", "罗小升", "a\x00b", "a\nb", "a\tb", "a\rb", "x\x7f", "\u3000", "a\u3000", "\x1f",
    "+86 138 0000 0000", "(010) 1234-5678", "12", "1 2", "+", "++123", "12a3", "１２３", "-- 1 2 3",
]


@pytest.mark.parametrize(
    ("validator", "pattern_of"),
    [(single_line, "TierCreate.name"), (multi_line, "PerkCreate.description"), (phone_number, "ClientCreate.phone")],
)
def test_documented_patterns_are_the_validators_own(document, validator, pattern_of):
    model, field = pattern_of.split(".")
    prop = document["components"]["schemas"][model]["properties"][field]
    prop = next((option for option in prop.get("anyOf", [prop]) if option.get("type") == "string"), prop)
    pattern = re.compile(prop["pattern"])
    for sample in SAMPLES:
        try:
            validator(sample)
            accepted = True
        except (ValueError, ValidationError):
            accepted = False
        except Exception as exc:  # pydantic's PydanticCustomError
            accepted = type(exc).__name__ != "PydanticCustomError"
        assert accepted == bool(pattern.search(sample)), (validator.__name__, sample)
