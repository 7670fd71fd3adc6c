"""Where in a JSON body a value is wrong, as the error envelope's ``field`` says it: ``events[3].click.x``."""

from __future__ import annotations

import math
import re

# protobuf's json_format ends a parse error with the path: "... at EventBatch.events[0].click.x.".
_PROTO_PATH = re.compile(r" at [A-Za-z_][A-Za-z0-9_]*\.([A-Za-z0-9_.\[\]]+?)\.*$")


def non_finite(value, path: str) -> str | None:
    """The path of the first NaN or infinite number under ``value`` (Python's JSON parser reads the
    literals NaN, Infinity and -Infinity), or None."""
    stack = [(value, path)]
    while stack:
        item, at = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return at
        if isinstance(item, dict):
            stack.extend((v, f"{at}.{k}" if at else str(k)) for k, v in reversed(list(item.items())))
        elif isinstance(item, list):
            stack.extend((v, f"{at}[{i}]") for i, v in reversed(list(enumerate(item))))
    return None


def proto_parse_field(message: str, fallback: str) -> str:
    """The field path a protobuf JSON parse error names, else ``fallback``."""
    found = _PROTO_PATH.search(message.strip())
    return found.group(1) if found else fallback
