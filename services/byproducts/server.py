"""gRPC adapter of ``annotation.v1.Byproducts``: logging of annotation byproducts (trajectories, click timing, corrections).

Every RPC of the proto is served; those whose behaviour has not landed yet answer UNIMPLEMENTED
through the generated base class.
"""

from __future__ import annotations

import grpc

from annotation.v1 import byproducts_pb2_grpc
from services.common.grpc_server import Kit, serve


def register(server: grpc.Server, kit: Kit) -> None:
    byproducts_pb2_grpc.add_ByproductsServicer_to_server(byproducts_pb2_grpc.ByproductsServicer(), server)


if __name__ == "__main__":
    serve("byproducts", register)
