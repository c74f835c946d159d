"""A plain grpcio client against the gateway, as a partner agency's Python would be written.

Run by tests/python_client.rs: it generates the stubs from proto/ with grpcio-tools, connects
over mutual TLS, and checks submit, get, a refused update, watch, health and reflection.
"""
import argparse
import importlib.resources
import os
import sys
import tempfile
import time

import grpc
from grpc_tools import protoc


def main():
    parser = argparse.ArgumentParser()
    for name in ("port", "ca", "cert", "key", "proto"):
        parser.add_argument("--" + name, required=True)
    args = parser.parse_args()

    out = tempfile.mkdtemp(prefix="liandong-py-")
    include = str(importlib.resources.files("grpc_tools") / "_proto")
    status = protoc.main(["", "-I" + args.proto, "-I" + include, "--python_out=" + out, "--grpc_python_out=" + out,
                          "liandong/v1/model.proto", "liandong/v1/transfer.proto"])
    assert status == 0, "protoc failed"
    sys.path.insert(0, out)
    from liandong.v1 import model_pb2, transfer_pb2, transfer_pb2_grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    read = lambda path: open(path, "rb").read()
    credentials = grpc.ssl_channel_credentials(root_certificates=read(args.ca), private_key=read(args.key),
                                               certificate_chain=read(args.cert))
    channel = grpc.secure_channel("localhost:" + args.port, credentials)
    stub = transfer_pb2_grpc.TransferServiceStub(channel)

    now = int(time.time())
    request = model_pb2.TransferRequest(
        sender_ref="PY-1", to_platform="12345", **{"from": "330200/110"},
        requested_at={"seconds": now}, case=model_pb2.Case(
            case_id="110:330200:PY0001", origin=model_pb2.Origin(endpoint="330200/110", local_id="PY0001"),
            received_at={"seconds": now - 60}, category="NP05", summary="钥匙锁在屋内，请求开锁",
            urgency=model_pb2.URGENCY_NORMAL))
    answer = stub.SubmitTransfer(transfer_pb2.SubmitTransferRequest(request=request))
    assert answer.created and answer.transfer.to == "330200/12345", answer
    transfer_id = answer.transfer.transfer_id
    got = stub.GetTransfer(transfer_pb2.GetTransferRequest(transfer_id=transfer_id))
    assert got.state == model_pb2.STATE_SUBMITTED, got

    refused = model_pb2.StatusUpdate(transfer_id=transfer_id, state=model_pb2.STATE_ACCEPTED, at={"seconds": now},
                                     by="330200/110")
    try:
        stub.UpdateStatus(transfer_pb2.UpdateStatusRequest(update=refused))
        raise AssertionError("the origin may not accept")
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error
        assert "the transfer is submitted" in error.details(), error.details()

    events = stub.Watch(transfer_pb2.WatchRequest(cursor=""))
    first = next(events)
    assert first.kind == "submitted" and first.transfer.transfer_id == transfer_id, first
    events.cancel()

    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="liandong.v1.TransferService"))
    assert health.status == health_pb2.HealthCheckResponse.SERVING, health

    services = ProtoReflectionDescriptorDatabase(channel).get_services()
    assert "liandong.v1.TransferService" in services, services
    print("ok", transfer_id)


if __name__ == "__main__":
    main()
