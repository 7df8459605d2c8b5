"""Workers over gRPC with stock tools only: a client that knows nothing of tokenvault but what
server reflection tells it, and stubs generated from proto/ by grpcio-tools at test time."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from tokenvault import Vault

PROTO = Path(__file__).resolve().parents[3] / "proto"


@pytest.fixture
def pool_with_token(vault_server, pool):
    vault = Vault(vault_server.url, vault_server.admin)
    vault.put_pool(pool)
    vault.deposit(pool, [{"id": "g1", "secret": "grpc-secret"}])
    yield pool
    vault.close()


def authed(vault_server):
    return [("authorization", f"Bearer {vault_server.admin}")]


def test_a_generic_client_leases_and_releases_through_reflection(vault_server, pool_with_token):
    from google.protobuf import descriptor_pool, message_factory
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase)

    channel = grpc.insecure_channel(vault_server.grpc)
    db = ProtoReflectionDescriptorDatabase(channel)
    services = db.get_services()
    assert "tokenvault.v1.Vault" in services and "grpc.health.v1.Health" in services, services
    pool = descriptor_pool.DescriptorPool(db)
    svc = pool.FindServiceByName("tokenvault.v1.Vault")

    def call(method_name, **fields):
        m = svc.FindMethodByName(method_name)
        req_cls = message_factory.GetMessageClass(m.input_type)
        rep_cls = message_factory.GetMessageClass(m.output_type)
        rpc = channel.unary_unary(f"/{svc.full_name}/{m.name}",
                                  request_serializer=req_cls.SerializeToString,
                                  response_deserializer=rep_cls.FromString)
        return rpc(req_cls(**fields), metadata=authed(vault_server), timeout=10)

    reply = call("Lease", pool=pool_with_token, worker="reflected")
    assert reply.lease.token_id == "g1" and reply.lease.secret == "grpc-secret"
    released = call("Release", pool=pool_with_token, lease_id=reply.lease.lease_id)
    assert (released.token_id, released.state) == ("g1", "active")
    channel.close()


def test_stubs_generated_from_the_proto_files_lease_and_release(vault_server, pool_with_token,
                                                                 tmp_path):
    # Generated flat (the proto's own directory as the include root): the package name
    # `tokenvault` is the Python client's already.
    src = PROTO / "tokenvault/v1"
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{src}",
                    f"--python_out={tmp_path}", f"--grpc_python_out={tmp_path}",
                    str(src / "vault.proto")], check=True)
    sys.path.insert(0, str(tmp_path))
    try:
        import vault_pb2  # type: ignore
        import vault_pb2_grpc  # type: ignore
    finally:
        sys.path.remove(str(tmp_path))
    with grpc.insecure_channel(vault_server.grpc) as channel:
        stub = vault_pb2_grpc.VaultStub(channel)
        reply = stub.Lease(vault_pb2.LeaseRequest(pool=pool_with_token, worker="generated"),
                           metadata=authed(vault_server), timeout=10)
        assert reply.lease.authorization == "Bearer grpc-secret"
        released = stub.Release(vault_pb2.ReleaseRequest(
            pool=pool_with_token, lease_id=reply.lease.lease_id,
            report=vault_pb2.Report(outcome="ok")), metadata=authed(vault_server), timeout=10)
        assert released.token_id == "g1"
        with pytest.raises(grpc.RpcError) as e:
            stub.Lease(vault_pb2.LeaseRequest(pool=pool_with_token), timeout=10)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
