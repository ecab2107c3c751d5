"""REST API through FastAPI's TestClient over a real SQLite database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from fleet.api import create_api
from fleet.metrics import InventoryMetrics
from fleet.services.container import Services, build_services

from .helpers import DONGLE_A, DONGLE_B, Db, RecordingPublisher, bring_online, device, msg


@pytest.fixture
def svc(sqlite_db: Db, publisher: RecordingPublisher) -> Services:
    return build_services(sqlite_db.sf, publisher, lease_default_s=600, lease_max_s=3600)


@pytest.fixture
def client(svc: Services) -> Iterator[TestClient]:
    app = create_api(svc, inventory_metrics=InventoryMetrics(svc.session_factory))
    with TestClient(app) as c:
        yield c


@pytest.fixture
def tokens(svc: Services) -> dict[str, str]:
    out = {}
    for name, role in (("root", "admin"), ("alice", "user"), ("bob", "user")):
        out[name] = svc.users.add(name, role)[1]
    bring_online(
        svc,
        DONGLE_A,
        [
            device("1-1", serial="PROBE0001"),
            device("1-2", serial="PROBE0002"),
            device("1-3", vid=0x0781, pid=0x5567, serial="DISK0003", product="Cruzer"),
        ],
    )
    bring_online(svc, DONGLE_B, [device("1-1", vid=0x046D, pid=0xC31C, serial=None, product="Keyboard")])
    return out


def h(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_health_and_metrics_need_no_token(client: TestClient, tokens: dict[str, str]) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "database": "ok"}
    r = client.get("/metrics")
    assert r.status_code == 200 and 'fleet_dongles{status="online"} 2.0' in r.text
    assert 'fleet_usb_devices{state="free"} 4.0' in r.text


def test_401_without_or_with_bad_token_and_403_for_role(client: TestClient, tokens: dict[str, str]) -> None:
    r = client.get("/api/v1/devices")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert r.json()["error"] == {
        "code": "unauthenticated",
        "message": "missing Authorization: Bearer <token> header",
    }
    assert client.get("/api/v1/devices", headers=h("fleet_nope")).status_code == 401
    assert client.get("/api/v1/devices", headers={"Authorization": "Basic abc"}).status_code == 401
    r = client.get("/api/v1/users", headers=h(tokens["alice"]))
    assert r.status_code == 403 and "needs the admin role" in r.json()["error"]["message"]
    assert client.get("/api/v1/users", headers=h(tokens["root"])).status_code == 200
    assert client.get("/api/v1/me", headers=h(tokens["alice"])).json()["name"] == "alice"


def test_revoked_token_stops_working(client: TestClient, tokens: dict[str, str]) -> None:
    assert client.get("/api/v1/dongles", headers=h(tokens["bob"])).status_code == 200
    r = client.post("/api/v1/tokens/revoke", json={"token": tokens["bob"]}, headers=h(tokens["root"]))
    assert r.status_code == 200 and r.json()["user"] == "bob"
    assert client.get("/api/v1/dongles", headers=h(tokens["bob"])).status_code == 401


def test_device_filters_and_pagination(client: TestClient, tokens: dict[str, str]) -> None:
    a = h(tokens["alice"])
    page = client.get("/api/v1/devices?limit=2&offset=0", headers=a).json()
    assert page["total"] == 4 and len(page["items"]) == 2
    page2 = client.get("/api/v1/devices?limit=2&offset=2", headers=a).json()
    assert {x["id"] for x in page["items"]}.isdisjoint({x["id"] for x in page2["items"]})
    assert client.get("/api/v1/devices?vid=0781", headers=a).json()["items"][0]["product"] == "Cruzer"
    assert client.get(f"/api/v1/devices?dongle={DONGLE_B}", headers=a).json()["total"] == 1
    assert client.get("/api/v1/devices?q=keyb", headers=a).json()["total"] == 1
    assert client.get("/api/v1/devices?state=leased", headers=a).json()["total"] == 0
    r = client.get("/api/v1/devices?vid=zz", headers=a)
    assert r.status_code == 422 and r.json()["error"]["message"].startswith("vid: 'zz' is not a 16-bit hex")
    r = client.get("/api/v1/devices?limit=0", headers=a)
    assert r.status_code == 422 and r.json()["error"]["details"][0]["field"] == "query.limit"
    d = client.get(f"/api/v1/dongles/{DONGLE_A}", headers=a).json()
    assert d["device_count"] == 3 and len(d["devices"]) == 3
    assert client.get("/api/v1/dongles?status=online", headers=a).json()["total"] == 2
    assert client.get("/api/v1/dongles/esp-000000000000", headers=a).status_code == 404


def test_events_newest_first_with_filters(svc: Services, client: TestClient, tokens: dict[str, str]) -> None:
    a = h(tokens["alice"])
    svc.ingest.apply([
        msg("events", DONGLE_A, {"seq": 900, "uptime_s": 5, "type": "device_removed", "busid": "1-2"}),
        msg("events", DONGLE_A, {"seq": 901, "uptime_s": 6, "type": "ota_progress",
                                 "detail": {"step": "download", "bytes": 10, "total": 100}}),
        msg("events", DONGLE_B, {"seq": 902, "uptime_s": 7, "type": "device_removed", "busid": "1-1"}),
    ])
    page = client.get(f"/api/v1/events?dongle={DONGLE_A}", headers=a).json()
    assert [e["type"] for e in page["items"]] == ["ota_progress", "device_removed"] and page["total"] == 2
    assert page["items"][0]["detail"] == {"step": "download", "bytes": 10, "total": 100}
    removed = client.get("/api/v1/events?type=device_removed", headers=a).json()["items"]
    assert [(e["dongle_id"], e["busid"]) for e in removed] == [(DONGLE_B, "1-1"), (DONGLE_A, "1-2")]
    newer = client.get(f"/api/v1/events?after_id={removed[1]['id']}", headers=a).json()["items"]
    assert {e["type"] for e in newer} == {"ota_progress", "device_removed"} and len(newer) == 2
    assert client.get("/api/v1/events", headers={}).status_code == 401
    r = client.get("/api/v1/events?after_id=-1", headers=a)
    assert r.status_code == 422 and r.json()["error"]["details"][0]["field"] == "query.after_id"


def test_rename_and_tag(client: TestClient, tokens: dict[str, str]) -> None:
    a = h(tokens["alice"])
    r = client.patch("/api/v1/devices/1", json={"name": "jlink-3", "tags": ["probe", "segger"]}, headers=a)
    assert r.status_code == 200 and r.json()["name"] == "jlink-3" and r.json()["tags"] == ["probe", "segger"]
    r = client.patch(
        "/api/v1/devices/jlink-3", json={"remove_tags": ["segger"], "add_tags": ["swd"]}, headers=a
    )
    assert r.json()["tags"] == ["probe", "swd"]
    assert client.get("/api/v1/devices?tag=swd", headers=a).json()["items"][0]["name"] == "jlink-3"
    r = client.patch("/api/v1/devices/2", json={"name": "jlink-3"}, headers=a)
    assert r.status_code == 409 and "already used by device 1" in r.json()["error"]["message"]
    r = client.patch("/api/v1/devices/2", json={"name": "Bad Name"}, headers=a)
    assert r.status_code == 422 and r.json()["error"]["field"] == "name"
    r = client.patch("/api/v1/devices/2", json={"nmae": "typo"}, headers=a)
    assert r.status_code == 422
    assert r.json()["error"]["details"] == [{"field": "body.nmae", "message": "unknown field"}]
    audit = client.get("/api/v1/audit?action=device.rename", headers=a).json()
    assert audit["total"] == 1 and audit["items"][0]["actor"] == "alice"


def test_lease_lifecycle_over_http(
    client: TestClient, tokens: dict[str, str], publisher: RecordingPublisher
) -> None:
    alice, bob, root = h(tokens["alice"]), h(tokens["bob"]), h(tokens["root"])
    client.patch("/api/v1/devices/1", json={"name": "jlink-3"}, headers=root)
    r = client.post(
        "/api/v1/leases",
        json={"device": "jlink-3", "duration_s": 600, "clients": ["127.0.0.1"]},
        headers=alice,
    )
    assert r.status_code == 201, r.text
    lease = r.json()
    r = client.post("/api/v1/leases", json={"device": "jlink-3", "clients": ["127.0.0.2"]}, headers=bob)
    assert r.status_code == 409
    err = r.json()["error"]
    assert err["code"] == "conflict" and err["holder"] == "alice" and err["until"] == lease["expires_at"]
    assert err["message"] == f"jlink-3 is leased by alice until {lease['expires_at']}"

    assert (
        client.post(f"/api/v1/leases/{lease['id']}/extend", json={"duration_s": 60}, headers=bob).status_code
        == 403
    )
    r = client.post(f"/api/v1/leases/{lease['id']}/extend", json={"duration_s": 60}, headers=alice)
    assert r.status_code == 200 and r.json()["expires_at"] > lease["expires_at"]
    r = client.post(f"/api/v1/leases/{lease['id']}/revoke", json={"reason": "maintenance"}, headers=alice)
    assert r.status_code == 403
    r = client.post(f"/api/v1/leases/{lease['id']}/revoke", json={}, headers=root)
    assert r.status_code == 422 and r.json()["error"]["details"][0]["field"] == "body.reason"
    r = client.post(f"/api/v1/leases/{lease['id']}/revoke", json={"reason": "maintenance"}, headers=root)
    assert r.status_code == 200 and r.json()["state"] == "revoked"
    assert client.get(f"/api/v1/leases/{lease['id']}", headers=bob).json()["end_reason"] == "maintenance"

    r = client.post("/api/v1/leases", json={"device": "tag:nope", "clients": ["127.0.0.1"]}, headers=bob)
    assert r.status_code == 404
    second = client.post("/api/v1/leases", json={"device": 1, "clients": ["127.0.0.1"]}, headers=bob).json()
    assert client.post(f"/api/v1/leases/{second['id']}/release", headers=bob).json()["state"] == "released"

    assert [c for _, c, _ in publisher.sent] == ["grant", "grant", "revoke", "grant", "revoke"]
    cmds = client.get("/api/v1/commands?name=grant", headers=root).json()
    assert cmds["total"] == 3 and all(c["state"] == "sent" for c in cmds["items"])
    assert client.get("/api/v1/commands", headers=alice).status_code == 403
    actions = [a["action"] for a in client.get("/api/v1/audit?action=lease", headers=alice).json()["items"]]
    assert actions == ["lease.release", "lease.acquire", "lease.revoke", "lease.extend", "lease.acquire"]
    leases = client.get("/api/v1/leases?holder=alice", headers=alice).json()
    assert leases["total"] == 1 and leases["items"][0]["state"] == "revoked"


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"device": "jlink-3", "clients": ["127.0.0.1"], "duration_s": "long"}, "body.duration_s", "integer"),
        ({"device": "1", "clients": []}, "body.clients", "at least 1"),
        ({"device": "1", "clients": ["nope"]}, "clients[0]", "not an IPv4 or IPv6"),
        ({"device": "1", "clients": ["127.0.0.1"], "duration_s": 99999}, "duration_s", "maximum lease"),
        ({"clients": ["127.0.0.1"]}, "body.device", "required"),
        ({"device": "1", "clients": ["127.0.0.1"], "extra": 1}, "body.extra", "unknown field"),
    ],
)
def test_lease_request_validation(
    client: TestClient, tokens: dict[str, str], body: dict, field: str, words: str
) -> None:
    r = client.post("/api/v1/leases", json=body, headers=h(tokens["alice"]))
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["code"] == "invalid_input" and field in err["message"] and words in err["message"]


def test_malformed_json_and_unknown_route(client: TestClient, tokens: dict[str, str]) -> None:
    r = client.post(
        "/api/v1/leases", content=b"{nope", headers={**h(tokens["alice"]), "Content-Type": "application/json"}
    )
    assert r.status_code == 422 and "not valid JSON" in r.json()["error"]["message"]
    r = client.get("/api/v1/nothing", headers=h(tokens["alice"]))
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_quarantine_is_admin_only(client: TestClient, tokens: dict[str, str]) -> None:
    r = client.post("/api/v1/devices/3/quarantine", json={"reason": "smoke"}, headers=h(tokens["alice"]))
    assert r.status_code == 403
    r = client.post("/api/v1/devices/3/quarantine", json={"reason": "smoke"}, headers=h(tokens["root"]))
    assert r.status_code == 200 and r.json()["state"] == "quarantined"
    r = client.post("/api/v1/leases", json={"device": 3, "clients": ["127.0.0.1"]}, headers=h(tokens["bob"]))
    assert r.status_code == 409 and "quarantined" in r.json()["error"]["message"]


def test_users_admin_api(client: TestClient, tokens: dict[str, str]) -> None:
    root = h(tokens["root"])
    r = client.post("/api/v1/users", json={"name": "dave", "role": "user"}, headers=root)
    assert r.status_code == 201 and r.json()["token"].startswith("fleet_")
    assert client.get("/api/v1/dongles", headers=h(r.json()["token"])).status_code == 200
    r = client.post("/api/v1/users", json={"name": "dave", "role": "user"}, headers=root)
    assert r.status_code == 409
    r = client.post("/api/v1/users", json={"name": "eve", "role": "god"}, headers=root)
    assert r.status_code == 422 and "use admin or user" in r.json()["error"]["message"]


def test_openapi_is_served(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert "/api/v1/leases" in spec["paths"] and "/api/v1/leases/{lease_id}/revoke" in spec["paths"]
    assert client.get("/docs").status_code == 200


def test_latency_histogram_uses_route_templates(client: TestClient, tokens: dict[str, str]) -> None:
    client.get("/api/v1/leases/12345", headers=h(tokens["alice"]))
    text = client.get("/metrics").text
    assert 'route="/api/v1/leases/{lease_id}",status="4xx"' in text
    assert "12345" not in text and "alice" not in text and tokens["alice"] not in text


def test_unexpected_errors_are_json_500(svc: Services, tokens: dict[str, str]) -> None:
    app = create_api(svc)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("bug")

    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.get("/boom")
    assert r.status_code == 500 and r.json()["error"]["code"] == "internal"
