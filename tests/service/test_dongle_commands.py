"""Admin commands to dongles (reboot, port-power, config) over the REST API, and
the tracking of ota commands from the dongle's ota_progress events and cmd-results.

Real SQLite and PostgreSQL; the publisher records what would go to the broker.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from fleet import contracts
from fleet.api import create_api
from fleet.db.models import Command
from fleet.metrics import InventoryMetrics
from fleet.services.commands import ADMIN_RESEND_WINDOW
from fleet.services.common import utcnow
from fleet.services.container import Services, build_services

from .helpers import DONGLE_A, DONGLE_B, Db, RecordingPublisher, bring_online, device, msg, status

DONGLE_URL = "mqtt://127.0.0.1:1999"
UNKNOWN = "esp-0000000000ff"


@pytest.fixture
def svc(db: Db, publisher: RecordingPublisher) -> Services:
    return build_services(db.sf, publisher, dongle_mqtt_url=DONGLE_URL)


@pytest.fixture
def client(svc: Services) -> Iterator[TestClient]:
    with TestClient(create_api(svc, inventory_metrics=InventoryMetrics(svc.session_factory))) as c:
        yield c


@pytest.fixture
def admin(svc: Services) -> dict[str, str]:
    bring_online(svc, DONGLE_A, [device("1-1", serial="PROBE0001"), device("1-2.3", serial="PROBE0002")])
    bring_online(svc, DONGLE_B, [device("1-1", serial="DISK0003")])
    svc.ingest.apply([status(DONGLE_B, "offline", "lwt")])
    return {"Authorization": f"Bearer {svc.users.add('root', 'admin')[1]}"}


def sent(publisher: RecordingPublisher, name: str) -> list[dict[str, Any]]:
    """Payloads published under ``name``, each checked against its contract as the dongle would."""
    out = [p for _, n, p in publisher.sent if n == name]
    for p in out:
        contracts.validate(f"cmd-{name}", p)
    return out


def audit_rows(svc: Services, action: str) -> list[dict[str, Any]]:
    return svc.audit.list(action=action)["items"]


# -- reboot ---------------------------------------------------------------------------------------


def test_reboot_is_sent_tracked_and_audited(
    svc: Services, client: TestClient, admin: dict[str, str], publisher: RecordingPublisher
) -> None:
    r = client.post(f"/api/v1/dongles/{DONGLE_A}/reboot", json={"reason": "stuck hub"}, headers=admin)
    assert r.status_code == 202, r.text
    view = r.json()
    assert view["name"] == "reboot" and view["state"] == "sent" and view["dongle_id"] == DONGLE_A
    assert view["progress"] is None and view["outcome"] is None
    (payload,) = sent(publisher, "reboot")
    assert payload["reason"] == "stuck hub" and payload["request_id"] == view["request_id"]

    # no body: no reason
    r = client.post(f"/api/v1/dongles/{DONGLE_A}/reboot", headers=admin)
    assert r.status_code == 202 and "reason" not in sent(publisher, "reboot")[1]

    (last, first) = audit_rows(svc, "dongle.reboot")
    assert first["actor"] == "root" and first["target"] == f"dongle:{DONGLE_A}"
    assert first["detail"]["request_id"] == view["request_id"] and first["detail"]["reason"] == "stuck hub"

    # the dongle's answer moves the command on; GET /commands/{request_id} shows it
    svc.ingest.apply(
        [msg("cmd-result", DONGLE_A, {"request_id": view["request_id"], "command": "reboot", "ok": True})]
    )
    got = client.get(f"/api/v1/commands/{view['request_id']}", headers=admin).json()
    assert got["state"] == "acked" and got["result"] == {"ok": True} and got["answered_at"]


def test_reboot_reason_too_long_is_422(client: TestClient, admin: dict[str, str]) -> None:
    r = client.post(f"/api/v1/dongles/{DONGLE_A}/reboot", json={"reason": "x" * 129}, headers=admin)
    assert r.status_code == 422 and r.json()["error"]["message"].startswith("body.reason:")


# -- port power -----------------------------------------------------------------------------------


def test_port_power_actions(
    svc: Services, client: TestClient, admin: dict[str, str], publisher: RecordingPublisher
) -> None:
    r = client.post(f"/api/v1/dongles/{DONGLE_A}/ports/1-2.3/power", json={"action": "off"}, headers=admin)
    assert r.status_code == 202, r.text
    r2 = client.post(f"/api/v1/dongles/{DONGLE_A}/ports/1-1/power", headers=admin)
    assert r2.status_code == 202
    first, second = sent(publisher, "port-power")
    assert (first["busid"], first["action"]) == ("1-2.3", "off")
    assert (second["busid"], second["action"]) == ("1-1", "cycle")  # the default
    detail = audit_rows(svc, "dongle.port_power")[-1]["detail"]
    assert detail == {"request_id": r.json()["request_id"], "busid": "1-2.3", "action": "off"}


def test_port_power_of_a_removed_device_port_still_works(
    svc: Services, client: TestClient, admin: dict[str, str], publisher: RecordingPublisher
) -> None:
    svc.ingest.apply(
        [msg("events", DONGLE_A, {"seq": 900, "uptime_s": 500, "type": "device_removed", "busid": "1-1"})]
    )
    r = client.post(f"/api/v1/dongles/{DONGLE_A}/ports/1-1/power", json={"action": "on"}, headers=admin)
    assert r.status_code == 202 and sent(publisher, "port-power")[0]["action"] == "on"


def test_port_power_errors(client: TestClient, admin: dict[str, str], publisher: RecordingPublisher) -> None:
    r = client.post(f"/api/v1/dongles/{DONGLE_A}/ports/1-9/power", headers=admin)
    assert r.status_code == 404
    assert r.json()["error"] == {
        "code": "not_found",
        "message": f"dongle {DONGLE_A} has no port 1-9",
        "field": "busid",
    }
    r = client.post(f"/api/v1/dongles/{DONGLE_A}/ports/1-01/power", headers=admin)
    assert r.status_code == 422 and r.json()["error"]["field"] == "busid"
    assert "'1-01' is not a USB port path" in r.json()["error"]["message"]
    r = client.post(f"/api/v1/dongles/{DONGLE_A}/ports/1-1/power", json={"action": "toggle"}, headers=admin)
    assert r.status_code == 422 and r.json()["error"]["message"].startswith("body.action:")
    assert publisher.sent == []


# -- config ---------------------------------------------------------------------------------------


def test_config_defaults_fill_from_last_and_version_increments(
    svc: Services, client: TestClient, admin: dict[str, str], publisher: RecordingPublisher
) -> None:
    url = f"/api/v1/dongles/{DONGLE_A}/config"
    r = client.post(url, json={"telemetry_interval_s": 30}, headers=admin)
    assert r.status_code == 202, r.text
    (first,) = sent(publisher, "config")
    assert {k: v for k, v in first.items() if k not in ("v", "request_id", "issued_at")} == {
        "version": 1,
        "telemetry_interval_s": 30,
        "enforce_grants": True,
        "log_level": "info",
        "mqtt": {"url": DONGLE_URL},
    }

    r = client.post(
        url,
        json={
            "mqtt": {"username": "dongle", "password": "pw-123"},
            "filters": {"allow": [{"vid": 4617, "pid": 8}, {"class": 3}], "deny": [{"class": 9}]},
            "log_level": "debug",
        },
        headers=admin,
    )
    assert r.status_code == 202, r.text
    second = sent(publisher, "config")[1]
    assert second["version"] == 2 and second["telemetry_interval_s"] == 30  # kept from version 1
    assert second["mqtt"] == {"url": DONGLE_URL, "username": "dongle", "password": "pw-123"}
    assert second["filters"]["deny"] == [{"class": 9}] and second["log_level"] == "debug"

    # a new broker keeps the credentials; a new deny list keeps the allow list; null removes
    r = client.post(
        url,
        json={"mqtt": {"url": "mqtts://127.0.0.1:8883"}, "filters": {"deny": None}, "enforce_grants": False},
        headers=admin,
    )
    third = sent(publisher, "config")[2]
    assert third["version"] == 3 and third["enforce_grants"] is False
    assert third["mqtt"] == {"url": "mqtts://127.0.0.1:8883", "username": "dongle", "password": "pw-123"}
    assert third["filters"] == {"allow": [{"vid": 4617, "pid": 8}, {"class": 3}]}

    # versions are per dongle
    bring_online(svc, DONGLE_B, [device("1-1", serial="DISK0003")])
    client.post(f"/api/v1/dongles/{DONGLE_B}/config", json={}, headers=admin)
    assert sent(publisher, "config")[3]["version"] == 1


def test_config_refused_by_the_dongle_is_not_the_base_but_its_version_is_used(
    svc: Services, client: TestClient, admin: dict[str, str], publisher: RecordingPublisher
) -> None:
    url = f"/api/v1/dongles/{DONGLE_A}/config"
    client.post(url, json={"telemetry_interval_s": 20}, headers=admin)
    bad = client.post(url, json={"mqtt": {"url": "mqtt://127.0.0.1:1"}}, headers=admin).json()
    svc.ingest.apply(
        [
            msg(
                "cmd-result",
                DONGLE_A,
                {
                    "request_id": bad["request_id"],
                    "command": "config",
                    "ok": False,
                    "error": "mqtt.url: unreachable",
                },
            )
        ]
    )
    client.post(url, json={"log_level": "warn"}, headers=admin)
    last = sent(publisher, "config")[-1]
    assert last["version"] == 3  # above the refused 2: the dongle never saw an older one twice
    assert last["mqtt"] == {"url": DONGLE_URL} and last["telemetry_interval_s"] == 20


def test_config_password_is_masked_everywhere_but_on_the_wire(
    svc: Services, client: TestClient, admin: dict[str, str], publisher: RecordingPublisher
) -> None:
    secret = "hunter2-not-for-logs"
    body = {"mqtt": {"username": "dongle", "password": secret}}
    r = client.post(f"/api/v1/dongles/{DONGLE_A}/config", json=body, headers=admin)
    assert r.status_code == 202
    assert sent(publisher, "config")[0]["mqtt"]["password"] == secret
    rid = r.json()["request_id"]
    shown = [
        r.text,
        client.get(f"/api/v1/commands/{rid}", headers=admin).text,
        client.get("/api/v1/commands", params={"dongle": DONGLE_A}, headers=admin).text,
        client.get("/api/v1/audit", params={"action": "dongle.config"}, headers=admin).text,
    ]
    for text in shown:
        assert secret not in text
        assert "********" in text
    assert r.json()["payload"]["mqtt"]["username"] == "dongle"

    # a refusal that would quote the password does not either
    r = client.post(
        f"/api/v1/dongles/{DONGLE_A}/config", json={"mqtt": {"password": "x" * 64}}, headers=admin
    )
    assert r.status_code == 422 and "x" * 64 not in r.text
    assert r.json()["error"]["field"] == "mqtt.password"


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"telemetry_interval_s": 0}, "telemetry_interval_s", "less than the minimum of 1"),
        ({"telemetry_interval_s": "10"}, "telemetry_interval_s", "not of type 'integer'"),
        ({"log_level": "trace"}, "log_level", "is not one of"),
        ({"enforce_grants": "yes"}, "enforce_grants", "not of type 'boolean'"),
        ({"mqtt": {"url": "http://127.0.0.1:1883"}}, "mqtt.url", "does not match"),
        ({"mqtt": {"url": None}}, "mqtt.url", "is a required property"),
        ({"mqtt": {"password": "pw"}}, "mqtt.password", ""),
        ({"mqtt": "mqtt://127.0.0.1"}, "mqtt", "must be an object"),
        ({"filters": {"allow": [{"class": 3, "vid": 1, "pid": 2}]}}, "filters.allow[0]", ""),
        ({"filters": {"deny": [{"vid": 1}]}}, "filters.deny[0].pid", "is a required property"),
        ({"filters": {"allow": [{"class": 256}]}}, "filters.allow[0].class", "greater than the maximum"),
        ({"filters": {"allow": [{"class": 1}] * 17}}, "filters.allow", "is too long"),
    ],
)
def test_config_refusals_name_the_field(
    svc: Services,
    client: TestClient,
    admin: dict[str, str],
    publisher: RecordingPublisher,
    body: dict[str, Any],
    field: str,
    words: str,
) -> None:
    r = client.post(f"/api/v1/dongles/{DONGLE_A}/config", json=body, headers=admin)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "invalid_input" and err["field"] == field
    assert err["message"].startswith(f"{field}: ") and words in err["message"]
    # nothing recorded, nothing sent, nothing audited; the next good request is version 1
    assert publisher.sent == [] and svc.commands.list(dongle_id=DONGLE_A)["total"] == 0
    assert audit_rows(svc, "dongle.config") == []
    assert client.post(f"/api/v1/dongles/{DONGLE_A}/config", json={}, headers=admin).status_code == 202
    assert sent(publisher, "config")[0]["version"] == 1


def test_config_unknown_field_is_422(client: TestClient, admin: dict[str, str]) -> None:
    r = client.post(f"/api/v1/dongles/{DONGLE_A}/config", json={"version": 9}, headers=admin)
    assert r.status_code == 422 and r.json()["error"]["message"] == "body.version: unknown field"


def test_largest_config_fits_the_dongles_4096_bytes(
    client: TestClient, admin: dict[str, str], publisher: RecordingPublisher
) -> None:
    """The schema cannot bound the document's size; its field limits do: the biggest
    document the API can build stays under the dongle's 4096-byte limit."""
    wide = "\u00e9" * 63  # escaped to \\u00e9 on the wire, 6 bytes each
    body = {
        "telemetry_interval_s": 3600,
        "enforce_grants": False,
        "log_level": "debug",
        "mqtt": {"url": "mqtts://" + "h" * 119, "username": wide, "password": wide},
        "filters": {
            "allow": [{"vid": 65535, "pid": 65535}] * 16,
            "deny": [{"vid": 65535, "pid": 65535}] * 16,
        },
    }
    assert client.post(f"/api/v1/dongles/{DONGLE_A}/config", json=body, headers=admin).status_code == 202
    (payload,) = sent(publisher, "config")
    assert len(json.dumps(payload, separators=(",", ":"))) <= 4096


