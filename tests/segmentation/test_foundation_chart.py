"""The Helm chart with a foundation model enabled: every Triton pod exports the checkpoint (from a volume or
object storage) in an init container and serves the pair as a third model repository; the segmentation
service's configuration names the projects that click with it. Off by default."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "annotation-platform"
HELM = Path(sys.executable).parent / "helm"

pytestmark = pytest.mark.unit


def render(*args: str) -> list[dict]:
    if not HELM.exists():
        pytest.fail("helm missing: run `make helm-tools` (make test does)")
    out = subprocess.run([str(HELM), "template", "rel", str(CHART), "--namespace", "annot", *args],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def triton_pod(docs: list[dict]) -> dict:
    return next(d for d in docs if d["kind"] == "Deployment"
                and d["metadata"]["name"] == "rel-annotation-platform-triton")["spec"]["template"]["spec"]


def config(docs: list[dict]) -> dict:
    return next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "rel-annotation-platform-config")["data"]


def test_off_by_default():
    docs = render()
    pod = triton_pod(docs)
    assert "initContainers" not in pod and "--model-repository=/foundation" not in pod["containers"][0]["args"]
    assert "ANNOT_SEGMENTATION_PROJECT_MODELS" not in config(docs)


def test_a_checkpoint_on_a_volume_is_exported_in_the_triton_pod_and_chosen_by_projects():
    docs = render("-f", str(CHART / "values-production-gpu.yaml"), "--set", "foundationModel.enabled=true",
                  "--set", "foundationModel.checkpoint.existingClaim=sam-checkpoints",
                  "--set", "foundationModel.projects={p1,p2}", "--set", "foundationModel.decoderInstances=3")
    pod = triton_pod(docs)
    export = {c["name"]: c for c in pod["initContainers"]}["export-foundation-model"]
    assert "--checkpoint=/checkpoint/sam_vit_h_4b8939.pth" in export["args"]
    assert "--out=/foundation" in export["args"] and "--decoder-instances=3" in export["args"]
    assert "--skip-if-current" in export["args"]
    triton = pod["containers"][0]
    assert "--model-repository=/foundation" in triton["args"] and "--model-config-name=gpu" in triton["args"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["foundation-checkpoint"]["persistentVolumeClaim"] == {"claimName": "sam-checkpoints",
                                                                         "readOnly": True}
    assert {"name": "foundation-models", "mountPath": "/foundation", "readOnly": True} in triton["volumeMounts"]
    assert json.loads(config(docs)["ANNOT_SEGMENTATION_PROJECT_MODELS"]) == {"p1": "sam_decoder", "p2": "sam_decoder"}
    for doc in docs:
        if doc["kind"] == "Deployment":
            kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_a_checkpoint_in_object_storage_is_fetched_first_and_a_missing_source_is_refused():
    docs = render("--set", "foundationModel.enabled=true", "--set", "foundationModel.family=sam2",
                  "--set", "foundationModel.variant=sam2.1_hiera_l", "--set", "foundationModel.name=sam2l",
                  "--set", "foundationModel.checkpoint.url=s3://models/sam2.1_hiera_large.pt",
                  "--set", "foundationModel.checkpoint.file=sam2.1_hiera_large.pt",
                  "--set", "foundationModel.checkpoint.credentialsSecret=s3-creds")
    pod = triton_pod(docs)
    fetch, export = pod["initContainers"]
    assert fetch["name"] == "fetch-checkpoint" and "s3://models/sam2.1_hiera_large.pt" in fetch["command"]
    assert fetch["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
    assert "--family=sam2" in export["args"] and "--checkpoint=/checkpoint/sam2.1_hiera_large.pt" in export["args"]
    assert json.loads(config(docs)["ANNOT_SEGMENTATION_PROJECT_MODELS"]) == {"*": "sam2l_decoder"}
    out = subprocess.run([str(HELM), "template", "rel", str(CHART), "--set", "foundationModel.enabled=true"],
                         capture_output=True, text=True, check=False)
    assert out.returncode != 0 and "foundationModel.checkpoint.existingClaim" in out.stderr
