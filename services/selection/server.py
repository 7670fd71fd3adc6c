"""gRPC adapter of ``annotation.v1.Selection``: active learning: which images, frames, patches or superpixels to annotate.

Every RPC of the proto is served; those whose behaviour has not landed yet answer UNIMPLEMENTED
through the generated base class.
"""

from __future__ import annotations

import grpc

from annotation.v1 import selection_pb2_grpc
from services.common.grpc_server import Kit, serve


def register(server: grpc.Server, kit: Kit) -> None:
    selection_pb2_grpc.add_SelectionServicer_to_server(selection_pb2_grpc.SelectionServicer(), server)


if __name__ == "__main__":
    serve("selection", register)
