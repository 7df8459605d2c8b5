"""Workers over gRPC with stock tools only: a client that knows nothing of tokenvault but what
server reflection tells it, and stubs generated from proto/ by grpcio-tools at test time."""

from __future__ import annotations

import subprocess
import sys
import textwrap
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
    # Generated flat (the proto's own directory as the include root), and run in a process of
    # its own: this one holds the client's own stubs of the same messages (tokenvault.v1).
    src = PROTO / "tokenvault/v1"
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{src}",
                    f"--python_out={tmp_path}", f"--grpc_python_out={tmp_path}",
                    str(src / "vault.proto")], check=True)
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent("""
        import sys
        import grpc
        import vault_pb2, vault_pb2_grpc

        target, token, pool = sys.argv[1:4]
        auth = [("authorization", f"Bearer {token}")]
        with grpc.insecure_channel(target) as channel:
            stub = vault_pb2_grpc.VaultStub(channel)
            reply = stub.Lease(vault_pb2.LeaseRequest(pool=pool, worker="generated"),
                               metadata=auth, timeout=10)
            released = stub.Release(vault_pb2.ReleaseRequest(
                pool=pool, lease_id=reply.lease.lease_id,
                report=vault_pb2.Report(outcome="ok")), metadata=auth, timeout=10)
            try:
                stub.Lease(vault_pb2.LeaseRequest(pool=pool), timeout=10)
                refused = "none"
            except grpc.RpcError as e:
                refused = e.code().name
        print(reply.lease.authorization, released.token_id, refused)
    """))
    out = subprocess.run([sys.executable, str(script), vault_server.grpc, vault_server.admin,
                          pool_with_token], check=True, capture_output=True, text=True,
                         cwd=tmp_path, timeout=60)
    assert out.stdout.split() == ["Bearer", "grpc-secret", "g1", "UNAUTHENTICATED"], out
