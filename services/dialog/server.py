"""gRPC adapter of ``annotation.v1.Dialog``: the policy that picks which question to ask the annotator.

Every RPC of the proto is served; those whose behaviour has not landed yet answer UNIMPLEMENTED
through the generated base class.
"""

from __future__ import annotations

import grpc

from annotation.v1 import dialog_pb2_grpc
from services.common.grpc_server import Kit, serve


def register(server: grpc.Server, kit: Kit) -> None:
    dialog_pb2_grpc.add_DialogServicer_to_server(dialog_pb2_grpc.DialogServicer(), server)


if __name__ == "__main__":
    serve("dialog", register)
