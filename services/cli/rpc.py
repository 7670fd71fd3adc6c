"""``annot call``: one unary RPC of a service by name, through server reflection (like grpcurl)."""

from __future__ import annotations

import grpc
import typer
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from rich.console import Console

console = Console()


def call(address: str = typer.Argument(..., help="host:port of a service, e.g. 127.0.0.1:50051."),
         method: str = typer.Argument("", help="Service/Method, e.g. annotation.v1.Operations/ProbeQueue; "
                                               "empty lists the services."),
         data: str = typer.Option("{}", "--data", "-d", help="The request as JSON."),
         key: str = typer.Option("", envvar="ANNOT_API_KEY", help="API key (default: $ANNOT_API_KEY)."),
         timeout: float = typer.Option(30.0, help="Deadline in seconds.")) -> None:
    """Call a unary RPC by name through server reflection, like grpcurl: JSON in, JSON out."""
    with grpc.insecure_channel(address) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        if not method:
            for name in database.get_services():
                console.print(name)
            return
        service_name, _, method_name = method.partition("/")
        pool = descriptor_pool.DescriptorPool(database)
        try:
            descriptor = pool.FindServiceByName(service_name).methods_by_name[method_name]
        except KeyError:
            console.print(f"[red]no method {method!r} on {address}[/] (give Service/Method; list with no METHOD)")
            raise typer.Exit(2)
        if descriptor.client_streaming or descriptor.server_streaming:
            console.print(f"[red]{method} streams; use a gRPC client library for it[/]")
            raise typer.Exit(2)
        try:
            request = json_format.Parse(data, message_factory.GetMessageClass(descriptor.input_type)())
        except json_format.ParseError as exc:
            console.print(f"[red]--data is not a valid {descriptor.input_type.full_name}[/]: {exc}")
            raise typer.Exit(2)
        response_class = message_factory.GetMessageClass(descriptor.output_type)
        rpc = channel.unary_unary(f"/{method}", request_serializer=lambda m: m.SerializeToString(),
                                  response_deserializer=response_class.FromString)
        metadata = [("authorization", f"Bearer {key}")] if key else None
        try:
            reply = rpc(request, timeout=timeout, metadata=metadata)
        except grpc.RpcError as exc:
            console.print(f"[red]{exc.code().name}[/]: {exc.details()}")
            raise typer.Exit(1)
        print(json_format.MessageToJson(reply))
