"""The API contract: generated code is fresh, every RPC has an access rule, names follow the conventions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pool

from annotation.v1 import (
    byproducts_pb2,
    common_pb2,
    dialog_pb2,
    operations_pb2,
    quality_pb2,
    segmentation_pb2,
    selection_pb2,
    training_pb2,
    video_pb2,
)
from services.common.settings import PROTO_SERVICES

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
MODULES = (byproducts_pb2, dialog_pb2, operations_pb2, quality_pb2, segmentation_pb2, selection_pb2, training_pb2,
           video_pb2)


def test_generated_code_matches_the_protos(tmp_path):
    protos = sorted(str(p) for p in (REPO / "protos" / "annotation" / "v1").glob("*.proto"))
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{REPO / 'protos'}", f"--python_out={tmp_path}",
                    f"--grpc_python_out={tmp_path}", f"--pyi_out={tmp_path}", *protos], check=True)
    fresh = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*.py*")}
    installed = {p.relative_to(REPO / "gen"): p.read_bytes() for p in (REPO / "gen").rglob("*_pb2*.py*")}
    stale = sorted(str(name) for name in fresh if installed.get(name) != fresh[name])
    assert not stale, f"generated code is stale, run `make protos`: {stale}"
    assert set(installed) == set(fresh), "gen/ holds code for protos that no longer exist: run `make protos`"


def _methods():
    for module in MODULES:
        for service in module.DESCRIPTOR.services_by_name.values():
            yield from service.methods


def test_every_rpc_declares_a_required_role():
    missing = [m.full_name for m in _methods()
               if m.GetOptions().Extensions[common_pb2.required_role] == common_pb2.ROLE_UNSPECIFIED]
    assert not missing, f"RPCs without (annotation.v1.required_role): {missing}"


def test_project_id_is_always_field_one_of_type_string():
    for method in _methods():
        field = method.input_type.fields_by_name.get("project_id")
        if field is not None:
            assert field.number == 1 and field.type == field.TYPE_STRING, method.full_name


def test_every_service_of_the_settings_exists_in_the_protos():
    pool = descriptor_pool.Default()
    for name in PROTO_SERVICES.values():
        assert pool.FindServiceByName(name).methods, name


def test_every_proto_with_a_service_is_checked_here():
    with_services = {f"annotation/v1/{p.name}" for p in (REPO / "protos" / "annotation" / "v1").glob("*.proto")
                     if "\nservice " in p.read_text()}
    assert with_services == {module.DESCRIPTOR.name for module in MODULES}


def test_video_propagation_is_the_video_service_alone():
    """The RPCs and their messages moved out of Segmentation with their names, so JSON stays the same."""
    pool = descriptor_pool.Default()
    video = pool.FindServiceByName("annotation.v1.Video")
    assert [m.name for m in video.methods] == ["StartPropagation", "GetPropagation", "StreamPropagationMasks"]
    segmentation = pool.FindServiceByName("annotation.v1.Segmentation")
    assert not [m.name for m in segmentation.methods if "Propagation" in m.name]
    assert video_pb2.StartPropagationRequest.DESCRIPTOR.full_name == "annotation.v1.StartPropagationRequest"
    assert video_pb2.PropagationMethod.DESCRIPTOR.file.name == "annotation/v1/video.proto"
