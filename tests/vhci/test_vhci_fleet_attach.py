"""`fleet attach` end to end through the Linux kernel's vhci-hcd.

The guest mounts this machine's file system read-only (virtfs) and runs the project's
own `fleet` (tests/vhci/guest_fleet.sh, chrooted) with Debian's usbip against the guest
kernel. It reaches the real service and the simulated dongle through slirp guestfwd
relays to 127.0.0.1, so the dongle sees every guest connection from 127.0.0.1: that is
the lease's client address.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from vhci_guest import GUEST_ADDR, run_guest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from client.labkit import Lab, Service, dongle_binary  # noqa: E402

from fleet.usbip.simdongle import SimDongle  # noqa: E402

pytestmark = [pytest.mark.vhci, pytest.mark.mosquitto, pytest.mark.dongle]
REPO = Path(__file__).resolve().parents[2]
DEVICES = ["msc:size=16M,port=1-1", "hid-keyboard:port=1-2"]


@pytest.mark.timeout(600)  # TCG guest running Python: minutes when the machine is busy
def test_fleet_attach_in_a_real_kernel(tmp_path: Path):
    svc = Service(tmp_path / "svc")
    svc.start({"admin": "admin", "alice": "user", "bob": "user"})
    lab = Lab(svc, tmp_path)
    try:
        d, b = lab.dongle(DEVICES)
        lab.name_device(b.id, "1-1", "disk-1", ["storage"])
        lab.name_device(b.id, "1-2", "kbd-1", ["hid"])
        env = tmp_path / "guest.env"
        env.write_text(
            f"FLEET_URL=http://{GUEST_ADDR}:{svc.port}\nFLEET_TOKEN={lab.tokens['alice']}\nFLEET_USER=alice\n"
            f"FLEET_CLIENT_ADDRESS=127.0.0.1\n"
            f"FLEET_DONGLE_ROUTES=127.0.0.1:{d.port}={GUEST_ADDR}:{d.port}\n"
            f"REPO={REPO}\nDISK=disk-1\nKBDNAME=kbd-1\nKBDBUS=1-2\nDPORT={d.port}\nSERVER={GUEST_ADDR}\n"
        )
        acts: list[str] = []

        def on_act(words: list[str]) -> None:
            acts.append(" ".join(words))
            if words == ["lease-other"]:
                with lab.api("bob") as c:
                    r = c.post("/leases", json={"device": "kbd-1", "duration_s": 600, "clients": ["127.0.0.9"]})
                    assert r.status_code == 201, r.text
            elif words == ["reboot"]:
                cur = lab.dongles[0][0]
                port = cur.port
                cur.stop()
                time.sleep(0.3)  # the guest's vhci notices the dropped connection
                new = SimDongle(DEVICES, args=["--enforce-grants", *b.args(), "--listen", f"127.0.0.1:{port}"],
                                binary=dongle_binary()).start()
                lab.dongles[0] = (new, b)
                b.rebooted(new)
            else:
                raise ValueError(f"unknown action {words}")

        r = run_guest("host", d.port, on_act, {"script": str(REPO / "tests/vhci/guest_fleet.sh"),
                                               "env": str(env)},
                      timeout=420, log_path=tmp_path / "guest.log", forwards=(svc.port,), share_host_root=True)
        print(r.log())
        for step in ("hostfs", "attach", "node", "vhci_port", "io", "nonholder", "reattach", "io_after_reattach",
                     "detach", "no_port", "lease_env", "lease_false", "no_port_after_lease", "script"):
            assert r.ok(step), f"{step}: {r.detail(step)}\nfailed: {r.failed()}"
        assert "attach request for 1-2 failed" in r.detail("nonholder").lower()
        with lab.api("admin") as c:
            active = c.get("/leases", params={"state": "active"}).json()["items"]
            disk = c.get("/leases", params={"device": "disk-1"}).json()["items"]
        assert [x["device"]["name"] for x in active] == ["kbd-1"]  # only bob's
        # attach..detach, then lease -- failing command: both released by the client, none left
        assert [(x["holder"], x["state"]) for x in disk] == [("alice", "released")] * 2, disk
    finally:
        lab.close()
        svc.stop()
