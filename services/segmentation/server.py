"""gRPC adapter of ``annotation.v1.Segmentation``: click-based interactive segmentation, the network served by Triton.

Every RPC of the proto is served; those whose behaviour has not landed yet answer UNIMPLEMENTED
through the generated base class.
"""

from __future__ import annotations

import grpc

from annotation.v1 import segmentation_pb2_grpc
from services.common.grpc_server import Kit, serve


def register(server: grpc.Server, kit: Kit) -> None:
    segmentation_pb2_grpc.add_SegmentationServicer_to_server(segmentation_pb2_grpc.SegmentationServicer(), server)


if __name__ == "__main__":
    serve("segmentation", register)
