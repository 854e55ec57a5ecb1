r"""The Open Inference Protocol v2 over gRPC (KServe's ``inference.GRPCInferenceService``, the
one Triton and ``tritonclient.grpc`` speak), served next to HTTP by the same process.

Needs the ``grpc`` extra (``pip install 'modelyard[grpc]'``); importing this package does not,
only ``grpc_v2.server`` does, and the app imports that only when a gRPC port is set.

``grpc_predict_v2_pb2*.py[i]`` are generated from ``grpc_predict_v2.proto``; to regenerate,
from the repository root, with ``grpcio-tools==1.62.3`` (protoc 25: the oldest gencode, so it
imports under every protobuf >= 4.25 and grpcio >= 1.60 the extra allows; newer gencode pins
the runtime to its own version)::

    python -m grpc_tools.protoc -I src --python_out=src --pyi_out=src \
        --grpc_python_out=src src/modelyard/serving/grpc_v2/grpc_predict_v2.proto && \
    sed -i -e '1i # ruff: noqa\n# mypy: ignore-errors' \
        -e 's/_descriptor_pool.Default()/_descriptor_pool.DescriptorPool()/' \
        src/modelyard/serving/grpc_v2/grpc_predict_v2_pb2*.py*

The ``sed`` marks the files as generated for ruff and mypy, and moves the messages into a
private descriptor pool: ``tritonclient.grpc`` registers the same ``inference.*`` names in the
default pool, and two files defining one name cannot share a pool (a client and this server
in one process, as in the tests, would fail to import).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GrpcListen:
    """Where the gRPC server listens. Port 0: no gRPC server."""

    host: str = "127.0.0.1"
    port: int = 0
    # PEM files: with both, gRPC is served over TLS (as HTTP is with --ssl-certfile).
    certfile: str | None = None
    keyfile: str | None = None
