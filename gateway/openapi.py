"""The OpenAPI 3.1 document, built from the same `Operation` list the routes come from.

Schemas are derived from the protobuf descriptors with the protobuf JSON mapping, so the document
says exactly what `json_format` reads and writes. Every error response is a `google.rpc.Status`.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from gateway.api import Operation, query_fields

STATUS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "google.rpc.Status: the gRPC code, a message, and details (ErrorInfo with the reason; "
                   "BadRequest with fieldViolations naming the fields at fault).",
    "required": ["code", "message", "details"],
    "properties": {
        "code": {"type": "integer", "description": "google.rpc.Code"},
        "message": {"type": "string"},
        "details": {"type": "array", "items": {
            "type": "object",
            "required": ["@type"],
            "properties": {
                "@type": {"type": "string", "examples": ["type.googleapis.com/google.rpc.ErrorInfo"]},
                "reason": {"type": "string", "description": "UPPER_SNAKE reason (ErrorInfo)"},
                "domain": {"type": "string"},
                "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
                "fieldViolations": {"type": "array", "items": {
                    "type": "object",
                    "properties": {"field": {"type": "string"}, "description": {"type": "string"}},
                }},
            },
            "additionalProperties": True,
        }},
    },
}

HTTP_REASONS = {
    400: "Invalid argument, failed precondition or out of range (or malformed JSON)",
    401: "Not signed in, or the token is invalid or expired",
    403: "The caller may not do this",
    404: "Not found (or not the caller's)",
    409: "Conflict: already exists, or a concurrent change (re-read and retry)",
    413: "The request body is over the size limit",
    415: "Unsupported media type, or the content does not match its declared type",
    422: "The JSON or form does not have the expected shape",
    429: "Too many requests or a quota is exhausted",
    499: "The client closed the request",
    500: "Internal error (quote the X-Request-Id)",
    501: "Not implemented",
    503: "The server is unavailable; retry with the same request id",
    504: "The server did not answer in time; retry with the same request id",
}

_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?s$"},
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array", "items": {}},
    "google.protobuf.Empty": {"type": "object"},
    "google.protobuf.StringValue": {"type": ["string", "null"]},
    "google.protobuf.BoolValue": {"type": ["boolean", "null"]},
    "google.protobuf.Int32Value": {"type": ["integer", "null"]},
    "google.protobuf.Int64Value": {"type": ["string", "null"], "format": "int64"},
    "google.protobuf.DoubleValue": {"type": ["number", "null"]},
    "google.protobuf.FieldMask": {"type": "string"},
}

# Standard or URL-safe base64, padded or not (what json_format accepts).
BASE64 = "^(?:[A-Za-z0-9+/_-]{4})*(?:[A-Za-z0-9+/_-]{2}(?:==)?|[A-Za-z0-9+/_-]{3}=?)?$"

_INT64 = {FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64, FieldDescriptor.TYPE_UINT64,
          FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED64}
_INT32 = {FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_UINT32,
          FieldDescriptor.TYPE_FIXED32, FieldDescriptor.TYPE_SFIXED32}


class _Schemas:
    def __init__(self) -> None:
        self.components: dict[str, Any] = {"google.rpc.Status": STATUS_SCHEMA}

    def ref(self, descriptor: Descriptor) -> dict[str, Any]:
        name = descriptor.full_name
        if name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[name])
        if name not in self.components:
            self.components[name] = {}  # placeholder first: recursive messages terminate
            self.components[name] = self._message(descriptor)
        return {"$ref": f"#/components/schemas/{name}"}

    def _message(self, descriptor: Descriptor, *, leave_out: tuple[str, ...] = ()) -> dict[str, Any]:
        properties = {f.json_name: self.field(f) for f in descriptor.fields if f.name not in leave_out}
        return {"type": "object", "properties": properties, "additionalProperties": False}

    def body(self, descriptor: Descriptor, path_params: list[str]) -> dict[str, Any]:
        """A request body: the message less the fields the path already carries."""
        if not any(name in descriptor.fields_by_name for name in path_params):
            return self.ref(descriptor)
        return self._message(descriptor, leave_out=tuple(path_params))

    def field(self, f: FieldDescriptor) -> dict[str, Any]:
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            value = f.message_type.fields_by_name["value"]
            return {"type": "object", "additionalProperties": self._single(value)}
        single = self._single(f)
        if f.is_repeated:
            return {"type": "array", "items": single}
        return single

    def _single(self, f: FieldDescriptor) -> dict[str, Any]:
        if f.type == FieldDescriptor.TYPE_MESSAGE:
            return self.ref(f.message_type)
        if f.type == FieldDescriptor.TYPE_ENUM:
            return {"type": "string", "enum": [v.name for v in f.enum_type.values]}
        if f.type == FieldDescriptor.TYPE_BOOL:
            return {"type": "boolean"}
        if f.type == FieldDescriptor.TYPE_STRING:
            return {"type": "string"}
        if f.type == FieldDescriptor.TYPE_BYTES:
            return {"type": "string", "contentEncoding": "base64", "pattern": BASE64}
        if f.type in _INT64:
            # The protobuf JSON mapping writes 64-bit integers as strings and reads either form.
            return {"type": ["string", "integer"], "format": "int64", "pattern": "^-?[0-9]{1,19}$",
                    "minimum": -(2**63), "maximum": 2**63 - 1}
        if f.type in _INT32:
            unsigned = f.type in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32) \
                or f.name == "page_size"  # every list RPC refuses a negative page size
            return {"type": "integer", "format": "int32", "minimum": 0 if unsigned else -(2**31),
                    "maximum": 2**32 - 1 if unsigned else 2**31 - 1}
        return {"type": "number"}


def _parameter(f: FieldDescriptor, schemas: _Schemas) -> dict[str, Any]:
    return {"name": f.json_name, "in": "query", "required": False, "schema": schemas.field(f)}


def _operation(op: Operation, schemas: _Schemas) -> dict[str, Any]:
    doc: dict[str, Any] = {"operationId": op.operation_id, "summary": op.summary, "tags": [op.tag]}
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}} for name in op.path_params
    ]
    parameters.append({"name": "X-Request-Id", "in": "header", "required": False, "schema": {"type": "string"},
                       "description": "Echoed in the response; a new one is made when absent"})
    if op.method in ("POST", "PATCH", "PUT", "DELETE"):
        parameters.append({"name": "Idempotency-Key", "in": "header", "required": False,
                           "schema": {"type": "string"},
                           "description": "request_id of the change (else requestId in the body, else X-Request-Id);"
                                          " a retry with the same key gets the first outcome"})
    if op.method == "GET" and op.request is not None:
        parameters += [_parameter(f, schemas) for f in query_fields(op.request) if f.name not in op.path_params]
    if op.produces == "text/event-stream":
        parameters.append({"name": "Last-Event-ID", "in": "header", "required": False,
                           "schema": {"type": "string"}, "description": "Resume after this event"})
    doc["parameters"] = parameters
    if op.body == "json" and op.request is not None and op.method != "GET":
        doc["requestBody"] = {"required": False, "content": {"application/json": {
            "schema": schemas.body(op.request.DESCRIPTOR, op.path_params)}}}
    elif op.body == "multipart":
        properties = {name: {"type": "string", "description": text} for name, text in op.multipart_fields.items()}
        properties["file"] = {"type": "string", "contentMediaType": "application/octet-stream",
                              "description": "The file; its part Content-Type is the declared type"}
        doc["requestBody"] = {"required": True, "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": ["file"], "properties": properties}}}}
    responses: dict[str, Any] = {}
    if op.produces == "text/event-stream":
        ok: dict[str, Any] = {"description": "Server-Sent Events: `id` is the cursor to resume from, `event` is"
                                             " `notice` (data: the JSON below) or `error` (data: a google.rpc.Status)"}
        media: dict[str, Any] = {"schema": {"type": "string"}}
        if op.response is not None:
            # OpenAPI 3.1 has no item schema for event streams (3.2's itemSchema): an extension says it.
            media["x-event-data"] = schemas.ref(op.response.DESCRIPTOR)
        ok["content"] = {"text/event-stream": media}
        responses["200"] = ok
    elif op.response is not None:
        responses["200"] = {"description": "OK",
                            "content": {"application/json": {"schema": schemas.ref(op.response.DESCRIPTOR)}}}
    else:
        responses["200"] = {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}}
    # What the gateway itself may answer, whatever the RPC: a body it cannot take, no token, the
    # server unreachable or slow, a bug.
    errors = set(op.errors) | {500, 503, 504}
    if op.body in ("json", "multipart") and op.method != "GET":
        errors |= {400, 413, 415, 422}
    if op.method == "GET" and op.request is not None:
        errors.add(400)  # a query parameter that is unknown or not of its type
    errors.add(401)  # resident routes without a token; any route with a bad one
    for status in sorted(errors):
        responses[str(status)] = {"description": HTTP_REASONS.get(status, "Error"), "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/google.rpc.Status"}}}}
    doc["responses"] = responses
    if not op.public:
        doc["security"] = [{"bearer": []}]
    return doc


def document(operations: list[Operation]) -> dict[str, Any]:
    schemas = _Schemas()
    paths: dict[str, Any] = {}
    for op in operations:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op, schemas)
    return {
        "openapi": "3.1.0",
        "info": {"title": "One-stop card gateway", "version": "1",
                 "description": "JSON and multipart over the one-stop card gRPC services, for smartphone apps."},
        "paths": paths,
        "components": {
            "schemas": schemas.components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "access token from POST /v1/auth/sign-in"}},
        },
    }
