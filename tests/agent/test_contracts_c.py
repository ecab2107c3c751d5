"""Contract tests of the C side: every payload the C agent builds satisfies
the JSON Schema the service validates it with (fleet.contracts)."""

from __future__ import annotations

import json
import subprocess
from collections import Counter

import pytest

from fleet.contracts import validate

TOPIC_CONTRACT = {
    "status": "status",
    "state": "state",
    "events": "events",
    "telemetry": "telemetry",
    "cmd-result": "cmd-result",
}


@pytest.fixture(scope="module")
def published(payload_dump) -> list[dict]:
    out = subprocess.run([str(payload_dump)], capture_output=True, text=True, timeout=30, check=True)
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def _leaf(topic: str) -> str:
    parts = topic.split("/")
    assert parts[:2] == ["fleet", "v1"], topic
    return "/".join(parts[3:])


def test_every_payload_satisfies_its_schema(published):
    assert published, "agent_payload_dump printed nothing"
    for msg in published:
        leaf = _leaf(msg["topic"])
        assert leaf in TOPIC_CONTRACT, f"unexpected topic {msg['topic']}"
        assert isinstance(msg["payload"], dict), f"{msg['topic']}: not a JSON object: {msg['payload']!r}"
        validate(TOPIC_CONTRACT[leaf], msg["payload"])  # raises ContractError naming the path
        assert msg["topic"].split("/")[2] == msg["payload"]["dongle_id"]


def test_every_kind_was_built(published):
    leaves = Counter(_leaf(m["topic"]) for m in published)
    for leaf in TOPIC_CONTRACT:
        assert leaves[leaf] >= 1, f"no {leaf} payload was built"
    types = {m["payload"]["type"] for m in published if _leaf(m["topic"]) == "events"}
    assert types >= {
        "rebooted", "grant_applied", "attached", "device_added", "import_refused", "device_removed",
        "grant_revoked", "detached", "ota_progress", "selftest",
    }


def test_qos_and_retain_follow_the_contract_table(published):
    for msg in published:
        leaf = _leaf(msg["topic"])
        assert msg["qos"] == 1, msg["topic"]
        assert msg["retain"] == (leaf in ("status", "state")), msg["topic"]


def test_last_will_and_goodbye(published):
    will = published[0]
    assert _leaf(will["topic"]) == "status" and will["retain"]
    assert will["payload"]["status"] == "offline" and will["payload"]["reason"] == "lwt"
    statuses = [m["payload"] for m in published[1:] if _leaf(m["topic"]) == "status"]
    assert statuses[0]["status"] == "online"
    assert statuses[-1] == {**statuses[-1], "status": "offline", "reason": "shutdown"}


def test_results_answer_each_request(published):
    results = {m["payload"]["request_id"]: m["payload"] for m in published if _leaf(m["topic"]) == "cmd-result"}
    assert results["0b7e6d2a-1111-4c3e-9a55-000000000001"]["ok"] is True  # grant
    assert results["0b7e6d2a-1111-4c3e-9a55-000000000002"]["ok"] is True  # revoke
    bad_port = results["0b7e6d2a-1111-4c3e-9a55-000000000003"]
    assert bad_port["ok"] is False and bad_port["error"].startswith("busid")
    assert results["0b7e6d2a-1111-4c3e-9a55-000000000004"]["ok"] is True  # config
    bad = results["0b7e6d2a-1111-4c3e-9a55-000000000005"]
    assert bad["ok"] is False and bad["error"].startswith("issued_at")


def test_seq_increases_within_the_boot(published):
    seqs = [m["payload"]["seq"] for m in published if "seq" in m["payload"]]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