# -- errors common to all admin commands ---------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body"),
    [("reboot", None), ("ports/1-1/power", {"action": "cycle"}), ("config", {"log_level": "info"})],
)
def test_unknown_offline_and_non_admin(
    svc: Services,
    client: TestClient,
    admin: dict[str, str],
    publisher: RecordingPublisher,
    path: str,
    body: Any,
) -> None:
    r = client.post(f"/api/v1/dongles/{UNKNOWN}/{path}", json=body, headers=admin)
    assert r.status_code == 404 and r.json()["error"]["message"] == f"no dongle '{UNKNOWN}'"
    r = client.post(f"/api/v1/dongles/{DONGLE_B}/{path}", json=body, headers=admin)
    assert r.status_code == 409
    assert r.json()["error"] == {
        "code": "conflict",
        "message": f"dongle {DONGLE_B} is offline; commands are not queued",
        "status": "offline",
    }
    user = {"Authorization": f"Bearer {svc.users.add('alice', 'user')[1]}"}
    assert client.post(f"/api/v1/dongles/{DONGLE_A}/{path}", json=body, headers=user).status_code == 403
    assert publisher.sent == [] and svc.commands.list()["total"] == 0


def test_transport_failure_is_recorded_and_resent_only_while_it_matters(
    svc: Services, client: TestClient, admin: dict[str, str], publisher: RecordingPublisher
) -> None:
    publisher.fail = True
    fresh, old, away = (client.post(f"/api/v1/dongles/{DONGLE_A}/reboot", headers=admin) for _ in range(3))
    assert fresh.status_code == 202
    assert fresh.json()["state"] == "failed" and fresh.json()["error"] == "not connected to the broker"
    publisher.fail = False
    with svc.session_factory.begin() as s:
        s.execute(
            update(Command)
            .where(Command.request_id == old.json()["request_id"])
            .values(created_at=utcnow() - ADMIN_RESEND_WINDOW - timedelta(seconds=1))
        )
        s.execute(
            update(Command).where(Command.request_id == away.json()["request_id"]).values(dongle_id=DONGLE_B)
        )
    # only the fresh one to the online dongle goes out again
    assert svc.commands.resend_failed() == 1
    assert [p["request_id"] for p in sent(publisher, "reboot")] == [fresh.json()["request_id"]]
    assert view(client, admin, fresh.json()["request_id"])["state"] == "sent"
    assert view(client, admin, old.json()["request_id"])["state"] == "failed"


