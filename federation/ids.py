"""The identifiers every layer passes around, checked in one place.

Why one module: a job id, a model name or a node id ends up in file names, audit records, MLflow
tags and certificates. Eleven copies of the same regular expression drifted apart before; one
definition keeps "is this a safe name" the same answer everywhere (and never a path).
"""

from __future__ import annotations

import re

__all__ = [
    "NAME_PATTERN",
    "NODE_ID_PATTERN",
    "is_name",
    "is_node_id",
    "name_problem",
    "short",
]

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
"""Job ids, model names, blob ids, alignment ids: 1-128 letters, digits, '.', '_' or '-', not
starting with a dot (so never '..', never a path)."""

NODE_ID_PATTERN = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
"""Node ids are DNS labels: they name certificates (SAN DNSName), folders and peers."""


def is_name(value: object) -> bool:
    """``value`` is a safe identifier (see ``NAME_PATTERN``)."""
    return isinstance(value, str) and NAME_PATTERN.fullmatch(value) is not None


def is_node_id(value: object) -> bool:
    """``value`` is a DNS label usable as a node id."""
    return isinstance(value, str) and NODE_ID_PATTERN.fullmatch(value) is not None


def short(value: object, limit: int = 40) -> str:
    """``repr`` of a peer-supplied value cut to ``limit`` characters: errors and logs name a bad
    value without echoing a huge one back."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 1]}… ({len(str(value))} chars)"


def name_problem(value: object, what: str) -> str | None:
    """Why ``value`` cannot be a ``what`` (e.g. "job id"), or ``None`` if it can."""
    if not isinstance(value, str) or not value:
        return f"{what} is empty"
    if not is_name(value):
        return (
            f"{what} {short(value)} must be 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return None
