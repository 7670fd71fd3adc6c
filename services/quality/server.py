"""gRPC adapter of ``annotation.v1.Quality``: annotation-quality prediction from click sequences.

Every RPC of the proto is served; those whose behaviour has not landed yet answer UNIMPLEMENTED
through the generated base class.
"""

from __future__ import annotations

import grpc

from annotation.v1 import quality_pb2_grpc
from services.common.grpc_server import Kit, serve


def register(server: grpc.Server, kit: Kit) -> None:
    quality_pb2_grpc.add_QualityServicer_to_server(quality_pb2_grpc.QualityServicer(), server)


if __name__ == "__main__":
    serve("quality", register)