def test_get_command_unknown_is_404(client: TestClient, admin: dict[str, str]) -> None:
    r = client.get("/api/v1/commands/0b7e6d2a-1111-4c3e-9a55-00000000dead", headers=admin)
    assert r.status_code == 404 and r.json()["error"]["field"] == "request_id"


# -- ota tracking ---------------------------------------------------------------------------------


def _ota(svc: Services, dongle_id: str = DONGLE_A) -> str:
    """Record and send an ota command as the firmware service does; its request_id."""
    _, manifest = next(contracts.fixtures("cmd-ota"))
    args = {k: v for k, v in manifest.items() if k not in ("v", "request_id", "issued_at")}
    with svc.session_factory.begin() as s:
        out = svc.commands.record(s, dongle_id=dongle_id, name="ota", args=args)
    svc.commands.dispatch([out])
    return str(out.payload["request_id"])


_seq = iter(range(1000, 10**6))


def progress(rid: str, step: str, done: int = 0, reason: str | None = None, dongle_id: str = DONGLE_A) -> Any:
    """An ota_progress event as fleet_agent_on_ota_event builds it."""
    detail: dict[str, Any] = {
        "step": step,
        "bytes": done,
        "total": 1064,
        "version": "0.4.0",
        "request_id": rid,
    }
    if reason:
        detail["reason"] = reason
    return msg(
        "events", dongle_id, {"seq": next(_seq), "uptime_s": 50, "type": "ota_progress", "detail": detail}
    )


