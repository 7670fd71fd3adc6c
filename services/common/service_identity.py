"""Each service calls other services with its own key, never with the end user's.

A service that calls another (``SERVICE_GRANTS`` in ``keys.py`` lists them with the RPCs each may call)
holds one API key of role ``service``, named ``service:<service>``, stored hashed like every key. Where
the key comes from:

* ``ANNOT_SERVICE_KEY`` (``ak_<id>.<secret>``, e.g. from the Helm chart's Secret, one key per calling
  service): the server imports its hash at start (idempotent; a new secret under the same id rotates it);
* otherwise, outside production, a key made once and kept at ``VAR_DIR/service-keys/<service>.key``
  (mode 0600; ``annot up`` and the test stacks share one VAR_DIR, so every restart reuses it);
* in production without ``ANNOT_SERVICE_KEY`` the server refuses to start.

The end user's identity does not travel with the service's call: the first service checked the user's
key against the project (its interceptor), and the service key acts for any project, but only through
the RPCs granted to it.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from services.common.keys import ALL_PROJECTS, SERVICE_GRANTS, SERVICE_PREFIX, KeyStore, Role
from services.common.settings import Settings

log = logging.getLogger(__name__)


def key_file(settings: Settings, service: str) -> Path:
    return settings.var_dir / "service-keys" / f"{service}.key"


def _kept_token(path: Path) -> str:
    """The token kept in ``path``, made first if there is none (concurrent starters agree on one)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        token = f"ak_{secrets.token_hex(8)}.{secrets.token_urlsafe(32)}"
        draft = path.with_name(f".{path.name}.{os.getpid()}")
        draft.touch(mode=0o600)
        draft.write_text(token + "\n")
        try:
            os.link(draft, path)  # atomic: fails if another process made it first
        except FileExistsError:
            pass
        finally:
            draft.unlink(missing_ok=True)
    return path.read_text().strip()


def provision(keys: KeyStore, settings: Settings, service: str) -> str:
    """The plaintext key ``service`` calls other services with (its hash stored); empty when the
    service calls none."""
    if service not in SERVICE_GRANTS:
        return ""
    token = settings.service_key.get_secret_value().strip()
    if not token:
        if settings.env == "production":
            raise RuntimeError(f"ANNOT_SERVICE_KEY is not set: the {service} service calls other services "
                               "with its own key (the chart's <release>-service-keys Secret holds one)")
        token = _kept_token(key_file(settings, service))
    principal = keys.import_key(token, f"{SERVICE_PREFIX}{service}", Role.SERVICE, [ALL_PROJECTS])
    log.info("service key ready", extra={"service": service, "key_id": principal.key_id})
    return token


def metadata(token: str) -> list[tuple[str, str]]:
    """gRPC call metadata that authenticates a service's own call."""
    return [("authorization", f"Bearer {token}")]
