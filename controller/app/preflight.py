"""What a site file asks of this machine, settled before anything starts.

A site names files the controller reads (its X-ray model, manifest feeds, certificates, a
password file), places it writes (its journal, its command socket, image folders) and
environment variables it takes secrets from. Two rules, for every adapter alike:

* **A relative path is taken from the site file's folder**, never from the working
  directory: ``models/x.onnx`` in ``/etc/cargogate/site.yaml`` is
  ``/etc/cargogate/models/x.onnx`` whoever starts the controller, wherever. This holds for
  defaults too (``store.journal_path``'s ``var/journal.sqlite``). :func:`absolute_paths`
  rewrites the paths a file gives before validation (so a validator that reads a file reads
  the right one); :func:`with_absolute_paths` settles the defaults after it.
* **Every reference is checked** by :func:`machine_problems`: a path setting names a file or
  folder that must exist and be readable, unless it is marked
  :data:`~controller.core.settings.WRITTEN` (then it must exist writable, or be creatable); a
  ``str`` setting whose name ends in ``_env`` names an environment variable that must be set.
  ``cargogate config check`` and ``cargogate run`` list every problem at once, each with its
  path in the file.

The walks read the settings models' field types, so an integrator's adapter gets both rules by
declaring ``Path`` fields and ``*_env`` names; nothing here names an adapter.
"""

from __future__ import annotations

import os
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path, PurePath
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from controller.core.settings import WRITTEN

M = TypeVar("M", bound=BaseModel)
Problem = tuple[str, str, str]
"""(path in the site file, the value, what is wrong), as :class:`ConfigError` lists them."""

ENV_SUFFIX = "_env"
"""A ``str`` setting named ``*_env`` names an environment variable (a secret kept out of the
file)."""


def absolute(path: PurePath, folder: Path) -> Path:
    """``path`` taken from ``folder`` (``..`` folded, symbolic links left alone)."""
    if path.is_absolute():
        return Path(path)
    return Path(os.path.normpath(folder / path))


def absolute_paths(model: type[BaseModel], raw: Mapping[str, Any], folder: Path) -> dict[str, Any]:
    """``raw`` (a document to validate as ``model``) with every relative path that the schema
    types as a path taken from ``folder``; values of other types, and those that do not fit
    the schema, are left for validation to judge."""
    return _document(model, raw, folder)


def with_absolute_paths(model: M, folder: Path) -> M:
    """``model`` with every path still relative (a default) taken from ``folder``."""
    updates = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        settled = _settled(value, folder)
        if settled is not value:
            updates[name] = settled
    return model.model_copy(update=updates) if updates else model


def machine_problems(model: BaseModel) -> list[Problem]:
    """Every file missing or unreadable, place not writable and environment variable unset
    that ``model`` (validated, paths absolute) names, each at its path in the file."""
    problems = []
    for where, name, field, value in _settings(model, ""):
        if isinstance(value, PurePath):
            problem = _written(Path(value)) if _is_written(field) else _read(Path(value))
            if problem:
                problems.append((where, repr(str(value)), problem))
        elif isinstance(value, str) and name.endswith(ENV_SUFFIX) and not os.environ.get(value):
            state = "is empty" if value in os.environ else "is not set"
            problems.append((where, repr(value), f"environment variable {state}"))
    return problems


def _read(path: Path) -> str | None:
    """Why the controller could not read ``path`` (a file or a folder), or None."""
    try:
        path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return "no such file or folder"
    except OSError as exc:
        return f"cannot be reached: {exc.strerror or exc}"
    if not os.access(path, os.R_OK):
        return "not readable by this user"
    return None


def _written(path: Path) -> str | None:
    """Why the controller could not make or write ``path``, or None."""
    existing = path
    while not os.path.lexists(existing) and existing.parent != existing:
        existing = existing.parent
    if existing == path:
        return None if os.access(path, os.W_OK) else "not writable by this user"
    if not existing.is_dir():
        return f"cannot be made: {existing} is not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"cannot be made: {existing} is not writable by this user"
    return None


def _is_written(field: FieldInfo) -> bool:
    return WRITTEN in field.metadata or _marked(field.annotation)