def result(rid: str, ok: bool, error: str | None = None) -> Any:
    body: dict[str, Any] = {"request_id": rid, "command": "ota", "ok": ok}
    if error:
        body["error"] = error
    return msg("cmd-result", DONGLE_A, body)


def view(client: TestClient, admin: dict[str, str], rid: str) -> dict[str, Any]:
    r = client.get(f"/api/v1/commands/{rid}", headers=admin)
    assert r.status_code == 200
    return r.json()


def test_ota_progress_to_a_rollback(svc: Services, client: TestClient, admin: dict[str, str]) -> None:
    rid = _ota(svc)
    steps = [
        ([progress(rid, "verify")], None),
        ([progress(rid, "download"), progress(rid, "download", 512)], "downloading"),
        ([progress(rid, "download", 1064), progress(rid, "verify", 1064)], "downloading"),
        ([progress(rid, "boot", 1064), result(rid, True)], "staged"),
        # the dongle restarts into the new image
        ([progress(rid, "selftest", 1064)], "self_test"),
        ([progress(rid, "rollback", 1064, "self-test failed: devices: differ")], "rolled_back"),
        (
            [progress(rid, "rollback", 1064, "self-test failed: devices: differ; rolled back to 0.3.1")],
            "rolled_back",
        ),
    ]
    for batch, outcome in steps:
        svc.ingest.apply(batch)
        assert view(client, admin, rid)["outcome"] == outcome, batch
    v = view(client, admin, rid)
    assert v["state"] == "acked"
    assert v["progress"] == {
        "step": "rollback",
        "bytes": 1064,
        "total": 1064,
        "version": "0.4.0",
        "reason": "self-test failed: devices: differ; rolled back to 0.3.1",
    }


