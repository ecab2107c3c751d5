"""The compiled fast check must never accept what the schema rejects, and must accept the real traffic."""

from __future__ import annotations

import copy
import json

import pytest

from fleet import contracts
from fleet.contracts.fastcheck import Compiler, Unsupported

REPLACEMENTS = [
    None,
    True,
    False,
    0,
    -1,
    1,
    255,
    256,
    65536,
    1.5,
    1.0,
    2**70,
    "",
    "x",
    "1-1",
    "1-01",
    "127.0.0.1",
    "::1",
    "127.0.0.1:3240",
    "esp-a1b2c3d4e5f6",
    [],
    ["127.0.0.1"],
    {},
    {"a": 1},
]


def mutations(doc):
    """Every single-point change of ``doc``: each value replaced, each key dropped, each list emptied."""

    def walk(node, path):
        yield path
        if isinstance(node, dict):
            for k, v in node.items():
                yield from walk(v, (*path, k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                yield from walk(v, (*path, i))

    for path in list(walk(doc, ())):
        for value in REPLACEMENTS:
            m = copy.deepcopy(doc)
            if not path:
                yield value
                continue
            parent = m
            for p in path[:-1]:
                parent = parent[p]
            parent[path[-1]] = value
            yield m
        if path and isinstance(path[-1], str):
            m = copy.deepcopy(doc)
            parent = m
            for p in path[:-1]:
                parent = parent[p]
            del parent[path[-1]]
            yield m


FAST = [n for n in contracts.NAMES if contracts.fast_check(n) is not None]


def test_the_hot_contracts_are_compiled():
    assert {"status", "state", "events", "telemetry", "cmd-result"} <= set(FAST)


@pytest.mark.parametrize("name", FAST)
def test_fast_check_accepts_every_valid_fixture(name):
    for case, doc in contracts.fixtures(name):
        assert contracts.fast_check(name)(doc), case


@pytest.mark.parametrize("name", FAST)
def test_fast_check_is_sound_and_agrees_on_json_input(name):
    fast = contracts.fast_check(name)
    slow = contracts.validator(name)
    for case, doc in contracts.fixtures(name, valid=False):
        assert not fast(doc), case
    checked = 0
    for _, base in contracts.fixtures(name):
        for m in mutations(base):
            js = slow.is_valid(m)
            if fast(m):
                assert js, f"fast check accepted an invalid {name}: {json.dumps(m)[:300]}"
            elif js:
                # Allowed only where JSON Schema's number equality is looser than ours (1.0 == 1).
                assert "1.0" in json.dumps(m), f"fast check rejected a valid {name}: {json.dumps(m)[:300]}"
            checked += 1
    assert checked > 200


def test_unknown_keywords_disable_the_fast_path():
    with pytest.raises(Unsupported, match="uniqueItems"):
        Compiler(lambda _id: {}, contracts._FORMATS).compile({"type": "array", "uniqueItems": True})
    assert contracts.fast_check("cmd-grant") is None  # uses uniqueItems: jsonschema only


def test_validate_still_reports_paths_when_the_fast_check_fails():
    doc = dict(contracts.fixtures("telemetry"))["one-device"]
    doc["buffers"]["waits"] = -3
    with pytest.raises(contracts.ContractError, match=r"\$\.buffers\.waits"):
        contracts.validate("telemetry", doc)
