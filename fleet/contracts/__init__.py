"""MQTT payload contracts: JSON Schemas and fixtures shared with the C agent.

The schemas in ``mqtt/v1/`` are the single definition of every payload; this
module compiles each validator once (they are used on the ingest hot path) and
turns jsonschema's errors into one ``ContractError`` naming the offending
JSON path, so logs and API errors tell the sender exactly what is wrong.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import best_match
from referencing import Registry, Resource

from .fastcheck import Compiler, Unsupported

__all__ = ["NAMES", "ContractError", "fixtures", "is_valid", "schema", "validate", "validator"]

VERSION = "v1"
NAMES = (
    "status",
    "state",
    "events",
    "telemetry",
    "cmd-result",
    "cmd-grant",
    "cmd-revoke",
    "cmd-reboot",
    "cmd-port-power",
    "cmd-config",
    "cmd-ota",
)

# Only the formats our schemas use: jsonschema's full checker would also try
# optional formats whose dependencies may or may not be installed, making
# validation depend on the environment.
_FORMATS = FormatChecker(formats=("ipv4", "ipv6"))


class ContractError(ValueError):
    """A payload does not satisfy its contract; ``message`` starts with the JSON path."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message


def _root():
    return resources.files(__name__).joinpath("mqtt", VERSION)


def _check_name(name: str) -> None:
    if name not in NAMES:
        raise KeyError(f"unknown contract {name!r}; known: {', '.join(NAMES)}")


@cache
def _registry() -> Registry:
    resources_ = []
    for name in NAMES:
        doc = json.loads(_root().joinpath(f"{name}.schema.json").read_text("utf-8"))
        resources_.append((doc["$id"], Resource.from_contents(doc)))
    return Registry().with_resources(resources_)


def schema(name: str) -> dict[str, Any]:
    """The JSON Schema document of contract ``name`` (a fresh copy)."""
    _check_name(name)
    return json.loads(_root().joinpath(f"{name}.schema.json").read_text("utf-8"))


@cache
def validator(name: str) -> Draft202012Validator:
    """The compiled validator of ``name``; cached so it is built once per process."""
    _check_name(name)
    return Draft202012Validator(schema(name), registry=_registry(), format_checker=_FORMATS)


@cache
def _documents() -> dict[str, dict[str, Any]]:
    return {doc["$id"]: doc for doc in (schema(n) for n in NAMES)}


@cache
def fast_check(name: str):
    """A compiled check that is True only for valid instances, or None if ``name`` cannot be compiled."""
    _check_name(name)
    try:
        return Compiler(_documents().__getitem__, _FORMATS).compile(schema(name))
    except Unsupported:
        return None


def is_valid(name: str, obj: Any) -> bool:
    fast = fast_check(name)
    if fast is not None and fast(obj):
        return True
    return validator(name).is_valid(obj)


def json_path(path) -> str:
    out = "$"
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def validate(name: str, obj: Any) -> None:
    """Raise ``ContractError`` unless ``obj`` satisfies contract ``name``."""
    fast = fast_check(name)
    if fast is not None and fast(obj):
        return
    error = best_match(validator(name).iter_errors(obj))
    if error is not None:
        raise ContractError(name, f"{json_path(error.absolute_path)}: {error.message}")


def fixtures(name: str, valid: bool = True) -> Iterator[tuple[str, Any]]:
    """Yield ``(case, document)`` for the example fixtures of ``name``, sorted by case.

    Valid fixtures live in ``fixtures/<name>.<case>.json``; invalid ones in
    ``fixtures/invalid/<name>.<case>.json`` whose case name says what is wrong.
    """
    _check_name(name)
    folder = _root().joinpath("fixtures")
    entries = list((folder if valid else folder.joinpath("invalid")).iterdir())
    prefix = f"{name}."
    for entry in sorted(entries, key=lambda e: e.name):
        fname = entry.name
        if not (fname.startswith(prefix) and fname.endswith(".json")):
            continue
        case = fname[len(prefix) : -len(".json")]
        # "cmd-result.x" must not be picked up as a case of a hypothetical "cmd"
        if "." in case:
            continue
        yield case, json.loads(entry.read_text("utf-8"))
