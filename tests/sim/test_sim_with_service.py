"""The real service sees a `fleet sim` lab: dongles and devices appear, hot-plug shows
within 2 s, and a dongle process killed with SIGKILL goes offline through its Last Will."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from simlab import SimLab, wait_for

pytestmark = [pytest.mark.dongle, pytest.mark.mosquitto]


def test_service_follows_a_simulated_lab(tmp_path: Path) -> None:
    lab = SimLab(tmp_path, dongles=2, devices="msc,hid", base_address="127.78.0.1")
    try:
        lab.start()
        for d in lab.ids:
            got = wait_for(lambda d=d: len(lab.devices(d)) == 2 and lab.devices(d), 10, f"{d} devices")
            assert sorted((x["busid"], x["state"]) for x in got) == [("1-1", "free"), ("1-2", "free")]
            assert lab.dongle(d)["ip"].startswith("127.78.0.")

        r = lab.simctl("ctl", lab.ids[1], "plug", "probe")
        assert r.returncode == 0 and r.stdout.strip() == "ok 1-3", r.stdout + r.stderr
        t0 = time.monotonic()
        wait_for(lambda: any(x["busid"] == "1-3" for x in lab.devices(lab.ids[1])), 2.0,
                 "plugged probe in the service")
        plugged_after = time.monotonic() - t0

        r = lab.simctl("ctl", lab.ids[1], "unplug", "1-1")
        assert r.returncode == 0, r.stdout
        wait_for(lambda: {x["busid"] for x in lab.devices(lab.ids[1]) if x["state"] != "offline"} == {"1-2", "1-3"},
                 2.0, "unplug in the service")

        # kill -9: no goodbye from anyone; the broker publishes the Last Wills
        lab.kill9_sim()
        for d in lab.ids:
            got = wait_for(lambda d=d: lab.status(d) == "offline" and lab.dongle(d), 60, f"{d} offline by Last Will")
            assert got["status_reason"] == "lwt"
            assert all(x["state"] == "offline" for x in lab.devices(d))
        print(f"hot-plug reached the service in {plugged_after * 1000:.0f} ms")
    finally:
        lab.stop()