def test_ota_confirmed(svc: Services, client: TestClient, admin: dict[str, str]) -> None:
    rid = _ota(svc)
    svc.ingest.apply([progress(rid, "download", 1064), progress(rid, "boot", 1064), result(rid, True)])
    svc.ingest.apply([progress(rid, "selftest", 1064), progress(rid, "confirm", 1064)])
    v = view(client, admin, rid)
    assert v["outcome"] == "confirmed" and v["progress"]["step"] == "confirm"


def test_ota_refused_stays_refused_after_the_error_answer(
    svc: Services, client: TestClient, admin: dict[str, str]
) -> None:
    rid = _ota(svc)
    why = "signature: does not verify with the dongle's public key"
    # refused (the agent's REFUSED event), then the answer
    svc.ingest.apply([progress(rid, "verify"), progress(rid, "verify", 0, why)])
    assert view(client, admin, rid)["outcome"] == "refused"
    svc.ingest.apply([result(rid, False, why)])
    v = view(client, admin, rid)
    assert v["outcome"] == "refused" and v["state"] == "rejected" and v["error"] == why
    assert v["progress"]["reason"] == why


def test_ota_download_failure_is_failed_even_after_the_error_answer(
    svc: Services, client: TestClient, admin: dict[str, str]
) -> None:
    rid = _ota(svc)
    why = "download: server answered HTTP 404"
    svc.ingest.apply([progress(rid, "download"), progress(rid, "download", 0, why)])
    svc.ingest.apply([result(rid, False, why)])
    assert view(client, admin, rid)["outcome"] == "failed"


