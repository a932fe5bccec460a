"""params.yaml's problems in the pipeline's words: validation of a section that collects every problem (each
offending key falls back to its default), and pydantic's errors turned into one line per dotted key
(`train.learning_rate: expected a number > 0, got -1`)."""
from __future__ import annotations

import types
import typing
from typing import Annotated, Any, Union

from pydantic import BaseModel, ValidationError


class ParamsError(ValueError):
    """A params.yaml problem; the message always starts with the dotted key."""


class KeyedError(ValueError):
    """Raised by a section's cross-field check: `key` is relative to the section ("" for the section itself)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key, self.message = key, message


def build(cls: type[BaseModel], data: Any, key: str, errors: list[str] | None = None) -> Any:
    """Validate `data` as `cls`; `key` is the dotted prefix of its messages. With `errors`, every problem is
    appended there and the offending keys fall back to their defaults; otherwise the first is raised."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ParamsError(f"{key or 'params'}: expected a mapping, got {type(data).__name__}")
    data = copy_tree(data)
    seen: list[str] = []
    for _ in range(100):  # each pass removes at least one offending key
        try:
            result = cls.model_validate(data)
        except ValidationError as e:
            problems = messages(e, cls, key)
            if errors is None:
                raise ParamsError(problems[0][1]) from None
            for path, text in problems:
                if text not in seen:
                    seen.append(text)
                remove_key(data, path)
            continue
        if errors is not None:
            errors.extend(seen)
        return result
    if errors is not None:  # pragma: no cover - a problem that removal cannot clear
        errors.extend(seen)
    return cls()


def copy_tree(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: copy_tree(x) for k, x in v.items()}
    if isinstance(v, list):
        return [copy_tree(x) for x in v]
    return v


def remove_key(data: dict, path: list[str]) -> None:
    """Drop the value at `path` (field names), so that the key falls back to its default."""
    node: Any = data
    for name in path[:-1]:
        node = node.get(name) if isinstance(node, dict) else None
    if not path:
        data.clear()
    elif isinstance(node, dict):
        node.pop(path[-1], None)


def messages(error: ValidationError, cls: type[BaseModel], prefix: str) -> list[tuple[list[str], str]]:
    """pydantic's errors as (field path to remove, "dotted.key: what is wrong") in the pipeline's words; the
    alternatives of a union (`max_length`: an integer or "auto") are joined into one message."""
    grouped: dict[str, tuple[list[str], list[str]]] = {}
    for err in error.errors():
        fields, shown, owner = walk(cls, err["loc"])
        ctx = err.get("ctx") or {}
        if isinstance(ctx.get("error"), KeyedError):
            ke = ctx["error"]
            fields = fields + [ke.key.split(".")[0].split("[")[0]] if ke.key else fields
            shown = ".".join(x for x in (shown, ke.key) if x)
            text = ke.message
        else:
            text = phrase(err, owner)
        key = ".".join(x for x in (prefix, shown) if x) or "params"
        path, texts = grouped.setdefault(key, (fields, []))
        if text not in texts:
            texts.append(text)
    out = []
    for key, (path, texts) in grouped.items():
        tails = {t.rsplit(", got ", 1)[-1] for t in texts}
        if len(texts) > 1 and len(tails) == 1 and all(", got " in t for t in texts):
            texts = [t.rsplit(", got ", 1)[0] for t in texts]
            texts[-1] += f", got {tails.pop()}"
        out.append((path, f"{key}: {' or '.join(texts)}"))
    return out


def unwrap(tp: Any) -> Any:
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def walk(cls: type[BaseModel], loc: tuple) -> tuple[list[str], str, type[BaseModel]]:
    """The field path (to remove), the dotted key (to show) and the model whose key the location ends in, of a
    pydantic error location; union member tags are skipped, list indices shown as [i]."""
    tp: Any = cls
    owner: type[BaseModel] = cls
    fields: list[str] = []
    shown = ""
    in_list = False
    for part in loc:
        tp = unwrap(tp)
        origin = typing.get_origin(tp)
        if origin in (Union, types.UnionType):
            members = [unwrap(a) for a in typing.get_args(tp) if a is not type(None)]
            lists = [a for a in members if typing.get_origin(a) is list]
            tp = lists[0] if lists and str(part).startswith("list") else members[0]
            continue
        if isinstance(tp, type) and issubclass(tp, BaseModel) and isinstance(part, str):
            if not in_list:
                fields.append(part)
            shown = f"{shown}.{part}" if shown else part
            owner = tp
            tp = tp.model_fields[part].annotation if part in tp.model_fields else Any
        elif origin is list and isinstance(part, int):
            shown += f"[{part}]"
            in_list = True  # removing the whole list falls back to its default
            tp = typing.get_args(tp)[0]
        elif origin is dict:
            shown = f"{shown}.{part}"
            in_list = True
            tp = typing.get_args(tp)[1]
        else:
            continue
    return fields, shown, owner


BOUNDS = {"greater_than_equal": ("ge", ">="), "greater_than": ("gt", ">"), "less_than_equal": ("le", "<="),
           "less_than": ("lt", "<")}


TYPES = {"int": "an integer", "float": "a number", "bool": "true or false", "string": "a string",
          "list": "a list", "dict": "a mapping", "model": "a mapping", "model_attributes": "a mapping"}


def phrase(err: dict, owner: type[BaseModel]) -> str:
    error_type, got = err["type"], err.get("input")
    ctx = err.get("ctx") or {}
    if error_type == "extra_forbidden":
        return f"unknown key (known keys: {', '.join(sorted(owner.model_fields))})"
    if error_type in BOUNDS:
        name, sym = BOUNDS[error_type]
        return f"expected a number {sym} {ctx[name]:g}, got {got!r}"
    if error_type == "literal_error":
        choices = str(ctx.get("expected", "")).replace(" or ", ", ")
        return f"expected one of [{choices}], got {got!r}"
    if error_type == "missing":
        return "required"
    base = error_type.rsplit("_", 1)[0] if error_type.endswith(("_type", "_parsing", "_from_float")) else error_type
    base = {"int_from": "int"}.get(base, base)
    if base in TYPES:
        return f"expected {TYPES[base]}, got {got!r}"
    return f"{err['msg']}, got {got!r}"
