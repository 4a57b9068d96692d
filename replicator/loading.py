"""Loading the config: the YAML file and the ``REPLICATOR_*`` environment variables (see
:mod:`replicator.core.config` for the spellings). The one place that reads either; parsing and validation are the
core's."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from replicator.core.config import Config, overlay_env, parse_config
from replicator.core.errors import ConfigError


def load_config(path: str | os.PathLike[str] | None, environ: Mapping[str, str] | None = None) -> Config:
    """Read the YAML file (optional), overlay ``REPLICATOR_*`` env vars, validate. Raises ConfigError (one line)."""
    environ = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    if path is not None:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(f"config file {path}: {exc.strerror or exc}") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1} column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or "is not valid YAML"
            raise ConfigError(f"config file {path}{where}: {problem}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(
                f"config file {path}: expected a mapping of sections at the top, got {type(loaded).__name__}"
            )
        data = loaded
    data = overlay_env(data, environ)
    return parse_config(data, source=str(path) if path else "environment")