def _marked(annotation: Any) -> bool:
    if typing.get_origin(annotation) is Annotated:
        return WRITTEN in annotation.__metadata__ or _marked(typing.get_args(annotation)[0])
    return any(_marked(arg) for arg in typing.get_args(annotation))


Setting = tuple[str, str, FieldInfo, object]
"""(path in the file, field name, field, value) of one setting."""


def _settings(model: BaseModel, prefix: str) -> Iterator[Setting]:
    """Every setting in ``model``, nested models, lists and mappings opened."""
    for name, field in type(model).model_fields.items():
        yield from _values(f"{prefix}{name}", name, field, getattr(model, name))


def _values(where: str, name: str, field: FieldInfo, value: object) -> Iterator[Setting]:
    if isinstance(value, BaseModel):
        yield from _settings(value, f"{where}.")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _values(f"{where}.{key}", name, field, item)
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _values(f"{where}.{i}", name, field, item)
    else:
        yield where, name, field, value


def _settled(value: Any, folder: Path) -> Any:
    """``value`` with its relative paths taken from ``folder``; itself when none were."""
    if isinstance(value, PurePath):
        return value if value.is_absolute() else absolute(value, folder)
    if isinstance(value, BaseModel):
        return with_absolute_paths(value, folder)
    if isinstance(value, list | tuple):
        items = [_settled(item, folder) for item in value]
        changed = any(new is not old for new, old in zip(items, value, strict=True))
        return type(value)(items) if changed else value
    if isinstance(value, dict):
        settled = {key: _settled(item, folder) for key, item in value.items()}
        changed = any(settled[key] is not item for key, item in value.items())
        return settled if changed else value
    return value


def _document(model: type[BaseModel], raw: Mapping[str, Any], folder: Path) -> dict[str, Any]:
    out = dict(raw)
    for name, field in model.model_fields.items():
        key = field.alias or name
        if key in out:
            out[key] = _node(field.annotation, out[key], folder)
    return out


def _node(annotation: Any, value: Any, folder: Path) -> Any:
    """``value`` as the file gives it, its paths absolute where ``annotation`` types a path."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Annotated:
        return _node(args[0], value, folder)
    if isinstance(annotation, type) and issubclass(annotation, PurePath):
        return str(absolute(Path(value), folder)) if isinstance(value, str) else value
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _document(annotation, value, folder) if isinstance(value, Mapping) else value
    if origin is typing.Union or origin is types.UnionType:
        return _node(_member(args, value), value, folder)
    if isinstance(value, list) and args:
        if origin in (list, set, frozenset, Sequence):
            return [_node(args[0], item, folder) for item in value]
        if origin is tuple:
            item_types = args[:1] * len(value) if args[-1:] == (...,) else args
            return [_node(t, item, folder) for t, item in zip(item_types, value, strict=False)]
    if isinstance(value, Mapping) and origin in (dict, Mapping) and len(args) == 2:
        return {key: _node(args[1], item, folder) for key, item in value.items()}
    return value


def _member(members: tuple[Any, ...], value: Any) -> Any:
    """The member of a union that ``value`` is written for: the settings model whose ``type``
    it names (an adapter slot), else the one model, or the one other type, among them."""
    bare = [_bare(m) for m in members if m is not type(None)]
    models = [m for m in bare if isinstance(m, type) and issubclass(m, BaseModel)]
    if isinstance(value, Mapping):
        tagged = [m for m in models if value.get("type") in _tags(m)]
        if tagged:
            return tagged[0]
        return models[0] if len(models) == 1 else None
    others = [m for m in bare if m not in models]
    return others[0] if len(others) == 1 else None


def _bare(annotation: Any) -> Any:
    """``annotation`` without its ``Annotated`` wrappers."""
    while typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _tags(model: type[BaseModel]) -> tuple[object, ...]:
    """The values of ``model``'s ``type: Literal[...]`` field (an adapter's type key)."""
    declared = model.model_fields.get("type")
    if declared is None or typing.get_origin(declared.annotation) is not Literal:
        return ()
    return typing.get_args(declared.annotation)
