"""``python -m services.gateway``: serve the gateway with uvicorn on the configured address."""

import uvicorn

from services.common.logs import configure_logging
from services.common.settings import get_settings
from services.gateway.app import create_app

settings = get_settings()
configure_logging("gateway", settings)
uvicorn.run(create_app(settings), host=settings.host, port=settings.gateway_port, log_config=None,
            timeout_graceful_shutdown=int(settings.grpc_grace_s))
