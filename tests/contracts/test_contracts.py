"""Every fixture is checked against its schema; the C agent's tests reuse the same files."""

from __future__ import annotations

import json
from importlib import resources

import pytest
from jsonschema import Draft202012Validator

from fleet import contracts
from fleet.contracts import NAMES, ContractError

FIXTURES = resources.files("fleet.contracts").joinpath("mqtt", "v1", "fixtures")
EXPECTED_FIELDS = json.loads(FIXTURES.joinpath("invalid", "_expected_fields.json").read_text())["fields"]

VALID = [(name, case, doc) for name in NAMES for case, doc in contracts.fixtures(name)]
INVALID = [(name, case, doc) for name in NAMES for case, doc in contracts.fixtures(name, valid=False)]


@pytest.mark.parametrize("name", NAMES)
def test_schema_is_valid_2020_12_with_id(name):
    doc = contracts.schema(name)
    Draft202012Validator.check_schema(doc)
    assert doc["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert doc["$id"] == f"urn:fleet:contracts:mqtt:v1:{name}"


@pytest.mark.parametrize("name", NAMES)
def test_every_contract_has_valid_and_invalid_fixtures(name):
    assert len(list(contracts.fixtures(name))) >= 2
    assert len(list(contracts.fixtures(name, valid=False))) >= 2


@pytest.mark.parametrize(("name", "case", "doc"), VALID, ids=[f"{n}.{c}" for n, c, _ in VALID])
def test_valid_fixture_validates(name, case, doc):
    contracts.validate(name, doc)


@pytest.mark.parametrize(("name", "case", "doc"), INVALID, ids=[f"{n}.{c}" for n, c, _ in INVALID])
def test_invalid_fixture_is_rejected_naming_the_field(name, case, doc):
    field = EXPECTED_FIELDS[f"{name}.{case}"]
    with pytest.raises(ContractError) as info:
        contracts.validate(name, doc)
    err = info.value
    assert err.name == name
    assert err.message.startswith("$")
    assert field in err.message, f"error {err.message!r} does not mention {field!r}"


def test_every_invalid_fixture_declares_its_field():
    files = {e.name[: -len(".json")] for e in FIXTURES.joinpath("invalid").iterdir()} - {"_expected_fields"}
    assert files == set(EXPECTED_FIELDS)


def test_fixture_addresses_are_loopback_only():
    import ipaddress
    import re

    for entry in [
        *FIXTURES.iterdir(),
        *FIXTURES.joinpath("invalid").iterdir(),
    ]:
        if not entry.name.endswith(".json"):
            continue
        for text in re.findall(r"\b\d{1,3}(?:\.\d{1,3}){3}\b", entry.read_text()):
            try:
                addr = ipaddress.ip_address(text)
            except ValueError:
                continue  # deliberately broken addresses in invalid fixtures
            assert addr.is_loopback, f"{entry.name}: {text}"


def test_error_path_points_into_nested_arrays():
    doc = dict(contracts.fixtures("telemetry"))["one-device"]
    doc["devices"][0]["errors"]["stall"] = -1
    with pytest.raises(ContractError, match=r"^telemetry: \$\.devices\[0\]\.errors\.stall: "):
        contracts.validate("telemetry", doc)


def test_unknown_contract_name():
    with pytest.raises(KeyError, match="unknown contract 'cmd-selfdestruct'"):
        contracts.validate("cmd-selfdestruct", {})


def test_extra_properties_are_allowed_for_forward_compatibility():
    _, doc = next(contracts.fixtures("status"))
    contracts.validate("status", {**doc, "added_in_v1_1": {"x": 1}})


def test_validators_are_compiled_once():
    assert contracts.validator("telemetry") is contracts.validator("telemetry")
