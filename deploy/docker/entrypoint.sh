#!/bin/sh
# Entrypoint of the service image: the same commands as the local platform
# (services/cli/local_platform.py), one role per container.
set -eu

SERVICES="selection segmentation byproducts quality dialog video training"

service_arg() {
  for s in $SERVICES; do [ "$s" = "${1:-}" ] && return 0; done
  echo "unknown service '${1:-}': one of $SERVICES" >&2
  exit 64
}

role="${1:-gateway}"
[ "$#" -gt 0 ] && shift
case "$role" in
  server)
    service_arg "${1:-}"
    exec python -m "services.$1.server" ;;
  worker)
    service_arg "${1:-}"
    svc="$1"; shift
    # prometheus_client's multiprocess mode: the pool's children count tasks into files here
    export PROMETHEUS_MULTIPROC_DIR="${PROMETHEUS_MULTIPROC_DIR:-/tmp/prometheus-$svc-worker}"
    exec python -m celery -A "services.$svc.worker:app" worker -Q "$svc" -n "$svc@%h" \
      --without-gossip --without-mingle -l "${ANNOT_LOG_LEVEL:-INFO}" "$@" ;;
  gateway)
    exec python -m services.gateway ;;
  migrate)
    exec annot migrate ;;
  health)
    # grpc.health.v1 of one service on this host (compose healthchecks; exit 0 only when SERVING)
    service_arg "${1:-}"
    exec python - "$1" <<'PY'
import sys, grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from services.common.settings import get_settings
settings = get_settings()
with grpc.insecure_channel(f"127.0.0.1:{settings.grpc_port(sys.argv[1])}") as channel:
    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3)
sys.exit(0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1)
PY
    ;;
  annot)
    exec annot "$@" ;;
  *)
    exec "$role" "$@" ;;
esac
