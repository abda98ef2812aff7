"""The OpenAPI document matches the routes; gRPC codes map to HTTP exactly as grpc-gateway's."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from starlette.routing import Route

from gateway.app import create_app
from gateway.errors import http_status_for, status_response


async def test_every_route_is_documented_and_every_documented_path_is_a_route(gateway):
    document = (await gateway.client.get("/openapi.json")).json()
    assert document["openapi"] == "3.1.0"
    routes = {(route.path, method.lower()) for route in gateway.app.routes if isinstance(route, Route)
              for method in route.methods if method != "HEAD"}
    documented = {(path, method) for path, item in document["paths"].items() for method in item}
    assert routes == documented
    assert ("/v1/auth/sign-in", "post") in routes
    assert ("/v1/applications/{application_id}/attachments", "post") in routes


async def test_every_operation_has_schemas_and_status_shaped_errors(gateway):
    document = (await gateway.client.get("/openapi.json")).json()
    schemas = document["components"]["schemas"]
    for path, item in document["paths"].items():
        for method, operation in item.items():
            assert operation["operationId"] and operation["summary"], (path, method)
            assert "200" in operation["responses"]
            errors = [code for code in operation["responses"] if code != "200"]
            assert errors, (path, method)
            for code in errors:
                schema = operation["responses"][code]["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/google.rpc.Status"}
            for name in [p[1:-1] for p in path.split("/") if p.startswith("{")]:
                assert any(p["in"] == "path" and p["name"] == name for p in operation["parameters"])
    refs = set()

    def collect(node):
        if isinstance(node, dict):
            if "$ref" in node:
                refs.add(node["$ref"].rsplit("/", 1)[-1])
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    collect(document)
    assert refs <= set(schemas), refs - set(schemas)
    sign_in = document["paths"]["/v1/auth/sign-in"]["post"]
    body = schemas[sign_in["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]]
    assert body["properties"]["certificate"]["contentEncoding"] == "base64"
    upload = document["paths"]["/v1/applications/{application_id}/attachments"]["post"]
    assert {"413", "415"} <= set(upload["responses"])
    assert "multipart/form-data" in upload["requestBody"]["content"]


@pytest.mark.parametrize("code,http", [
    (grpc.StatusCode.INVALID_ARGUMENT, 400), (grpc.StatusCode.FAILED_PRECONDITION, 400),
    (grpc.StatusCode.OUT_OF_RANGE, 400), (grpc.StatusCode.UNAUTHENTICATED, 401),
    (grpc.StatusCode.PERMISSION_DENIED, 403), (grpc.StatusCode.NOT_FOUND, 404),
    (grpc.StatusCode.ALREADY_EXISTS, 409), (grpc.StatusCode.ABORTED, 409),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, 429), (grpc.StatusCode.CANCELLED, 499),
    (grpc.StatusCode.UNAVAILABLE, 503), (grpc.StatusCode.DEADLINE_EXCEEDED, 504),
    (grpc.StatusCode.UNIMPLEMENTED, 501), (grpc.StatusCode.INTERNAL, 500), (grpc.StatusCode.UNKNOWN, 500),
    (grpc.StatusCode.DATA_LOSS, 500),
])
def test_grpc_codes_map_like_grpc_gateway(code, http):
    assert http_status_for(code) == http


def test_size_and_type_reasons_override_the_code():
    assert http_status_for(grpc.StatusCode.RESOURCE_EXHAUSTED, "ATTACHMENT_TOO_LARGE") == 413
    assert http_status_for(grpc.StatusCode.RESOURCE_EXHAUSTED, "APPLICATION_TOO_LARGE") == 413
    assert http_status_for(grpc.StatusCode.INVALID_ARGUMENT, "CONTENT_TYPE_MISMATCH") == 415
    assert http_status_for(grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED") == 429


def test_the_body_is_the_google_rpc_status_with_its_details():
    status = status_pb2.Status(code=3, message="form.children[0].birth_date: required")
    info, bad = any_pb2.Any(), any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason="FORM_INVALID", domain="onestop.jp"))
    bad.Pack(error_details_pb2.BadRequest(field_violations=[
        error_details_pb2.BadRequest.FieldViolation(field="form.children[0].birth_date", description="required")]))
    status.details.extend([info, bad])
    import orjson

    body = orjson.loads(status_response(status, 400).body)
    assert body == {
        "code": 3, "message": "form.children[0].birth_date: required",
        "details": [
            {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "FORM_INVALID", "domain": "onestop.jp"},
            {"@type": "type.googleapis.com/google.rpc.BadRequest",
             "fieldViolations": [{"field": "form.children[0].birth_date", "description": "required"}]},
        ],
    }


async def test_an_unreachable_server_is_503_in_the_same_shape(platform, tmp_path):
    import httpx

    app = create_app(platform.settings, grpc_target="127.0.0.1:1")
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
            reply = await client.post("/v1/auth/challenge", json={})
    assert reply.status_code == 503
    assert reply.json()["code"] == 14


async def test_the_document_is_valid_openapi_3_1(gateway):
    from openapi_spec_validator import validate

    document = (await gateway.client.get("/openapi.json")).json()
    validate(document)  # raises with the path of the first violation


async def test_fuzzer_findings_stay_fixed(gateway, resident):
    """Cases a schemathesis run found: each was a 500 or a wrong Allow header."""
    _, card = resident
    async with gateway.phone(card) as phone:
        await phone.sign_in()
        headers = phone._headers()
        for path in ("/v1/applications", "/v1/notices", "/v1/applications/x/evidence"):
            reply = await gateway.client.get(path, params={"pageSize": "2147483648"}, headers=headers)
            assert reply.status_code == 400, (path, reply.text)
            assert reply.json()["details"][1]["fieldViolations"][0]["field"] == "pageSize"
        body = (b"--b\r\nContent-Disposition: form-data; name=\"\xe5\x90\x8d\t\xf0\x9a\xa8\xbf\"\r\n\r\nnull\r\n"
                b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"\xe5\x86\x99\xe7\x9c\x9f.jpg\"\r\n"
                b"Content-Type: image/jpeg\r\n\r\n\xff\xd8\xff\r\n--b--\r\n")
        reply = await gateway.client.post("/v1/applications/x/attachments", content=body,
                                          headers={**headers, "content-type": "multipart/form-data; boundary=b"})
        assert reply.status_code == 422  # slot and size missing, named
        assert {v["field"] for v in reply.json()["details"][1]["fieldViolations"]} == {"slot", "size"}
    options = await gateway.client.options("/v1/applications/x")
    assert options.status_code == 405
    assert set(options.headers["allow"].replace(" ", "").split(",")) == {"GET", "HEAD", "PATCH"}
