"""What dongles report becomes inventory (SQLite and PostgreSQL)."""

from __future__ import annotations

import time

from sqlalchemy import func, select

from fleet.db.models import Command, Device, Dongle, Event, TelemetrySample
from fleet.domain.model import Principal, Role
from fleet.services.container import Services

from .helpers import DONGLE_A, DONGLE_B, Db, bring_online, device, msg, state, status

ADMIN = Principal(user_id=None, name="admin", role=Role.ADMIN)


def test_unknown_dongle_is_created_from_state_with_its_devices(services: Services) -> None:
    bring_online(
        services, DONGLE_A, [device("1-1"), device("1-2", vid=0x0781, pid=0x5567, serial="4C5300011")]
    )
    d = services.inventory.get_dongle(DONGLE_A)
    assert d["status"] == "online"
    assert d["chip"] == {"model": "esp32s3", "revision": 2}
    assert d["firmware"]["version"] == "0.3.1" and d["ip"] == "127.0.0.5"
    assert d["heap"]["free"] == 182000 and d["discovered_by"] == ["mqtt"]
    assert [(x["busid"], x["vid_pid"], x["state"]) for x in d["devices"]] == [
        ("1-1", "1366:0101", "free"),
        ("1-2", "0781:5567", "free"),
    ]


def test_last_will_takes_devices_offline_and_back_to_their_state(services: Services, db: Db) -> None:
    services.users.add("alice", "user")
    alice = services.users.authenticate(services.users.issue_token("alice"))
    assert alice is not None
    bring_online(services, DONGLE_A, [device("1-1"), device("1-2", serial="SECOND0001")])
    dev_ids = [x["id"] for x in services.inventory.list_devices()["items"]]
    services.leases.acquire(alice, dev_ids[0], clients=["127.0.0.1"])

    services.ingest.apply([status(DONGLE_A, "offline", "lwt")])
    d = services.inventory.get_dongle(DONGLE_A)
    assert d["status"] == "offline" and d["status_reason"] == "lwt"
    states = {x["id"]: x["state"] for x in services.inventory.list_devices()["items"]}
    assert states == {dev_ids[0]: "offline", dev_ids[1]: "offline"}

    services.ingest.apply([status(DONGLE_A, "online")])
    states = {x["id"]: x["state"] for x in services.inventory.list_devices()["items"]}
    assert states == {dev_ids[0]: "leased", dev_ids[1]: "free"}


def test_identity_survives_replug_move_and_bootloader(services: Services, db: Db) -> None:
    bring_online(
        services,
        DONGLE_A,
        [
            device("1-1", serial="PROBE0001"),
            device("1-2", vid=0x0483, pid=0x374B, serial=None, product="ST-Link"),
        ],
    )
    bring_online(services, DONGLE_B, [])
    by_busid = {x["busid"]: x["id"] for x in services.inventory.list_devices()["items"]}
    probe, stlink = by_busid["1-1"], by_busid["1-2"]
    services.inventory.update_device(probe, actor=ADMIN, name="jlink-3", add_tags=["probe"])
    services.inventory.update_device(stlink, actor=ADMIN, name="stlink-1", add_tags=["stm32"])

    # Unplug from A, plug into B port 1-4: same serial => same device, name and tags kept.
    services.ingest.apply([state(DONGLE_A, [device("1-2", vid=0x0483, pid=0x374B, serial=None)])])
    assert services.inventory.get_device("jlink-3")["present"] is False
    services.ingest.apply([state(DONGLE_B, [device("1-4", serial="PROBE0001")])])
    moved = services.inventory.get_device("jlink-3")
    assert (moved["id"], moved["dongle_id"], moved["busid"], moved["present"]) == (
        probe,
        DONGLE_B,
        "1-4",
        True,
    )
    assert moved["tags"] == ["probe"] and moved["state"] == "free"

    # The ST-Link drops into its DFU bootloader: new PID on the same port, no serial.
    services.ingest.apply([state(DONGLE_A, [device("1-2", vid=0x0483, pid=0xDF11, serial=None)])])
    dfu = services.inventory.get_device("stlink-1")
    assert (dfu["id"], dfu["vid_pid"], dfu["tags"]) == (stlink, "0483:df11", ["stm32"])

    # Unplugged; minutes later an unrelated device on that port is a new one.
    services.ingest.apply([state(DONGLE_A, [])])
    services.ingest.apply(
        [state(DONGLE_A, [device("1-2", vid=0x0781, pid=0x5567, serial="OTHERDISK1")], at=time.time() + 120)]
    )
    fresh = services.inventory.list_devices(dongle=DONGLE_A, present=True)["items"]
    assert len(fresh) == 1 and fresh[0]["id"] not in (probe, stlink) and fresh[0]["name"] is None

    with db.sf() as s:
        assert s.scalar(select(func.count()).select_from(Device)) == 3
    audit = services.audit.list(action="device.reidentified")["items"]
    assert {a["target"] for a in audit} == {f"device:{probe}", f"device:{stlink}"}


