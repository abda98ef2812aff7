"""Generated protobuf messages (hypothesis) sent to every RPC as every kind of caller, streams
included (a few messages each way, then the stream is closed or cut): never INTERNAL or UNKNOWN,
never a stack trace in the message."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future

import grpc
import pytest
from google.protobuf import descriptor as d
from google.protobuf import message_factory
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.crypto.machine import MachineIdentity
from server.testing import client_credentials, holder, run_platform
from tests.test_contract_guards import methods

TEXT = st.one_of(st.text(max_size=12), st.sampled_from(["", "131016", "999999", "../../etc", "' OR 1=1 --",
                                                         "ｱｲｳ", "\u0000", "x" * 300, "2026-02-30", "-1"]))
INTS = {
    d.FieldDescriptor.TYPE_INT32: st.integers(-2**31, 2**31 - 1),
    d.FieldDescriptor.TYPE_SINT32: st.integers(-2**31, 2**31 - 1),
    d.FieldDescriptor.TYPE_SFIXED32: st.integers(-2**31, 2**31 - 1),
    d.FieldDescriptor.TYPE_UINT32: st.integers(0, 2**32 - 1),
    d.FieldDescriptor.TYPE_FIXED32: st.integers(0, 2**32 - 1),
    d.FieldDescriptor.TYPE_INT64: st.integers(-2**63, 2**63 - 1),
    d.FieldDescriptor.TYPE_SINT64: st.integers(-2**63, 2**63 - 1),
    d.FieldDescriptor.TYPE_SFIXED64: st.integers(-2**63, 2**63 - 1),
    d.FieldDescriptor.TYPE_UINT64: st.integers(0, 2**64 - 1),
    d.FieldDescriptor.TYPE_FIXED64: st.integers(0, 2**64 - 1),
}


def _scalar(field: d.FieldDescriptor):
    if field.type in INTS:
        return st.one_of(st.sampled_from([0, 1, -1, 3, 1000]), INTS[field.type])
    if field.type in (d.FieldDescriptor.TYPE_DOUBLE, d.FieldDescriptor.TYPE_FLOAT):
        return st.floats(allow_nan=True, allow_infinity=True, width=32)
    if field.type == d.FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if field.type == d.FieldDescriptor.TYPE_STRING:
        return TEXT
    if field.type == d.FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    if field.type == d.FieldDescriptor.TYPE_ENUM:
        return st.sampled_from([v.number for v in field.enum_type.values] + [99])
    raise AssertionError(field.type)


@st.composite
def messages(draw, descriptor: d.Descriptor, depth: int = 0):
    message = message_factory.GetMessageClass(descriptor)()
    for field in descriptor.fields:
        if not draw(st.booleans()):
            continue
        is_map = field.message_type is not None and field.message_type.GetOptions().map_entry
        if is_map:
            key_field, value_field = field.message_type.fields_by_name["key"], field.message_type.fields_by_name["value"]
            for _ in range(draw(st.integers(0, 2))):
                key = draw(_scalar(key_field))
                if value_field.message_type is None:
                    getattr(message, field.name)[key] = draw(_scalar(value_field))
                elif depth < 2:
                    getattr(message, field.name)[key].CopyFrom(draw(messages(value_field.message_type, depth + 1)))
        elif field.message_type is not None:
            if depth >= 2:
                continue
            if field.is_repeated:
                for _ in range(draw(st.integers(0, 2))):
                    getattr(message, field.name).add().CopyFrom(draw(messages(field.message_type, depth + 1)))
            else:
                getattr(message, field.name).CopyFrom(draw(messages(field.message_type, depth + 1)))
        elif field.is_repeated:
            getattr(message, field.name).extend(draw(st.lists(_scalar(field), max_size=3)))
        else:
            setattr(message, field.name, draw(_scalar(field)))
    return message


UNARY = [(s, m) for s, m in methods() if not m.client_streaming and not m.server_streaming]
STREAMING = [(s, m) for s, m in methods() if m.client_streaming or m.server_streaming]
CALLERS = {
    "anonymous": None,
    "resident": None,
    "municipality": MachineIdentity("municipality", "131016", {}),
    "kiosk": MachineIdentity("kiosk", "k1", {"operator": "seven", "kind": "convenience_store"}),
    "partner": MachineIdentity("partner", "jcb", {}),
    "shop": MachineIdentity("shop", "shop1", {"lg": "131016"}),
    "operator": MachineIdentity("operator", "ops", {}),
}
# The caller each stream is for, drawn about half the time so that generated messages get past
# authorisation into the stream's own handling (other callers are drawn too).
STREAM_CALLER = {"UploadAttachment": "resident", "DownloadAttachment": "resident", "StreamNotices": "resident",
                 "KioskSession": "kiosk", "ImportResidents": "municipality"}
STREAM_READS = 3  # responses read before the client cuts the stream (live streams never end)


class Loop:
    """A server and channels on a uvloop running in a background thread (hypothesis drives it)."""

    def __init__(self, tmp_path, pki_template):
        import uvloop

        self.loop = uvloop.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self._cm = run_platform(tmp_path, pki_template=pki_template)
        self.platform = self.run(self._cm.__aenter__())
        self.channels = self.run(self._channels())

    async def _channels(self):
        p = self.platform
        _, card = await p.add_resident(holder())
        token = self.token = await p.sign_in(card)
        resident = (("authorization", f"Bearer {token}"),)
        self.callers = {name: (identity, resident if name == "resident" else ()) for name, identity in CALLERS.items()}
        # The same callers on blocking channels, for the streaming RPCs (see _call_stream).
        self.blocking = {name: (grpc.secure_channel(p.server.target(machine=identity is not None),
                                                    client_credentials(p.pki, identity)), metadata)
                         for name, (identity, metadata) in self.callers.items()}
        return {name: (p.channel(identity), metadata) for name, (identity, metadata) in self.callers.items()}

    def run(self, coro, timeout: float = 60):
        future: Future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    def close(self):
        for channel, _ in self.blocking.values():
            channel.close()
        self.run(self._cm.__aexit__(None, None, None))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def served(tmp_path_factory, pki_template):
    loop = Loop(tmp_path_factory.mktemp("fuzz"), pki_template)
    yield loop
    loop.close()


async def _call(channel, metadata, method: d.MethodDescriptor, message):
    cls = message_factory.GetMessageClass(method.output_type)
    rpc = channel.unary_unary(f"/{method.containing_service.full_name}/{method.name}",
                              request_serializer=lambda m: m.SerializeToString(),
                              response_deserializer=cls.FromString)
    try:
        await rpc(message, metadata=metadata, timeout=10)
        return grpc.StatusCode.OK, ""
    except grpc.aio.AioRpcError as error:
        return error.code(), error.details() or ""


def _call_stream(channel: grpc.Channel, metadata, method: d.MethodDescriptor, requests: list):
    """One call shaped as the method is (one request or a stream of them), at most STREAM_READS
    answers read; a live stream that outlasts its short deadline is fine. On a blocking channel:
    grpc.aio's client reports "Internal error from Core" instead of the server's status when the
    server ends a call while the client is still writing (grpc/grpc#36066); the blocking client
    reports the server's own status."""
    cls = message_factory.GetMessageClass(method.output_type)
    path = f"/{method.containing_service.full_name}/{method.name}"
    shape = {(True, False): channel.stream_unary, (False, True): channel.unary_stream,
             (True, True): channel.stream_stream}[(method.client_streaming, method.server_streaming)]
    rpc = shape(path, request_serializer=lambda m: m.SerializeToString(), response_deserializer=cls.FromString)
    request = iter(requests) if method.client_streaming else requests[0]
    try:
        if not method.server_streaming:
            rpc(request, metadata=metadata, timeout=3)
        else:
            call = rpc(request, metadata=metadata, timeout=3)
            for _ in zip(range(STREAM_READS), call):
                pass
            call.cancel()
        return grpc.StatusCode.OK, ""
    except grpc.RpcError as error:
        return error.code(), error.details() or ""


def _assert_handled(method, caller, code, details, sent) -> None:
    assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), (
        f"{method.full_name} as {caller}: {code} {details}\n{sent}")
    assert "Traceback" not in details and 'File "' not in details


