from onestop.auth.v1 import auth_pb2, auth_pb2_grpc

from server.testing import bearer, holder


async def test_sign_in_and_who_am_i(platform):
    resident_id, card = await platform.add_resident(holder())
    token = await platform.sign_in(card)
    stub = auth_pb2_grpc.AuthServiceStub(platform.channel())
    me = await stub.WhoAmI(auth_pb2.WhoAmIRequest(), metadata=bearer(token))
    assert me.kind == auth_pb2.CALLER_KIND_RESIDENT
    assert me.resident_id == resident_id
    assert me.municipality_code == "131016"
