"""fleet-dongle as a USB/IP server, seen by our Python client and by Debian's usbip:
device list, import rules, lease enforcement, control transfers, hot-plug,
malformed input and the stats counters."""

from __future__ import annotations

import json
import struct
import subprocess
import time

import pytest

from fleet.usbip import (
    DIR_IN,
    DIR_OUT,
    ImportRefused,
    OpStatus,
    RetSubmit,
    SessionClosed,
    Speed,
    devlist,
    import_device,
)
from fleet.usbip.constants import ENODEV, EPIPE

pytestmark = [pytest.mark.dongle, pytest.mark.timeout(60)]

PROBE_OUT, PROBE_IN = 1, 1


def _echo(s, payload: bytes) -> bytes:
    """Vendor echo 0x80 through the probe: one OUT packet, one IN reply."""
    assert payload[0] == 0x80 and len(payload) <= 64
    out = s.transfer(PROBE_OUT, DIR_OUT, payload, timeout=5)
    assert out.status == 0 and out.actual_length == len(payload)
    r = s.transfer(PROBE_IN, DIR_IN, 64, timeout=5)
    assert r.status == 0
    return r.data


def _closed_within(s, seconds: float) -> list[RetSubmit]:
    """Reads until the server closes the session; returns what came before."""
    got = []
    deadline = time.monotonic() + seconds
    with pytest.raises(SessionClosed):
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"session still open after {seconds} s; received {got}")
            got.append(s.recv(timeout=left))
    return got


# ---------------------------------------------------------------- device list


def test_devlist_describes_every_device(dongle):
    devs = {d.busid: d for d in devlist(dongle.host, dongle.port)}
    assert sorted(devs) == ["1-1", "1-2", "1-3", "1-4"]
    assert {b: d.vid_pid for b, d in devs.items()} == {
        "1-1": "1209:0001",
        "1-2": "1209:0002",
        "1-3": "1209:0004",
        "1-4": "1209:0004",
    }
    assert all(d.speed == Speed.FULL for d in devs.values())
    assert [(i.cls, i.subclass, i.protocol) for i in devs["1-1"].interfaces] == [(8, 6, 0x50)]
    assert [(i.cls, i.subclass, i.protocol) for i in devs["1-2"].interfaces] == [(3, 1, 1)]
    assert [(i.cls, i.subclass, i.protocol) for i in devs["1-3"].interfaces] == [(0xFF, 0, 0)]
    assert len({d.devid for d in devs.values()}) == 4  # devids tell the devices apart
    assert all(d.path and d.num_configurations == 1 for d in devs.values())


def test_high_speed_msc_reports_high_speed(start_dongle):
    d = start_dongle(
        ["msc:size=4M,speed=high,port=1-1"], ["--chip", "p4"]
    )  # the S3 root port is Full-Speed only
    (dev,) = devlist(d.host, d.port)
    assert dev.speed == Speed.HIGH


