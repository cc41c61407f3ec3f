"""Pydantic's validation errors on a config file, as one friendly ConfigError naming the key path."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from jml.config_connectors import AwsConnectorConfig, GithubConnectorConfig, ScimConnectorConfig, SlackConnectorConfig
from jml.errors import ConfigError


def _key_path(loc: tuple[Any, ...]) -> str:
    # pydantic puts the discriminator tag in the location of union members: drop it.
    parts = [str(p) for p in loc if p not in ("scim", "aws_identity_center", "github", "slack")]
    return ".".join(parts)


def _friendly(err: dict[str, Any]) -> str:
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    if kind == "union_tag_invalid":
        return "unknown connector type (use scim, aws_identity_center, github or slack)"
    if kind == "union_tag_not_found":
        return "missing `type` (scim, aws_identity_center, github or slack)"
    msg = str(err.get("msg", "invalid value"))
    return msg.removeprefix("Value error, ")


_TAGS = {"scim": ScimConnectorConfig, "aws_identity_center": AwsConnectorConfig,
         "github": GithubConnectorConfig, "slack": SlackConnectorConfig}


def _known_keys(loc: tuple[Any, ...], root: type[BaseModel]) -> list[str]:
    """The keys the model at `loc` (a pydantic error location, without its last part) takes."""
    import types
    import typing

    current: Any = root
    pending_dict = False
    for part in loc:
        if pending_dict:  # a mapping's key (a connector's name): its value type follows
            pending_dict = False
            continue
        if isinstance(part, int):
            continue
        if part in _TAGS:
            current = _TAGS[part]
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)) or part not in current.model_fields:
            return []
        ann: Any = current.model_fields[part].annotation
        while True:
            origin = typing.get_origin(ann)
            if origin is typing.Annotated:
                ann = typing.get_args(ann)[0]
            elif origin in (typing.Union, types.UnionType):
                models = [a for a in typing.get_args(ann) if isinstance(a, type) and issubclass(a, BaseModel)]
                others = [a for a in typing.get_args(ann) if a is not type(None)]
                ann = models[0] if len(models) == 1 else (others[0] if len(others) == 1 else Any)
                if len(models) > 1:
                    break  # a connector union: the tag in the location picks the model
            elif origin is dict:
                ann = typing.get_args(ann)[1]
                pending_dict = True
            elif origin is list:
                ann = typing.get_args(ann)[0]
            else:
                break
        current = ann
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [k for k in current.model_fields if k != "base_dir"]
    return []


def _unknown_key(loc: tuple[Any, ...], root: type[BaseModel]) -> str:
    import difflib

    path = _key_path(loc)
    near = difflib.get_close_matches(str(loc[-1]), _known_keys(loc[:-1], root), n=1, cutoff=0.6)
    if near:
        parent = _key_path(loc[:-1])
        return f"{path}: unknown key (did you mean {parent + '.' if parent else ''}{near[0]}?)"
    return f"{path}: unknown key"


def config_error(e: ValidationError, root: type[BaseModel]) -> ConfigError:
    """The one ConfigError for what pydantic found wrong in a file validated as `root`."""
    errors = e.errors()
    unknown = [err for err in errors if err.get("type") == "extra_forbidden"]
    if unknown:
        # Every unknown key at once, each with its nearest known key: one round trip to fix a file.
        parts = [_unknown_key(tuple(err["loc"]), root) for err in unknown]
        if len(parts) == 1:
            path = _key_path(tuple(unknown[0]["loc"]))
            return ConfigError(parts[0].removeprefix(f"{path}: "), path)
        return ConfigError(f"{len(parts)} unknown keys: " + "; ".join(parts))
    first = errors[0]
    return ConfigError(_friendly(dict(first)), _key_path(first["loc"]) or "(top level)")
