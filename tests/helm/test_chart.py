"""The Helm chart: lint, render with the default and the production/GPU values, validate every
manifest against a current Kubernetes schema, and assert what SREs rely on."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate  # noqa: E402  (pinned in the test extras)
import pytest
import yaml

from services.common.video_layout import VIDEO_ROOT

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "annotation-platform"
PROD_VALUES = CHART / "values-production-gpu.yaml"
BIN = Path(sys.executable).parent
K8S_VERSION = kubernetes_validate.latest_version()   # the newest schema of the pinned kubernetes-validate
CRD_KINDS = {"ServiceMonitor", "ScaledObject", "TriggerAuthentication"}   # not in the core schema
SERVICES = ("selection", "segmentation", "byproducts", "quality", "dialog", "video", "training")
WORKERS = SERVICES[:-2]  # workers.yaml's; video-worker.yaml and training-worker.yaml (GPU, long jobs) are apart
WORKLOADS = {"Deployment", "StatefulSet", "Job", "Pod"}

pytestmark = pytest.mark.unit


@pytest.fixture(scope="session")
def helm() -> str:
    binary = BIN / "helm"
    if not binary.exists():
        subprocess.run([str(REPO / "deploy" / "install-helm.sh"), str(BIN)], check=True, cwd=REPO)
    return str(binary)


def render(helm: str, *args: str) -> list[dict]:
    out = subprocess.run([helm, "template", "rel", str(CHART), "--namespace", "annot", *args],
                         check=True, capture_output=True, text=True).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.fixture(scope="session")
def default(helm) -> list[dict]:
    return render(helm)


@pytest.fixture(scope="session")
def production(helm) -> list[dict]:
    return render(helm, "-f", str(PROD_VALUES))


def by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def pod_spec(doc: dict) -> dict:
    return doc["spec"] if doc["kind"] == "Pod" else doc["spec"]["template"]["spec"]


def containers(doc: dict) -> list[dict]:
    spec = pod_spec(doc)
    return spec.get("initContainers", []) + spec["containers"]


def test_lint(helm):
    for extra in ([], ["-f", str(PROD_VALUES)]):
        result = subprocess.run([helm, "lint", "--strict", str(CHART), *extra], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("values", ["default", "production"])
def test_every_manifest_validates_against_kubernetes(values, request):
    docs = request.getfixturevalue(values)
    assert docs
    for doc in docs:
        if doc["kind"] in CRD_KINDS:
            assert doc["apiVersion"].split("/")[0] in {"monitoring.coreos.com", "keda.sh"}
            continue
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_one_deployment_and_service_per_service_and_gateway(default):
    deployments, services = by_kind(default, "Deployment"), by_kind(default, "Service")
    for name in SERVICES:
        server = deployments[f"rel-annotation-platform-{name}"]
        assert server["spec"]["template"]["spec"]["containers"][0]["args"] == ["server", name]
        worker = deployments[f"rel-annotation-platform-{name}-worker"]
        assert worker["spec"]["template"]["spec"]["containers"][0]["args"][:2] == ["worker", name]
        assert f"rel-annotation-platform-{name}" in services
    assert "rel-annotation-platform-gateway" in deployments and "rel-annotation-platform-triton" in deployments
    config = by_kind(default, "ConfigMap")["rel-annotation-platform-config"]["data"]
    assert config["ANNOT_HOST"] == "0.0.0.0" and config["ANNOT_ENV"] == "production"
    hosts = json.loads(config["ANNOT_SERVICE_HOSTS"])
    assert hosts["segmentation"] == "rel-annotation-platform-segmentation:50052"
    assert hosts["video"] == "rel-annotation-platform-video:50056" and config["ANNOT_VIDEO_PORT"] == "50056"


@pytest.mark.parametrize("values", ["default", "production"])
def test_resources_and_non_root_on_every_container(values, request):
    for doc in request.getfixturevalue(values):
        if doc["kind"] not in WORKLOADS:
            continue
        pod_context = pod_spec(doc).get("securityContext", {})
        assert pod_context.get("runAsNonRoot") is True and pod_context.get("runAsUser", 0) > 0, doc["metadata"]["name"]
        for container in containers(doc):
            where = f'{doc["metadata"]["name"]}/{container["name"]}'
            resources = container.get("resources", {})
            assert {"cpu", "memory"} <= set(resources.get("requests", {})), where
            assert "memory" in resources.get("limits", {}), where
            context = container["securityContext"]
            assert context.get("runAsUser", pod_context["runAsUser"]) != 0, where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["capabilities"]["drop"] == ["ALL"], where
            assert context["readOnlyRootFilesystem"] is True, where


def test_probes(default):
    deployments = by_kind(default, "Deployment")
    for name in SERVICES:
        server = deployments[f"rel-annotation-platform-{name}"]["spec"]["template"]["spec"]["containers"][0]
        port = server["ports"][0]["containerPort"]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert server[probe]["grpc"]["port"] == port, (name, probe)
    for name in WORKERS:
        worker = deployments[f"rel-annotation-platform-{name}-worker"]["spec"]["template"]["spec"]["containers"][0]
        assert "inspect ping" in " ".join(worker["livenessProbe"]["exec"]["command"])
    gateway = deployments["rel-annotation-platform-gateway"]["spec"]["template"]["spec"]["containers"][0]
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/healthz"
    triton = deployments["rel-annotation-platform-triton"]["spec"]["template"]["spec"]["containers"][0]
    assert triton["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert triton["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert triton["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    for sts in by_kind(default, "StatefulSet").values():
        container = sts["spec"]["template"]["spec"]["containers"][0]
        assert {"readinessProbe", "livenessProbe"} <= set(container), sts["metadata"]["name"]


def test_gpu_limits_placement_and_metrics_in_production(production, default):
    triton = by_kind(production, "Deployment")["rel-annotation-platform-triton"]
    spec = triton["spec"]["template"]["spec"]
    assert spec["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "--model-config-name=gpu" in spec["containers"][0]["args"]  # deploy/triton: configs/gpu.pbtxt
    assert spec["nodeSelector"] and any(t["key"] == "nvidia.com/gpu" for t in spec["tolerations"])
    assert triton["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == "8002"
    assert "replicas" not in triton["spec"]   # the HPA owns it
    cpu_triton = by_kind(default, "Deployment")["rel-annotation-platform-triton"]
    assert "nvidia.com/gpu" not in cpu_triton["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert "rel-annotation-platform" in by_kind(production, "ServiceMonitor")


def test_triton_hpa_on_queue_time_with_stabilisation(production, helm):
    hpa = by_kind(production, "HorizontalPodAutoscaler")["rel-annotation-platform-triton"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": "rel-annotation-platform-triton"}
    metric = hpa["spec"]["metrics"][0]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] == "nv_inference_queue_duration_us_per_request"
    assert metric["pods"]["target"]["type"] == "AverageValue"
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 300
    rules = yaml.safe_load(by_kind(production, "ConfigMap")[
        "rel-annotation-platform-prometheus-adapter-rules"]["data"]["config.yaml"])["rules"]
    query = rules[0]["metricsQuery"]
    assert "nv_inference_queue_duration_us" in query and "nv_inference_request_success" in query
    for metric_name, expected in (("gpuUtilization", "Pods"), ("cpu", "Resource")):
        docs = render(helm, "-f", str(PROD_VALUES), "--set", f"triton.autoscaling.metric={metric_name}")
        alternative = by_kind(docs, "HorizontalPodAutoscaler")["rel-annotation-platform-triton"]
        assert alternative["spec"]["metrics"][0]["type"] == expected


def test_keda_scales_every_worker_on_its_queue(production, default):
    scaled = by_kind(production, "ScaledObject")
    assert len(scaled) == len(WORKERS) + 1  # and the training worker (below)
    for name in WORKERS:
        obj = scaled[f"rel-annotation-platform-{name}-worker"]
        trigger = obj["spec"]["triggers"][0]
        assert trigger["type"] == "redis" and trigger["metadata"]["listName"] == name
        assert obj["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"][
            "stabilizationWindowSeconds"] > 0
        assert "replicas" not in by_kind(production, "Deployment")[f"rel-annotation-platform-{name}-worker"]["spec"]
    assert not by_kind(default, "ScaledObject")


def test_keda_scales_the_training_worker_to_zero_gpus_and_outlasts_a_job(production, default):
    obj = by_kind(production, "ScaledObject")["rel-annotation-platform-training-worker"]
    assert obj["spec"]["scaleTargetRef"]["name"] == "rel-annotation-platform-training-worker"
    assert obj["spec"]["triggers"][0]["metadata"]["listName"] == "training"
    assert obj["spec"]["minReplicaCount"] == 0 and obj["spec"]["triggers"][0]["metadata"]["listLength"] == "1"
    # a running job is off the list: the pod must not be taken away within a job's minutes
    assert obj["spec"]["cooldownPeriod"] >= 1800
    assert "replicas" not in by_kind(production, "Deployment")["rel-annotation-platform-training-worker"]["spec"]
    assert by_kind(default, "Deployment")["rel-annotation-platform-training-worker"]["spec"]["replicas"] == 1


def test_network_policies(default):
    policies = by_kind(default, "NetworkPolicy")
    deny = policies["rel-annotation-platform-default-deny"]
    assert deny["spec"]["policyTypes"] == ["Ingress", "Egress"] and "ingress" not in deny["spec"]
    for name in SERVICES:
        ingress = policies[f"rel-annotation-platform-{name}"]["spec"]["ingress"]
        sources = [peer["podSelector"]["matchLabels"].get("app.kubernetes.io/component")
                   for peer in ingress[0]["from"] if "podSelector" in peer and "namespaceSelector" not in peer]
        assert "gateway" in sources and "worker" not in sources
    triton_callers = {peer["podSelector"]["matchLabels"].get("annotation-platform/service")
                      for peer in policies["rel-annotation-platform-triton"]["spec"]["ingress"][0]["from"]}
    assert triton_callers == {"segmentation", "training"}  # training loads the versions it publishes
    egress_to_triton = {name for name in SERVICES for rule in policies[f"rel-annotation-platform-{name}"]["spec"]["egress"]
                        for peer in rule.get("to", []) if peer.get("podSelector", {}).get("matchLabels", {}).get(
                            "app.kubernetes.io/component") == "triton"}
    assert egress_to_triton == {"segmentation", "training"}


def test_every_deployment_serves_metrics_that_prometheus_may_scrape(production):
    """Gateway, servers, workers and Triton: a metrics port, a Service port for the ServiceMonitor and a
    NetworkPolicy letting Prometheus (and only it, for workers) reach it."""
    services = by_kind(production, "Service").values()
    policies = by_kind(production, "NetworkPolicy").values()
    seen = set()
    for name, deployment in by_kind(production, "Deployment").items():
        ports = [port for c in containers(deployment) for port in c.get("ports", []) if port["name"] == "metrics"]
        assert len(ports) == 1, f"{name} has no metrics port"
        port = ports[0]["containerPort"]
        assert port not in seen or name.endswith("triton"), f"{name}: metrics port {port} reused"
        seen.add(port)
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == str(port)
        assert any(p["name"] == "metrics" and p["port"] == port for svc in services
                   if svc["spec"]["selector"].items() <= labels.items() for p in svc["spec"]["ports"]), name
        allowed = [rule for policy in policies
                   if policy["spec"]["podSelector"].get("matchLabels", {}).items() <= labels.items()
                   and "component" in str(policy["spec"]["podSelector"])
                   for rule in policy["spec"].get("ingress", []) if {"port": port, "protocol": "TCP"} in rule["ports"]]
        assert allowed and all(any("namespaceSelector" in peer for peer in rule["from"]) for rule in allowed), name
    gateway = by_kind(production, "Service")["rel-annotation-platform-gateway"]
    assert [p["name"] for p in gateway["spec"]["ports"]] == ["http"]  # metrics never on the public Service


def test_migration_hook_and_test_hook(default, production):
    job = by_kind(default, "Job")["rel-annotation-platform-migrate"]
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,pre-upgrade"   # in-cluster PostgreSQL
    external = by_kind(production, "Job")["rel-annotation-platform-migrate"]
    assert external["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    env = {e["name"] for e in external["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "envFrom" not in external["spec"]["template"]["spec"]["containers"][0]   # runs before the ConfigMap
    assert {"ANNOT_DATABASE_URL", "ANNOT_ENV"} <= env
    test_pod = by_kind(default, "Pod")["rel-annotation-platform-test-health"]
    assert test_pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    script = test_pod["spec"]["containers"][0]["command"][-1]
    assert "HealthStub" in script and "/healthz" in script


def test_no_secret_in_production_values(production):
    assert not by_kind(production, "Secret")
    text = PROD_VALUES.read_text().lower()
    assert "password:" not in text and "adminkey:" not in text


def test_video_worker_consumes_its_own_queue_on_a_gpu_in_production(production, default):
    worker = by_kind(production, "Deployment")["rel-annotation-platform-video-worker"]
    container = containers(worker)[0]
    assert container["args"][:2] == ["worker", "video"]  # entrypoint: celery -A services.video.worker:app -Q video
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert any(t["key"] == "nvidia.com/gpu" for t in pod_spec(worker)["tolerations"])
    cpu = containers(by_kind(default, "Deployment")["rel-annotation-platform-video-worker"])[0]
    assert "nvidia.com/gpu" not in cpu["resources"]["limits"]


def test_videos_live_on_one_shared_volume_where_the_var_dir_keeps_them(helm, default):
    """The gateway writes uploaded videos, the video server and the video worker read them:
    one ReadWriteMany claim mounted at ANNOT_VAR_DIR/videos in exactly those pods."""
    claim = by_kind(default, "PersistentVolumeClaim")["rel-annotation-platform-videos"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"] and claim["spec"]["resources"]["requests"]["storage"]
    var_dir = by_kind(default, "ConfigMap")["rel-annotation-platform-config"]["data"]["ANNOT_VAR_DIR"]
    sharing = set()
    for name, doc in by_kind(default, "Deployment").items():
        volumes = {v["name"]: v for v in pod_spec(doc).get("volumes", [])}
        if "videos" not in volumes:
            continue
        sharing.add(name.removeprefix("rel-annotation-platform-"))
        assert volumes["videos"]["persistentVolumeClaim"]["claimName"] == "rel-annotation-platform-videos"
        mounts = {m["name"]: m["mountPath"] for m in containers(doc)[0]["volumeMounts"]}
        assert mounts["videos"] == f"{var_dir}/{VIDEO_ROOT}"
    assert sharing == {"gateway", "video", "video-worker"}
    docs = render(helm, "--set", "videos.persistence.storageClass=nfs", "--set", "videos.persistence.size=5Gi")
    claim = by_kind(docs, "PersistentVolumeClaim")["rel-annotation-platform-videos"]
    assert claim["spec"]["storageClassName"] == "nfs" and claim["spec"]["resources"]["requests"]["storage"] == "5Gi"
    docs = render(helm, "--set", "videos.persistence.existingClaim=my-videos")
    assert "rel-annotation-platform-videos" not in by_kind(docs, "PersistentVolumeClaim")
    gateway = by_kind(docs, "Deployment")["rel-annotation-platform-gateway"]
    assert {v["name"]: v for v in pod_spec(gateway)["volumes"]}["videos"]["persistentVolumeClaim"] == {
        "claimName": "my-videos"}


def test_training_worker_consumes_its_own_queue_on_a_gpu_in_production(production, default):
    worker = by_kind(production, "Deployment")["rel-annotation-platform-training-worker"]
    container = containers(worker)[0]
    assert container["args"][:2] == ["worker", "training"]  # celery -A services.training.worker:app -Q training
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert any(t["key"] == "nvidia.com/gpu" for t in pod_spec(worker)["tolerations"])
    cpu = containers(by_kind(default, "Deployment")["rel-annotation-platform-training-worker"])[0]
    assert "nvidia.com/gpu" not in cpu["resources"]["limits"]
    assert {p["containerPort"] for p in cpu["ports"]} == {9117}  # metrics: base + 11 + the queue's index


def test_published_models_are_one_volume_the_training_service_writes_and_triton_serves(helm, default):
    """Promoted versions: written by the training server and worker at ANNOT_VAR_DIR/triton/published
    (Settings.resolved_model_repository), read by Triton as a second repository in explicit model-control
    mode (loaded through its API, no restart)."""
    claim = by_kind(default, "PersistentVolumeClaim")["rel-annotation-platform-published-models"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    var_dir = by_kind(default, "ConfigMap")["rel-annotation-platform-config"]["data"]["ANNOT_VAR_DIR"]
    sharing = {}
    for name, doc in by_kind(default, "Deployment").items():
        volumes = {v["name"]: v for v in pod_spec(doc).get("volumes", [])}
        if "published-models" in volumes:
            assert volumes["published-models"]["persistentVolumeClaim"]["claimName"] == \
                "rel-annotation-platform-published-models"
            mounts = {m["name"]: m for m in containers(doc)[0]["volumeMounts"]}
            sharing[name.removeprefix("rel-annotation-platform-")] = mounts["published-models"]
    assert set(sharing) == {"training", "training-worker", "triton"}
    for writer in ("training", "training-worker"):
        assert sharing[writer]["mountPath"] == f"{var_dir}/triton/published" and not sharing[writer].get("readOnly")
    assert sharing["triton"] == {"name": "published-models", "mountPath": "/published", "readOnly": True}
    args = containers(by_kind(default, "Deployment")["rel-annotation-platform-triton"])[0]["args"]
    assert {"--model-repository=/published", "--model-control-mode=explicit", "--load-model=*"} <= set(args)
    docs = render(helm, "--set", "trainingWorker.enabled=false")
    args = containers(by_kind(docs, "Deployment")["rel-annotation-platform-triton"])[0]["args"]
    assert "--model-control-mode=explicit" not in args and "rel-annotation-platform-training-worker" not in \
        by_kind(docs, "Deployment")


def test_redis_is_durable_and_refuses_writes_before_its_memory_limit(production):
    redis = by_kind(production, "StatefulSet")["rel-annotation-platform-redis"]
    container = containers(redis)[0]
    args = dict(zip(container["args"][::2], container["args"][1::2]))
    assert args["--appendonly"] == "yes" and args["--maxmemory-policy"] == "noeviction"
    units = {"kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30}
    maxmemory = int(args["--maxmemory"][:-2]) * units[args["--maxmemory"][-2:]]
    limit = container["resources"]["limits"]["memory"]
    assert limit.endswith("Gi") and maxmemory <= 0.85 * int(limit[:-2]) * (1 << 30)


def test_external_redis_and_postgres_remove_the_statefulsets(helm):
    docs = render(helm, "--set", "redis.enabled=false", "--set", "externalRedis.host=redis.example",
                  "--set", "postgresql.enabled=false", "--set", "externalDatabase.host=pg.example",
                  "--set", "externalDatabase.existingSecret=db")
    assert not by_kind(docs, "StatefulSet")
    env = {e["name"]: e for e in by_kind(docs, "Deployment")["rel-annotation-platform-selection"]["spec"][
        "template"]["spec"]["containers"][0]["env"]}
    assert env["ANNOT_REDIS_URL"]["value"] == "redis://redis.example:6379/0"
    assert "@pg.example:5432/annotation" in env["ANNOT_DATABASE_URL"]["value"]
    for doc in docs:
        if doc["kind"] not in CRD_KINDS:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_schema_rejects_external_database_without_secret(helm):
    result = subprocess.run([helm, "template", "rel", str(CHART), "--set", "postgresql.enabled=false",
                             "--set", "externalDatabase.host=pg.example"], capture_output=True, text=True)
    assert result.returncode != 0 and "existingSecret" in result.stderr


@pytest.mark.skipif(shutil.which("sh") is None, reason="no POSIX shell")
def test_install_helm_is_idempotent(helm):
    result = subprocess.run([str(REPO / "deploy" / "install-helm.sh"), str(BIN)], capture_output=True, text=True)
    assert result.returncode == 0 and "already installed" in result.stdout
    assert subprocess.run([helm, "version", "--short"], capture_output=True, text=True).stdout.startswith("v4.")


def test_the_migration_job_imports_the_admin_key_from_its_secret(helm):
    docs = render(helm, "--set", "apiKeys.existingSecret=platform-keys")
    job = by_kind(docs, "Job")["rel-annotation-platform-migrate"]
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["migrate", "--admin-key-env", "ANNOT_ADMIN_KEY"]
    env = {e["name"]: e for e in container["env"]}
    ref = env["ANNOT_ADMIN_KEY"]["valueFrom"]["secretKeyRef"]
    assert ref["name"] == "platform-keys" and ref["key"] == "admin-key"
    plain = by_kind(render(helm), "Job")["rel-annotation-platform-migrate"]
    assert plain["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"]  # no key configured


def test_calling_services_get_their_own_key_and_only_their_calls_are_open(default, production):
    """The dialog calls selection with its own service key (issue 19, item 4): the key comes from the
    chart's Secret to the dialog server only, and the NetworkPolicies open dialog -> selection and dialog ->
    segmentation (live proposals), no more."""
    secret = by_kind(default, "Secret")["rel-annotation-platform-service-keys"]  # production: the operator's
    token = base64.b64decode(secret["data"]["dialog"]).decode()
    key_id, _, key_secret = token.removeprefix("ak_").partition(".")
    assert token.startswith("ak_") and key_id.isalnum() and len(key_secret) >= 32
    for docs, secret_name in ((default, "rel-annotation-platform-service-keys"),
                              (production, "annotation-service-keys")):
        for name in SERVICES:
            env = {e["name"]: e for c in containers(by_kind(docs, "Deployment")[f"rel-annotation-platform-{name}"])
                   for e in c.get("env", [])}
            if name == "dialog":
                assert env["ANNOT_SERVICE_KEY"]["valueFrom"]["secretKeyRef"] == {"name": secret_name, "key": "dialog"}
            else:
                assert "ANNOT_SERVICE_KEY" not in env, name
    policies = by_kind(default, "NetworkPolicy")
    callers = {name: {peer["podSelector"]["matchLabels"].get("annotation-platform/service")
                      for rule in policies[f"rel-annotation-platform-{name}"]["spec"]["ingress"]
                      for peer in rule.get("from", []) if "podSelector" in peer} - {None} for name in SERVICES}
    assert callers == {name: {"dialog"} if name in ("selection", "segmentation") else set() for name in SERVICES}
    called = {name: {peer.get("podSelector", {}).get("matchLabels", {}).get("annotation-platform/service")
                     for rule in policies[f"rel-annotation-platform-{name}"]["spec"]["egress"]
                     for peer in rule.get("to", [])} - {None} for name in SERVICES}
    assert called == {name: {"selection", "segmentation"} if name == "dialog" else set() for name in SERVICES}
