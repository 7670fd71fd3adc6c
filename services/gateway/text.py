"""Text that one person types and the platform shows to others: project names, labels, key names.

Checked on input (422 naming the field): bounded length, no control characters (C0, C1, DEL), no
bidirectional overrides or isolates (which reorder what a reviewer reads), no line or paragraph
separators, no lone surrogates (PostgreSQL cannot store them). A label is also non-blank. The page
still renders every such value as text, never as HTML (static/*.js); this is the second line.
"""

from __future__ import annotations

import unicodedata
from typing import Annotated

from pydantic import AfterValidator, Field

NAME_MAX = 200  # gateway_projects.name, api_keys.name
LABEL_MAX = 100  # gateway_annotations.label is 200
LABELS_MAX = 1000
# Bidi embeddings/overrides (U+202A-U+202E), isolates (U+2066-U+2069), line/paragraph separators.
_FORBIDDEN = {chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x2028, 0x2029)}


def refusal(value: str) -> str | None:
    """Why ``value`` is not fit to show, or None."""
    for index, char in enumerate(value):
        category = unicodedata.category(char)
        if category == "Cc":
            return f"control character U+{ord(char):04X} at position {index}"
        if category == "Cs":
            return f"lone surrogate U+{ord(char):04X} at position {index}"
        if char in _FORBIDDEN:
            return f"formatting character U+{ord(char):04X} at position {index} (bidirectional override or separator)"
    return None


def _shown(value: str) -> str:
    why = refusal(value)
    if why is not None:
        raise ValueError(f"not allowed in a name: {why}")
    return value


def _label(value: str) -> str:
    _shown(value)
    if not value.strip():
        raise ValueError("a label must not be blank")
    return value


def _distinct(labels: list[str]) -> list[str]:
    seen: set[str] = set()
    for label in labels:
        if label in seen:
            raise ValueError(f"label {label!r} is given twice")
        seen.add(label)
    return labels


DisplayName = Annotated[str, Field(max_length=NAME_MAX), AfterValidator(_shown)]
Label = Annotated[str, Field(min_length=1, max_length=LABEL_MAX), AfterValidator(_label)]
LabelList = Annotated[list[Label], Field(min_length=1, max_length=LABELS_MAX), AfterValidator(_distinct)]
# A label a request names (a session's, a finish's): empty means "the default" (the session's label, else the
# project's first); checked against the project's labels by the route.
LabelChoice = Annotated[str, Field(max_length=LABEL_MAX), AfterValidator(_shown)]
