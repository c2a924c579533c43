"""The rule configuration ``init`` receives: TOML, or JSON when it starts with ``{``."""

from __future__ import annotations

import json
import tomllib
from typing import Any, Dict


class ConfigError(ValueError):
    """The configuration text is neither valid TOML nor (starting with ``{``) valid JSON. Its
    message starts with ``config (TOML): `` or ``config (JSON): `` and one line long, as the
    host shows a module's text on one line."""


def parse_config(text: str) -> Dict[str, Any]:
    """The configuration as a dict: ``{}`` for empty text, JSON when the text starts with
    ``{``, TOML otherwise (the same rule as the Rust examples).

    >>> parse_config('[tenant_columns]\\nitems = "org_id"')
    {'tenant_columns': {'items': 'org_id'}}
    >>> parse_config('{"tenant_columns": {"items": "org_id"}}')
    {'tenant_columns': {'items': 'org_id'}}
    >>> parse_config("  ")
    {}

    Raises :class:`ConfigError`.
    """
    stripped = text.strip()
    if not stripped:
        return {}
    if stripped.startswith("{"):
        try:
            parsed = json.loads(stripped)
        except json.JSONDecodeError as error:
            raise ConfigError(f"config (JSON): {error}") from None
        return parsed
    try:
        return tomllib.loads(stripped)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config (TOML): {error}") from None
