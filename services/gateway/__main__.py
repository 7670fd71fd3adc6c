"""``python -m services.gateway``: serve the gateway with uvicorn on the configured address."""

import uvicorn
from prometheus_client import start_http_server

from services.common.logs import configure_logging
from services.common.settings import get_settings
from services.gateway.app import create_app

settings = get_settings()
configure_logging("gateway", settings)
start_http_server(settings.gateway_metrics_port, addr=settings.host)
uvicorn.run(create_app(settings), host=settings.host, port=settings.gateway_port, log_config=None,
            timeout_graceful_shutdown=int(settings.grpc_grace_s))