@pytest.mark.slow
@pytest.mark.parametrize("service,method", STREAMING, ids=lambda x: getattr(x, "full_name", str(x)))
def test_generated_streams_never_break_the_server(served, service, method):
    assert {m.name for _, m in STREAMING} >= {"UploadAttachment", "KioskSession", "StreamNotices"}

    anyone = st.sampled_from(sorted(served.channels))
    callers = st.one_of(st.just(STREAM_CALLER[method.name]), anyone) if method.name in STREAM_CALLER else anyone

    @settings(max_examples=25, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(requests=st.lists(messages(method.input_type), min_size=1, max_size=3 if method.client_streaming else 1),
           caller=callers)
    def check(requests, caller):
        channel, metadata = served.blocking[caller]
        code, details = _call_stream(channel, metadata, method, requests)
        _assert_handled(method, caller, code, details, requests)

    check()


@pytest.mark.slow
@pytest.mark.parametrize("service,method", UNARY, ids=lambda x: getattr(x, "full_name", str(x)))
def test_generated_messages_never_break_the_server(served, service, method):
    @settings(max_examples=12, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(message=messages(method.input_type), caller=st.sampled_from(sorted(served.channels)))
    def check(message, caller):
        channel, metadata = served.channels[caller]
        code, details = served.run(_call(channel, metadata, method, message))
        _assert_handled(method, caller, code, details, message)

    check()