def test_events_update_device_state_and_are_stored(services: Services, db: Db) -> None:
    bring_online(services, DONGLE_A, [device("1-1")])
    ev = lambda seq, typ, **kw: msg("events", DONGLE_A, {"seq": seq, "uptime_s": 200, "type": typ, **kw})  # noqa: E731
    services.ingest.apply([ev(10, "attached", busid="1-1", client="127.0.0.9:51000")])
    d = services.inventory.list_devices()["items"][0]
    assert d["state"] == "attached" and d["attached_to"] == "127.0.0.9:51000"
    services.ingest.apply(
        [
            ev(11, "detached", busid="1-1", client="127.0.0.9:51000"),
            ev(12, "device_added", busid="1-3", detail=device("1-3", serial="HID0001")),
        ]
    )
    items = {x["busid"]: x for x in services.inventory.list_devices(present=True)["items"]}
    assert items["1-1"]["state"] == "free" and items["1-3"]["serial"] == "HID0001"
    services.ingest.apply(
        [
            ev(13, "device_removed", busid="1-1"),
            ev(14, "urb_error", busid="1-3", detail={"kind": "stall", "count": 2}),
        ]
    )
    assert [x["busid"] for x in services.inventory.list_devices(present=True)["items"]] == ["1-3"]
    with db.sf() as s:
        types = s.scalars(select(Event.type).order_by(Event.id)).all()
    assert types == ["attached", "detached", "device_added", "device_removed", "urb_error"]


def test_telemetry_updates_counters_and_keeps_every_sample(services: Services, db: Db) -> None:
    bring_online(services, DONGLE_A, [device("1-1")])
    t0 = time.time()
    batch = [
        msg(
            "telemetry",
            DONGLE_A if i % 2 else DONGLE_B,
            {
                "seq": 100 + i,
                "uptime_s": 1000 + i,
                "interval_s": 10,
                "heap_free": 170000 + i,
                "rssi": None,
                "devices": [
                    {
                        "busid": "1-1",
                        "urbs": i,
                        "bytes_in": 512 * i,
                        "bytes_out": 64,
                        "unlinks": 0,
                        "queue_depth": 0,
                        "errors": {"stall": 0},
                        "latency_us": {"p50": 300, "p99": 1900},
                    }
                ],
            },
            at=t0 + i / 1000,
        )
        for i in range(300)
    ]
    services.ingest.apply(batch)
    with db.sf() as s:
        assert s.scalar(select(func.count()).select_from(TelemetrySample)) == 300
        a = s.get(Dongle, DONGLE_A)
        assert a is not None and a.heap_free == 170000 + 299 and a.uptime_s == 1000 + 299
        b = s.get(Dongle, DONGLE_B)  # created by its first telemetry
        assert b is not None and b.status == "unknown"
    dev = services.inventory.list_devices(dongle=DONGLE_A)["items"][0]
    assert dev["counters"]["urbs"] == 299 and dev["counters"]["bytes_in"] == 512 * 299


def test_duplicate_or_stale_state_is_ignored(services: Services) -> None:
    services.ingest.apply([status(DONGLE_A, "online"), state(DONGLE_A, [device("1-1")], seq=50, uptime=500)])
    services.ingest.apply([state(DONGLE_A, [], seq=49, uptime=501)])  # out-of-order older snapshot
    assert len(services.inventory.list_devices(present=True)["items"]) == 1
    services.ingest.apply([state(DONGLE_A, [], seq=1, uptime=3)])  # rebooted: seq restarts
    assert services.inventory.list_devices(present=True)["items"] == []