def test_ota_error_answer_without_events_is_refused(
    svc: Services, client: TestClient, admin: dict[str, str]
) -> None:
    rid = _ota(svc)
    svc.ingest.apply([result(rid, False, "state: another OTA is downloading")])
    v = view(client, admin, rid)
    assert v["outcome"] == "refused" and v["progress"] is None


def test_progress_of_other_requests_and_other_commands_is_not_tracked(
    svc: Services, client: TestClient, admin: dict[str, str]
) -> None:
    rid = _ota(svc)
    reboot = client.post(f"/api/v1/dongles/{DONGLE_A}/reboot", headers=admin).json()["request_id"]
    svc.ingest.apply(
        [
            progress("0b7e6d2a-1111-4c3e-9a55-00000000beef", "boot"),  # nobody's
            progress(rid, "boot", dongle_id=DONGLE_B),  # the right id from the wrong dongle
            progress(reboot, "boot"),  # not an ota command
        ]
    )
    assert view(client, admin, rid)["outcome"] is None
    assert view(client, admin, reboot)["outcome"] is None and view(client, admin, reboot)["progress"] is None
    # a non-ota command answered with an error gets no outcome either
    svc.ingest.apply(
        [msg("cmd-result", DONGLE_A, {"request_id": reboot, "command": "reboot", "ok": False, "error": "no"})]
    )
    assert view(client, admin, reboot)["outcome"] is None
    # the events themselves are stored as always
    assert svc.inventory.list_events(dongle_id=DONGLE_A, type="ota_progress")["total"] == 2
