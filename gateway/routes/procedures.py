"""The procedure catalogue: search (keyword, category, municipality, life event) and one procedure."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from gateway.api import Operation, query_message, unary
from gateway.backend import backend

try:
    from onestop.application.v1 import application_pb2 as pb
    from onestop.application.v1 import application_pb2_grpc as pb_grpc
except ImportError:  # the application area's stubs are not generated yet
    pb = pb_grpc = None


def _stub(request: Request):
    return backend(request).stub(pb_grpc.ApplicationServiceStub)


async def search(request: Request) -> Response:
    return await unary(request, _stub(request).SearchProcedures, query_message(request, pb.SearchProceduresRequest))


async def get(request: Request) -> Response:
    return await unary(request, _stub(request).GetProcedure, query_message(request, pb.GetProcedureRequest))


def operations() -> list[Operation]:
    if pb is None:
        return []
    tag = "procedures"
    return [
        Operation("GET", "/v1/procedures", search,
                  "Search procedures by keyword (width and kana insensitive), category, municipality, life event",
                  "searchProcedures", tag, pb.SearchProceduresRequest, pb.SearchProceduresResponse,
                  body="none", public=True, errors=(400, 404, 500, 503, 504)),
        Operation("GET", "/v1/procedures/{procedure_code}", get,
                  "One procedure with its form schema and attachment slots", "getProcedure", tag,
                  pb.GetProcedureRequest, pb.GetProcedureResponse, body="none", public=True,
                  errors=(400, 404, 500, 503, 504)),
    ]