def test_cmd_result_marks_command_acked_or_rejected(services: Services, db: Db, publisher) -> None:
    services.users.add("bob", "user")
    bob = services.users.authenticate(services.users.issue_token("bob"))
    assert bob is not None
    bring_online(services, DONGLE_A, [device("1-1")])
    lease = services.leases.acquire(bob, 1, clients=["127.0.0.1"])
    ((_, name, grant),) = publisher.sent
    assert name == "grant" and grant["lease_id"] == lease["id"]
    services.ingest.apply(
        [msg("cmd-result", DONGLE_A, {"request_id": grant["request_id"], "command": "grant", "ok": True})]
    )
    services.leases.release(bob, lease["id"])
    revoke = publisher.sent[-1][2]
    services.ingest.apply(
        [
            msg(
                "cmd-result",
                DONGLE_A,
                {
                    "request_id": revoke["request_id"],
                    "command": "revoke",
                    "ok": False,
                    "error": "no such session",
                },
            )
        ]
    )
    with db.sf() as s:
        rows = {c.name: c for c in s.scalars(select(Command))}
    assert rows["grant"].state == "acked" and rows["grant"].answered_at is not None
    assert rows["revoke"].state == "rejected" and rows["revoke"].error == "no such session"


def test_mdns_marks_discovery_and_fills_fields(services: Services) -> None:
    services.ingest.apply(
        [
            msg(
                "mdns",
                DONGLE_A,
                {
                    "present": True,
                    "address": "127.0.0.7",
                    "port": 3240,
                    "txt": {
                        "v": "1",
                        "id": DONGLE_A,
                        "fw": "0.3.2",
                        "chip": "esp32p4",
                        "rev": "100",
                        "ndev": "0",
                    },
                },
                source="mdns",
            )
        ]
    )
    d = services.inventory.get_dongle(DONGLE_A)
    assert d["discovered_by"] == ["mdns"] and d["ip"] == "127.0.0.7"
    assert d["chip"] == {"model": "esp32p4", "revision": 100} and d["firmware"]["version"] == "0.3.2"
    services.ingest.apply([status(DONGLE_A, "online")])
    assert services.inventory.get_dongle(DONGLE_A)["discovered_by"] == ["mdns", "mqtt"]


def test_bad_messages_are_skipped_without_losing_the_batch(services: Services) -> None:
    services.ingest.apply(
        [
            msg("status", "not-a-dongle", {"status": "online"}),
            status(DONGLE_A, "online"),
            state(
                DONGLE_A, [device("1-1"), {"busid": "0-0", "vid": 1, "pid": 1}, {"busid": "1-2", "vid": -1}]
            ),
        ]
    )
    assert services.ingest.skipped == 1
    assert [x["busid"] for x in services.inventory.list_devices()["items"]] == ["1-1"]


def test_dongle_back_online_gets_the_grants_of_its_active_leases(services: Services, publisher) -> None:
    services.users.add("alice", "user")
    alice = services.users.authenticate(services.users.issue_token("alice"))
    assert alice is not None
    bring_online(services, DONGLE_A, [device("1-1"), device("1-2", serial="SECOND0002")])
    dev_ids = [x["id"] for x in services.inventory.list_devices()["items"]]
    lease = services.leases.acquire(alice, dev_ids[1], clients=["127.0.0.9"])
    grants_before = [p for d, n, p in publisher.sent if n == "grant"]
    assert len(grants_before) == 1

    # a reboot: Last Will, then online again -> the dongle lost its grant table
    services.ingest.apply([status(DONGLE_A, "offline", "lwt")])
    assert [n for _, n, _ in publisher.sent].count("grant") == 1
    services.ingest.apply([status(DONGLE_A, "online")])
    grants = [(d, p) for d, n, p in publisher.sent if n == "grant"]
    assert len(grants) == 2
    dongle, payload = grants[-1]
    assert dongle == DONGLE_A and payload["busid"] == "1-2" and payload["clients"] == ["127.0.0.9"]
    assert payload["lease_id"] == lease["id"]
    assert payload["request_id"] != grants_before[0]["request_id"]

    # an online message while already online re-sends nothing; a released lease is not re-granted
    services.ingest.apply([status(DONGLE_A, "online")])
    services.leases.release(alice, lease["id"])
    services.ingest.apply([status(DONGLE_A, "offline", "lwt")])
    services.ingest.apply([status(DONGLE_A, "online")])
    assert [n for _, n, _ in publisher.sent].count("grant") == 2