def test_debian_usbip_list_shows_the_devices(dongle):
    r = subprocess.run(
        ["/usr/sbin/usbip", "--tcp-port", str(dongle.port), "list", "-r", "127.0.0.1"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert r.returncode == 0, r.stderr
    for busid, vp in (("1-1", "1209:0001"), ("1-2", "1209:0002"), ("1-3", "1209:0004")):
        line = next((ln for ln in r.stdout.splitlines() if ln.strip().startswith(f"{busid}:")), None)
        assert line is not None, r.stdout
        assert f"({vp})" in line
    assert "(08/06/50)" in r.stdout and "(03/01/01)" in r.stdout


def test_device_plugged_at_runtime_appears_and_works(start_dongle, open_session):
    d = start_dongle(["msc:size=4M,port=1-1"])  # the S3 root hub has 4 ports: leave some free
    busid = d.plug("probe")
    assert busid == "1-2"  # next free root port
    devs = {x.busid: x for x in devlist(d.host, d.port)}
    assert devs["1-2"].vid_pid == "1209:0004"
    s = open_session(d, "1-2")
    assert _echo(s, b"\x80hello") == b"\x80hello"
    assert any(x["busid"] == "1-2" for x in d.list())


def test_bad_plug_spec_is_refused_and_nothing_changes(start_dongle):
    from fleet.usbip.simdongle import ControlError

    d = start_dongle(["probe:port=1-1"])
    with pytest.raises(ControlError, match="toaster"):
        d.plug("toaster")
    with pytest.raises(ControlError, match="size"):
        d.plug("msc:size=banana")
    with pytest.raises(ControlError, match="1-1"):
        d.plug("probe:port=1-1")  # occupied
    assert [x.busid for x in devlist(d.host, d.port)] == ["1-1"]


# ---------------------------------------------------------------- import rules


def test_import_returns_the_requested_device(dongle, open_session):
    s = open_session(dongle, "1-3")
    assert s.device.busid == "1-3" and s.device.vid_pid == "1209:0004"
    assert s.device.interfaces == ()  # IMPORT replies carry no interface records


def test_import_unknown_busid_is_refused_nodev(dongle):
    with pytest.raises(ImportRefused) as e:
        import_device(dongle.host, dongle.port, "9-9")
    assert e.value.status == OpStatus.NODEV


def test_import_busy_while_another_connection_holds_it(dongle, open_session):
    first = open_session(dongle, "1-3")
    with pytest.raises(ImportRefused) as e:
        import_device(dongle.host, dongle.port, "1-3")
    assert e.value.status == OpStatus.DEV_BUSY
    assert _echo(first, b"\x80still mine") == b"\x80still mine"  # the refusal did not disturb the owner
    first.close()
    deadline = time.monotonic() + 2
    while True:  # released once the server has seen the close
        try:
            second = open_session(dongle, "1-3")
            break
        except ImportRefused:
            assert time.monotonic() < deadline, "busid not released 2 s after its session closed"
            time.sleep(0.05)
    assert _echo(second, b"\x80again") == b"\x80again"


def test_reimport_without_set_configuration_loses_nothing(dongle, open_session):
    """A client that goes straight to bulk traffic after import (no
    SET_CONFIGURATION) must either be served or get an error: an OUT URB that
    reports success while the device never saw the bytes loses data silently."""
    first = open_session(dongle, "1-3", configure=False)
    assert _echo(first, b"\x80one") == b"\x80one"
    first.close()
    time.sleep(0.3)
    second = open_session(dongle, "1-3", configure=False)
    before = json.loads(dongle.dev("1-3", "stats"))["commands"]
    out = second.transfer(PROBE_OUT, DIR_OUT, b"\x80two", timeout=5)
    if out.status == 0:
        assert json.loads(dongle.dev("1-3", "stats"))["commands"] == before + 1, (
            "OUT URB completed with status 0 but the probe never received the command"
        )
        assert second.transfer(PROBE_IN, DIR_IN, 64, timeout=5).data == b"\x80two"


def test_enforced_grants_refuse_others_and_accept_the_grantee(start_dongle, open_session):
    d = start_dongle(args=["--enforce-grants"])
    with pytest.raises(ImportRefused) as e:
        import_device(d.host, d.port, "1-3")
    assert e.value.status == OpStatus.NA
    d.command("grant 1-3 127.0.0.2 lease-42")
    with pytest.raises(ImportRefused) as e:
        import_device(d.host, d.port, "1-3", source="127.0.0.1")
    assert e.value.status == OpStatus.NA
    s = open_session(d, "1-3", source="127.0.0.2")
    assert _echo(s, b"\x80granted") == b"\x80granted"
    (entry,) = [x for x in d.list() if x["busid"] == "1-3"]
    assert entry["granted_to"] == ["127.0.0.2"]
    assert entry["attached_to"].startswith("127.0.0.2")
    # a device granted to someone else is hidden from other clients' lists
    assert "1-3" not in [x.busid for x in devlist(d.host, d.port, source="127.0.0.1")]
    assert "1-3" in [x.busid for x in devlist(d.host, d.port, source="127.0.0.2")]


def test_revoke_closes_the_session_within_one_second(start_dongle, open_session):
    d = start_dongle(args=["--enforce-grants"])
    d.command("grant 1-3 127.0.0.1")
    s = open_session(d, "1-3")
    s.submit(PROBE_IN, DIR_IN, 64)  # pending: the probe has nothing to say
    t0 = time.monotonic()
    d.command("revoke 1-3")
    got = _closed_within(s, 1.0)
    assert time.monotonic() - t0 < 1.0
    assert all(r.status != 0 for r in got)  # nothing pretends to have completed
    with pytest.raises(ImportRefused):
        import_device(d.host, d.port, "1-3")


def test_enforce_toggle_at_runtime(start_dongle, open_session):
    d = start_dongle()
    d.command("enforce on")
    with pytest.raises(ImportRefused):
        import_device(d.host, d.port, "1-3")
    d.command("enforce off")
    assert open_session(d, "1-3").device.busid == "1-3"


# ---------------------------------------------------------------- control transfers


def test_descriptors_and_clamped_control_reads(dongle, open_session):
    s = open_session(dongle, "1-1")
    dd = s.device_descriptor()
    assert len(dd) == 18 and dd[0] == 18 and dd[1] == 1
    assert struct.unpack_from("<HH", dd, 8) == (0x1209, 0x0001)
    # fewer bytes than the descriptor has: exactly that many, the first ones
    r = s.control(0x80, 6, 0x0100, 0, 8)
    assert r.status == 0 and r.actual_length == 8 and r.data == dd[:8]
    head = s.get_descriptor(2, 0, 9)
    total = struct.unpack_from("<H", head, 2)[0]
    assert len(head) == 9 and total > 9
    cfg = s.config_descriptor()
    assert len(cfg) == total and cfg[:9] == head
    # more bytes asked than exist: only what exists
    r = s.control(0x80, 6, 0x0200, 0, 1024)
    assert r.status == 0 and r.actual_length == total
    assert s.string(dd[15])  # iProduct string is readable UTF-16


def test_unsupported_request_stalls_and_the_session_goes_on(dongle, open_session):
    s = open_session(dongle, "1-3")
    r = s.control(0x80, 6, 0x4200, 0, 64)  # descriptor type 0x42 does not exist
    assert r.status == EPIPE and r.actual_length == 0
    assert s.device_descriptor()[1] == 1


# ---------------------------------------------------------------- hot-plug


def test_unplug_during_transfer_fails_pending_urbs_and_spares_other_sessions(dongle, open_session):
    probe = open_session(dongle, "1-3")
    other = open_session(dongle, "1-4")
    seqs = {probe.submit(PROBE_IN, DIR_IN, 64), probe.submit(PROBE_IN, DIR_IN, 4096)}
    time.sleep(0.1)
    dongle.unplug("1-3")
    got = _closed_within(probe, 2.0)
    assert {r.seqnum for r in got} == seqs
    assert all(isinstance(r, RetSubmit) and r.status == ENODEV for r in got)
    assert "1-3" not in [x.busid for x in devlist(dongle.host, dongle.port)]
    assert _echo(other, b"\x80alive") == b"\x80alive"


# ---------------------------------------------------------------- malformed input


def _bad_command(devid):
    return struct.pack(">IIIII", 9, 100, devid, 0, 0) + bytes(28)


def _wrong_devid(devid):
    return struct.pack(">IIIIIIiiii", 1, 101, devid ^ 0x5A5A, 1, 1, 0, 64, 0, 0, 0) + bytes(8)


def _absurd_length(devid):
    return struct.pack(">IIIIIIiiii", 1, 102, devid, 0, 1, 0, 0x7FFFFFFF, 0, 0, 0) + bytes(8)


def _bad_direction(devid):
    return struct.pack(">IIIIIIiiii", 1, 103, devid, 7, 1, 0, 64, 0, 0, 0) + bytes(8)


@pytest.mark.parametrize("forge", [_bad_command, _wrong_devid, _absurd_length, _bad_direction])
def test_malformed_pdu_closes_only_that_session(dongle, open_session, forge):
    bad = open_session(dongle, "1-3")
    good = open_session(dongle, "1-4")
    bad.send_raw(forge(bad.devid))
    got = _closed_within(bad, 2.0)
    assert not any(isinstance(r, RetSubmit) and r.status == 0 for r in got)
    assert _echo(good, b"\x80unharmed") == b"\x80unharmed"
    assert len(devlist(dongle.host, dongle.port)) == 4
    # the busid is free again for a well-behaved client
    deadline = time.monotonic() + 2
    while True:
        try:
            again = open_session(dongle, "1-3")
            break
        except ImportRefused:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert _echo(again, b"\x80back") == b"\x80back"


def test_garbage_in_management_phase_is_dropped(dongle):
    import socket

    with socket.create_connection((dongle.host, dongle.port), timeout=3) as c:
        c.sendall(b"GET / HTTP/1.0\r\n\r\n" + bytes(64))
        c.settimeout(3)
        data = b""
        try:
            while chunk := c.recv(4096):
                data += chunk
        except TimeoutError:
            raise AssertionError("connection with garbage still open after 3 s") from None
        except ConnectionResetError:
            pass
        assert not data.startswith(b"\x01\x11\x00\x05")  # no device list for garbage
    assert len(devlist(dongle.host, dongle.port)) == 4


# ---------------------------------------------------------------- stats


def test_stats_counters_move_with_traffic(dongle, open_session):
    before = dongle.device_stats("1-3")
    s = open_session(dongle, "1-3")
    for i in range(5):
        assert _echo(s, b"\x80" + bytes([i]) * 20) == b"\x80" + bytes([i]) * 20
    after = dongle.device_stats("1-3")
    assert after["urbs"] - before["urbs"] >= 10
    assert after["bytes_out"] - before["bytes_out"] >= 5 * 21
    assert after["bytes_in"] - before["bytes_in"] >= 5 * 21
    assert after["latency_us"]["p50"] > 0
    stats = dongle.stats()
    assert stats["buffers"]["peak"] > 0 and stats["buffers"]["used"] == 0
    assert stats["buffers"]["peak"] <= stats["buffers"]["budget"]
