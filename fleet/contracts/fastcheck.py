"""A compiled "is this certainly valid?" check for the hot ingest path.

jsonschema interprets a schema on every call (~0.9 ms for one telemetry
message here), which alone would cap ingestion near 1,000 msg/s. This module
compiles the keywords our schemas use into nested closures. It is deliberately
conservative: it may answer False for an exotic instance the schema accepts
(a float 1.0 for ``"const": 1``, a tuple for an array), never True for an
instance the schema rejects. ``fleet.contracts.validate`` therefore trusts a
True and asks jsonschema whenever the answer is False, both for the verdict
and for the error message. Tests cross-check both against mutated fixtures.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from jsonschema import FormatChecker

Check = Callable[[Any], bool]

# Keywords that only annotate; they never make an instance invalid.
_ANNOTATIONS = {"$schema", "$id", "$comment", "$defs", "title", "description", "default", "examples"}


class Unsupported(Exception):
    """The schema uses a keyword this compiler does not know; use jsonschema alone."""


def _is_int(x: Any) -> bool:
    return type(x) is int


def _is_num(x: Any) -> bool:
    return type(x) is int or type(x) is float


_TYPES: dict[str, Check] = {
    "object": lambda x: type(x) is dict,
    "array": lambda x: type(x) is list,
    "string": lambda x: type(x) is str,
    "integer": _is_int,
    "number": _is_num,
    "boolean": lambda x: type(x) is bool,
    "null": lambda x: x is None,
}

# The exact Python classes each JSON type decodes to, so a type union is one set lookup
# (bool is not int here: JSON Schema keeps true apart from 1).
_PY_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


def _same(a: Any, b: Any) -> bool:
    """Equality that never confuses True with 1 (stricter than JSON Schema: 1.0 != 1)."""
    if type(a) is not type(b):
        return False
    if type(a) is list:
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is dict:
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


def _all_of(checks: list[Check]) -> Check:
    if not checks:
        return lambda x: True
    if len(checks) == 1:
        return checks[0]
    if len(checks) == 2:
        a, b = checks
        return lambda x: a(x) and b(x)
    checks_t = tuple(checks)

    def conj(x: Any) -> bool:
        for c in checks_t:
            if not c(x):
                return False
        return True

    return conj


class Compiler:
    def __init__(self, resolve: Callable[[str], dict], formats: FormatChecker) -> None:
        self.resolve = resolve  # "$id" -> schema document
        self.formats = formats
        self.refs: dict[str, Check] = {}

    def compile(self, doc: dict) -> Check:
        return self._schema(doc, doc)

    def _ref(self, ref: str, root: dict) -> Check:
        base, _, pointer = ref.partition("#")
        target_root = root if not base else self.resolve(base)
        key = f"{target_root.get('$id')}#{pointer}"
        if key not in self.refs:
            node: Any = target_root
            for part in filter(None, pointer.split("/")):
                node = node[part.replace("~1", "/").replace("~0", "~")]
            self.refs[key] = lambda x: False  # placeholder; our schemas are not recursive
            self.refs[key] = self._schema(node, target_root)
        return self.refs[key]

    def _schema(self, s: Any, root: dict) -> Check:
        if s is True:
            return lambda x: True
        if s is False:
            return lambda x: False
        unknown = (
            set(s)
            - _ANNOTATIONS
            - {
                "type",
                "const",
                "enum",
                "required",
                "properties",
                "additionalProperties",
                "items",
                "minItems",
                "maxItems",
                "minimum",
                "maximum",
                "minLength",
                "maxLength",
                "pattern",
                "format",
                "$ref",
                "anyOf",
                "allOf",
                "if",
                "then",
                "else",
            }
        )
        if unknown:
            raise Unsupported(", ".join(sorted(unknown)))
        special = self._special(s, root)
        if special is not None:
            return special
        checks: list[Check] = []
        if "$ref" in s:
            checks.append(self._ref(s["$ref"], root))
        if "type" in s:
            types = s["type"] if isinstance(s["type"], list) else [s["type"]]
            if len(types) == 1:
                checks.append(_TYPES[types[0]])
            else:
                allowed = frozenset(c for t in types for c in _PY_TYPES[t])
                checks.append(lambda x: type(x) in allowed)
        if "const" in s:
            checks.append(lambda x, c=s["const"]: _same(x, c))
        if "enum" in s:
            values = s["enum"]
            if all(type(v) is str for v in values):
                checks.append(lambda x, vs=frozenset(values): type(x) is str and x in vs)
            else:
                checks.append(lambda x, vs=values: any(_same(x, v) for v in vs))
        checks += self._numeric(s) + self._string(s) + self._array(s, root) + self._object(s, root)
        for sub in s.get("allOf", ()):
            checks.append(self._schema(sub, root))
        if "anyOf" in s:
            subs = tuple(self._schema(sub, root) for sub in s["anyOf"])

            def any_of(x: Any) -> bool:
                for f in subs:
                    if f(x):
                        return True
                return False

            checks.append(any_of)
        if "if" in s:
            cond = self._schema(s["if"], root)
            then = self._schema(s.get("then", True), root)
            other = self._schema(s.get("else", True), root)
            checks.append(lambda x: then(x) if cond(x) else other(x))
        return _all_of(checks)

    def _special(self, s: dict, root: dict) -> Check | None:
        """Single closures for the shapes that dominate our schemas (counters, typed objects/arrays)."""
        keys = set(s) - _ANNOTATIONS
        if s.get("type") == "integer" and keys <= {"type", "minimum", "maximum"}:
            lo, hi = s.get("minimum"), s.get("maximum")
            if lo is not None and hi is not None:
                return lambda x: type(x) is int and lo <= x <= hi
            if lo is not None:
                return lambda x: type(x) is int and x >= lo
            if hi is not None:
                return lambda x: type(x) is int and x <= hi
            return _is_int
        if s.get("type") == "object" and keys <= {"type", "required", "properties", "additionalProperties"}:
            req = tuple(s.get("required", ()))
            props = tuple((k, self._schema(v, root)) for k, v in s.get("properties", {}).items())
            extra = self._schema(s["additionalProperties"], root) if "additionalProperties" in s else None
            known = frozenset(k for k, _ in props)

            def obj(x: Any) -> bool:
                if type(x) is not dict:
                    return False
                for k in req:
                    if k not in x:
                        return False
                for k, c in props:
                    if k in x and not c(x[k]):
                        return False
                if extra is not None:
                    for k, v in x.items():
                        if k not in known and not extra(v):
                            return False
                return True

            return obj
        if s.get("type") == "array" and keys <= {"type", "items", "minItems", "maxItems"}:
            item = self._schema(s.get("items", True), root)
            lo, hi = s.get("minItems", 0), s.get("maxItems")

            def arr(x: Any) -> bool:
                if type(x) is not list or len(x) < lo or (hi is not None and len(x) > hi):
                    return False
                for v in x:
                    if not item(v):
                        return False
                return True

            return arr
        return None

    @staticmethod
    def _numeric(s: dict) -> list[Check]:
        out: list[Check] = []
        if "minimum" in s:
            out.append(lambda x, m=s["minimum"]: not _is_num(x) or x >= m)
        if "maximum" in s:
            out.append(lambda x, m=s["maximum"]: not _is_num(x) or x <= m)
        return out

    def _string(self, s: dict) -> list[Check]:
        out: list[Check] = []
        if "minLength" in s:
            out.append(lambda x, n=s["minLength"]: type(x) is not str or len(x) >= n)
        if "maxLength" in s:
            out.append(lambda x, n=s["maxLength"]: type(x) is not str or len(x) <= n)
        if "pattern" in s:
            search = re.compile(s["pattern"]).search
            out.append(lambda x: type(x) is not str or search(x) is not None)
        if "format" in s:
            if s["format"] not in self.formats.checkers:
                raise Unsupported(f"format {s['format']}")
            out.append(lambda x, f=s["format"]: type(x) is not str or self.formats.conforms(x, f))
        return out

    def _array(self, s: dict, root: dict) -> list[Check]:
        out: list[Check] = []
        if "minItems" in s:
            out.append(lambda x, n=s["minItems"]: type(x) is not list or len(x) >= n)
        if "maxItems" in s:
            out.append(lambda x, n=s["maxItems"]: type(x) is not list or len(x) <= n)
        if "items" in s:
            item = self._schema(s["items"], root)
            out.append(lambda x: type(x) is not list or all(item(v) for v in x))
        return out

    def _object(self, s: dict, root: dict) -> list[Check]:
        out: list[Check] = []
        if "required" in s:
            req = tuple(s["required"])
            out.append(lambda x: type(x) is not dict or all(k in x for k in req))
        props = {k: self._schema(v, root) for k, v in s.get("properties", {}).items()}
        if props:
            items = tuple(props.items())
            out.append(lambda x: type(x) is not dict or all(k not in x or f(x[k]) for k, f in items))
        if "additionalProperties" in s:
            extra = self._schema(s["additionalProperties"], root)
            known = frozenset(props)
            out.append(lambda x: type(x) is not dict or all(extra(v) for k, v in x.items() if k not in known))
        return out
