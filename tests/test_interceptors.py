"""The pipeline on a bare server: error mapping, INTERNAL without leaks, rules, request ids."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc import aio

from server import authz
from server.errors import InvalidArgument
from server.interceptors import Pipeline
from tests.helpers import error_details


async def _boom(request, context):
    raise RuntimeError("secret 山田 花子 1234")


async def _bad(request, context):
    raise InvalidArgument.field("form.children[0].birth_date", "must be a past date")


async def _slow(request, context):
    await asyncio.Event().wait()  # never answers: only the caller's deadline ends this call
    return b"late"


async def _echo(request, context):
    return request


async def _no_resident(token):
    raise AssertionError("no tokens in these tests")


@pytest.fixture
async def bare():
    authz.register("test.Probe", {"Boom": authz.ANYONE, "Bad": authz.ANYONE, "Slow": authz.ANYONE,
                                  "Resident": authz.RESIDENT})
    handlers = {name: grpc.unary_unary_rpc_method_handler(fn) for name, fn in
                {"Boom": _boom, "Bad": _bad, "Slow": _slow, "Resident": _echo, "NoRule": _echo}.items()}
    server = aio.server(interceptors=[Pipeline(_no_resident)])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Probe", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = aio.insecure_channel(f"127.0.0.1:{port}")
    yield lambda name: channel.unary_unary(f"/test.Probe/{name}")
    await channel.close()
    await server.stop(0)


async def test_unexpected_error_is_internal_without_its_message(bare):
    with pytest.raises(aio.AioRpcError) as error:
        await bare("Boom")(b"", metadata=(("x-request-id", "req-7"),))
    assert error.value.code() == grpc.StatusCode.INTERNAL
    assert "山田" not in error.value.details() and "secret" not in error.value.details()
    assert "req-7" in error.value.details()
    assert ("x-request-id", "req-7") in tuple(error.value.trailing_metadata())


async def test_domain_error_carries_reason_and_field(bare):
    with pytest.raises(aio.AioRpcError) as error:
        await bare("Bad")(b"")
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_details(error.value) == ("INVALID_FIELD", ["form.children[0].birth_date"])


async def test_method_without_rule_is_refused(bare):
    with pytest.raises(aio.AioRpcError) as error:
        await bare("NoRule")(b"")
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_details(error.value)[0] == "NO_RULE"


async def test_rule_refuses_anonymous_caller(bare):
    with pytest.raises(aio.AioRpcError) as error:
        await bare("Resident")(b"")
    assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_deadline_is_honoured(bare):
    with pytest.raises(aio.AioRpcError) as error:
        await bare("Slow")(b"", timeout=0.2)
    assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


class _RecordingServer:
    """Stands in for aio.Server: records what the registrar hands it."""

    def __init__(self) -> None:
        self.generic: list = []
        self.registered: list = []

    def add_generic_rpc_handlers(self, handlers) -> None:
        self.generic.extend(handlers)

    def add_registered_method_handlers(self, service, handlers) -> None:
        self.registered.append(service)


def test_registrar_puts_every_method_in_one_table_and_none_in_registered_methods():
    from onestop.auth.v1 import auth_pb2, auth_pb2_grpc

    from server.interceptors import MethodTable, WrappingRegistrar

    server = _RecordingServer()
    registrar = WrappingRegistrar(server, Pipeline(_no_resident))
    auth_pb2_grpc.add_AuthServiceServicer_to_server(auth_pb2_grpc.AuthServiceServicer(), registrar)
    registrar.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "test.Other", {"Ping": grpc.unary_unary_rpc_method_handler(_echo)}),))

    # grpc.aio waits on one pending request per registered method on every call: none may be registered.
    assert server.registered == []
    assert len(server.generic) == 1 and isinstance(server.generic[0], MethodTable)
    service = auth_pb2.DESCRIPTOR.services_by_name["AuthService"]
    expected = {f"/{service.full_name}/{m.name}" for m in service.methods} | {"/test.Other/Ping"}
    assert set(registrar.methods) == expected

    class Details:
        method = "/test.Other/Ping"

    found = server.generic[0].service(Details())
    assert found is registrar.methods["/test.Other/Ping"]
    assert found.unary_unary is not _echo  # wrapped in the pipeline
    Details.method = "/test.Other/Missing"
    assert server.generic[0].service(Details()) is None


async def test_registered_services_are_served_through_the_pipeline():
    from onestop.auth.v1 import auth_pb2, auth_pb2_grpc

    from server.interceptors import WrappingRegistrar

    class Servicer(auth_pb2_grpc.AuthServiceServicer):
        async def WhoAmI(self, request, context):
            return auth_pb2.WhoAmIResponse(kind=auth_pb2.CALLER_KIND_ANONYMOUS, machine_id="seen")

    authz.register("onestop.auth.v1.AuthService", {"WhoAmI": authz.ANYONE})
    server = aio.server()
    auth_pb2_grpc.add_AuthServiceServicer_to_server(Servicer(), WrappingRegistrar(server, Pipeline(_no_resident)))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = auth_pb2_grpc.AuthServiceStub(channel).WhoAmI(auth_pb2.WhoAmIRequest(),
                                                                 metadata=(("x-request-id", "req-9"),))
            reply = await call
            assert reply.machine_id == "seen"
            assert ("x-request-id", "req-9") in tuple(await call.trailing_metadata())
    finally:
        await server.stop(0)


def test_registrar_leaves_health_and_reflection_untouched():
    from grpc_health.v1 import health, health_pb2_grpc

    from server.interceptors import WrappingRegistrar

    server = _RecordingServer()
    registrar = WrappingRegistrar(server, Pipeline(_no_resident))
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, registrar)
    assert server.registered == []
    check = registrar.methods["/grpc.health.v1.Health/Check"]
    assert check.unary_unary.__self__ is servicer  # the servicer's own method, no pipeline around it
