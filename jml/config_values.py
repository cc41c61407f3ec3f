"""What config models are built from: the strict model base, durations, and secrets read from env or files."""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict

from jml.errors import ConfigError
from jml.redact import register_secret

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


def parse_duration(value: Any) -> dt.timedelta:
    """'90s', '5m', '1h', '30d' or a number of seconds."""
    if isinstance(value, dt.timedelta):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return dt.timedelta(seconds=float(value))
    m = _DURATION.match(str(value))
    if not m:
        raise ValueError(f"not a duration: {value!r} (use e.g. 90s, 5m, 1h, 30d)")
    return dt.timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])


Duration = Annotated[dt.timedelta, BeforeValidator(parse_duration)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _SecretFile:
    """A secret read from a file, re-read when its mtime changes (rotation)."""

    _cache: dict[Path, tuple[float, str]] = {}

    @classmethod
    def read(cls, path: Path, key: str) -> str:
        try:
            mtime = path.stat().st_mtime
            cached = cls._cache.get(path)
            if cached and cached[0] == mtime:
                return cached[1]
            value = path.read_text(encoding="utf-8").strip()
        except OSError as e:
            raise ConfigError(f"cannot read secret file {path}: {e.strerror}", key) from None
        cls._cache[path] = (mtime, value)
        register_secret(value)
        return value


def resolve_secret(model: BaseModel, name: str, path: str, *, required: bool = True) -> str | None:
    """The value of secret `name` of `model` (from `name_env` or `name_file`).

    `path` is the model's key path, for the error message.
    """
    env_key = getattr(model, f"{name}_env", None)
    file_key = getattr(model, f"{name}_file", None)
    if file_key:
        return _SecretFile.read(Path(file_key), f"{path}.{name}_file")
    if env_key:
        value = os.environ.get(env_key)
        if not value:
            raise ConfigError(f"environment variable {env_key} is not set", f"{path}.{name}_env")
        register_secret(value)
        return value
    if required:
        raise ConfigError(f"missing secret: set {name}_env or {name}_file", path)
    return None
