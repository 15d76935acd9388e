"""The shared core: errors in the contract's shape, limits, health, and the OpenAPI document."""

from __future__ import annotations

from perks.core.openapi import undocumented_routes


async def test_healthz_and_readyz(api):
    assert await api.ok("GET", "/healthz", None) == {"status": "ok"}
    assert await api.ok("GET", "/readyz", None) == {"status": "ok"}


async def test_unknown_path_is_404_in_contract_shape(api):
    status, body = await api.call("GET", "/api/v1/nothing-here")
    assert status == 404
    assert body["error"]["code"] == "not_found"
    assert set(body["error"]) == {"code", "message", "details"}


async def test_wrong_method_is_405(api):
    status, body = await api.call("DELETE", "/healthz")
    assert status == 405
    assert body["error"]["code"] == "method_not_allowed"


async def test_every_response_carries_a_request_id(client):
    async with client.get("/healthz", headers={"X-Request-ID": "abc-123"}) as response:
        assert response.headers["X-Request-ID"] == "abc-123"
    async with client.get("/nowhere", headers={"X-Request-ID": "bad id with spaces"}) as response:
        assert response.headers["X-Request-ID"] != "bad id with spaces"
        assert len(response.headers["X-Request-ID"]) == 16


async def test_malformed_json_is_400(api):
    status, body = await api.call(
        "POST", "/api/v1/auth/token", data=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert status == 400
    assert body["error"]["code"] == "bad_request"
    assert body["error"]["details"]["fields"] == {"body": "malformed JSON"}


async def test_json_that_is_not_an_object_is_400(api):
    status, body = await api.call("POST", "/api/v1/auth/token", json=[1, 2])
    assert status == 400
    assert body["error"]["details"]["fields"] == {"body": "must be a JSON object"}


async def test_too_large_body_is_413(api):
    status, body = await api.call("POST", "/api/v1/auth/token", data=b"x" * (65 * 1024))
    assert status == 413
    assert body["error"]["code"] == "payload_too_large"


async def test_metrics_are_prometheus_text(client):
    await client.get("/healthz")
    async with client.get("/metrics") as response:
        assert response.status == 200
        text = await response.text()
    assert 'perks_http_requests_total{method="GET",route="/healthz",status="200"}' in text


async def test_openapi_documents_exactly_the_served_routes(client, api):
    assert undocumented_routes(client.app) == []
    document = await api.ok("GET", "/api/openapi.json", None)
    assert document["openapi"].startswith("3.1")
    served = {
        (route.method.lower(), route.resource.canonical)
        for route in client.app.router.routes()
        if route.method != "HEAD" and route.resource is not None and not route.resource.canonical.startswith("/static")
        and route.resource.__class__.__name__ != "StaticResource"
    }
    documented = {(method, path) for path, ops in document["paths"].items() for method in ops}
    assert served == documented
    for path, ops in document["paths"].items():
        for method, op in ops.items():
            assert op["summary"], (method, path)
            assert op["responses"], (method, path)


async def test_api_docs_page_renders(client):
    async with client.get("/api/docs") as response:
        assert response.status == 200
        text = await response.text()
    assert "/api/v1/auth/token" in text
