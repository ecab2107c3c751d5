"""`fleet` client commands against the real service, real simulated dongles and Mosquitto."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fleet.client import session
from fleet.client.api import Api
from fleet.client.credentials import Credentials
from fleet.client.errors import EXIT_AUTH, EXIT_BUSY, EXIT_LEASE_ENDED, EXIT_UNREACHABLE, ClientError
from fleet.client.host import Sysfs, Usbip
from fleet.client.keeper import Keeper
from fleet.client.state import Attachment
from fleet.usbip.client import ImportRefused, import_device

from .labkit import free_port
from .fakesys import make_vhci

pytestmark = [pytest.mark.mosquitto, pytest.mark.dongle]
CLI = [sys.executable, "-c", "import sys; from fleet.cli import main; sys.exit(main())"]  # the real `fleet`


def fleet(lab, user, *args, env=None, timeout=60):
    return subprocess.run([*CLI, *args], env={**lab.env(user), **(env or {})}, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def disk_lab(lab):
    d, b = lab.dongle(["msc:size=4M,port=1-1", "hid-keyboard:port=1-2"])
    lab.name_device(b.id, "1-1", "disk-1", ["storage", "probe"])
    lab.name_device(b.id, "1-2", "kbd-1", ["hid"])
    return lab, d, b


def wait_granted(dongle, busid, addr, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dev = next(x for x in dongle.list() if x["busid"] == busid)
        if addr in dev["granted_to"]:
            return
        time.sleep(0.05)
    raise AssertionError(f"{busid} never granted to {addr}: {dongle.list()}")


def test_ls_table_json_and_filters(disk_lab):
    lab, d, b = disk_lab
    with lab.api("alice") as c:
        r = c.post("/leases", json={"device": "disk-1", "duration_s": 600, "clients": ["127.0.0.1"]})
        assert r.status_code == 201, r.text
        until = r.json()["expires_at"]
    out = fleet(lab, "bob", "ls")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["DEVICE", "ID", "STATE", "HOLDER", "UNTIL", "DONGLE", "PORT", "SPEED", "VID:PID",
                                "PRODUCT", "TAGS"]
    disk = next(x for x in lines if x.startswith("disk-1"))
    assert "alice" in disk and until in disk and b.id in disk and "1-1" in disk and "probe,storage" in disk
    kbd = next(x for x in lines if x.startswith("kbd-1"))
    assert " free " in kbd and " full " in kbd

    js = [x for x in json.loads(fleet(lab, "bob", "ls", "--json").stdout) if x["dongle_id"] == b.id]
    assert {x["name"]: x["state"] for x in js} == {"disk-1": "leased", "kbd-1": "free"}
    assert next(x for x in js if x["name"] == "disk-1")["lease"]["holder"] == "alice"

    free = [x for x in json.loads(fleet(lab, "bob", "ls", "--free", "--json").stdout) if x["dongle_id"] == b.id]
    assert [x["name"] for x in free] == ["kbd-1"]
    tagged = json.loads(fleet(lab, "bob", "ls", "--tag", "probe", "--json").stdout)
    assert [x["name"] for x in tagged] == ["disk-1"]
    assert json.loads(fleet(lab, "alice", "ls", "--mine", "--json").stdout)[0]["name"] == "disk-1"
    assert json.loads(fleet(lab, "bob", "ls", "--mine", "--json").stdout) == []

    who = fleet(lab, "bob", "who")
    assert "disk-1" in who.stdout and "alice" in who.stdout and "127.0.0.1" in who.stdout


def test_two_users_race_one_wins_the_other_is_told_the_holder(disk_lab):
    lab, d, b = disk_lab
    apis = {u: Api(Credentials(lab.service.url, lab.tokens[u])) for u in ("alice", "bob")}
    gate = threading.Barrier(2)
    results: dict[str, object] = {}

    def go(user):
        gate.wait()
        try:
            results[user] = session.acquire(apis[user], "disk-1", 600, ["127.0.0.1"], wait=False)
        except ClientError as e:
            results[user] = e

    ts = [threading.Thread(target=go, args=(u,)) for u in apis]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    winners = [u for u, r in results.items() if isinstance(r, dict)]
    assert len(winners) == 1, results
    loser = "bob" if winners[0] == "alice" else "alice"
    err = results[loser]
    assert isinstance(err, ClientError) and err.exit_code == EXIT_BUSY
    assert f"leased by {winners[0]} until {results[winners[0]]['expires_at']}" in err.message

    # the same through the command: host checks pass (a vhci tree with free ports), the lease does not
    root = lab.tmp / "sys-root"
    make_vhci(root)
    out = fleet(lab, loser, "attach", "disk-1", "--for", "10m",
                env={"FLEET_SYSFS_ROOT": str(root), "FLEET_USBIP": "/usr/sbin/usbip"})
    assert out.returncode == EXIT_BUSY, out.stderr
    assert f"disk-1 is leased by {winners[0]} until" in out.stderr
    with lab.api("admin") as c:
        active = c.get("/leases", params={"state": "active"}).json()["items"]
    assert [x["holder"] for x in active] == [winners[0]]


def test_attach_without_vhci_names_the_fix_and_leaves_no_lease(disk_lab):
    lab, d, b = disk_lab
    out = fleet(lab, "alice", "attach", "disk-1", env={"FLEET_SYSFS_ROOT": str(lab.tmp / "empty-root")})
    assert out.returncode == 1
    assert "vhci-hcd kernel module" in out.stderr and "sudo modprobe vhci-hcd" in out.stderr
    out = fleet(lab, "alice", "attach", "disk-1", env={"FLEET_USBIP": "/nonexistent/usbip"})
    assert "apt install usbip" in out.stderr
    with lab.api("admin") as c:
        assert c.get("/leases", params={"state": "active"}).json()["total"] == 0


def test_server_unreachable_and_token_rejected(disk_lab):
    lab, d, b = disk_lab
    out = fleet(lab, "alice", "ls", env={"FLEET_URL": f"http://127.0.0.1:{free_port()}"})
    assert out.returncode == EXIT_UNREACHABLE
    assert "cannot reach the fleet server" in out.stderr and "fix:" in out.stderr
    out = fleet(lab, "alice", "ls", env={"FLEET_TOKEN": "not-a-token"})
    assert out.returncode == EXIT_AUTH
    assert "rejected the token" in out.stderr and "fleet login" in out.stderr


def test_login_stores_private_credentials(disk_lab):
    lab, d, b = disk_lab
    env = lab.env("alice")
    env.pop("FLEET_URL"), env.pop("FLEET_TOKEN"), env.pop("FLEET_USER")
    r = subprocess.run([*CLI, "login", lab.service.url, "--token", lab.tokens["alice"], "--user", "alice"],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    path = Path(env["XDG_CONFIG_HOME"]) / "fleet/credentials.json"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    r = subprocess.run([*CLI, "ls", "--mine"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "no devices match" in r.stdout
    bad = subprocess.run([*CLI, "login", lab.service.url, "--token", "wrong"], env=env, capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == EXIT_AUTH and "rejected the token" in bad.stderr


def test_non_holder_is_refused_by_the_dongle(disk_lab):
    lab, d, b = disk_lab
    with lab.api("alice") as c:
        assert c.post("/leases", json={"device": "disk-1", "duration_s": 600, "clients": ["127.0.0.1"]}).status_code == 201
    wait_granted(d, "1-1", "127.0.0.1")
    with pytest.raises(ImportRefused):
        import_device("127.0.0.1", d.port, "1-1", source="127.0.0.3")
    s = import_device("127.0.0.1", d.port, "1-1", source="127.0.0.1")
    assert s.device_descriptor()[0] == 18
    s.sock.close()


def test_revoke_cuts_the_session_within_2s_and_the_keeper_tells_the_holder(disk_lab, tmp_path, monkeypatch):
    lab, d, b = disk_lab
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    api = Api(Credentials(lab.service.url, lab.tokens["alice"]))
    lease = api.acquire("disk-1", 600, ["127.0.0.1"])
    wait_granted(d, "1-1", "127.0.0.1")
    s = import_device("127.0.0.1", d.port, "1-1")
    assert s.device_descriptor()[0] == 18
    root = tmp_path / "root"
    make_vhci(root)
    att = Attachment(lease_id=lease["id"], device_id=lease["device"]["id"], device="disk-1", dongle_id=b.id,
                     host="127.0.0.1", tcp_port=d.port, busid="1-1")
    said: list[str] = []
    keeper = Keeper(api, session.Host(usbip=Usbip(sudo=False), sysfs=Sysfs(root)), att, duration_s=600,
                    log=said.append)
    with lab.api("admin") as c:
        t0 = time.monotonic()
        r = c.post(f"/leases/{lease['id']}/revoke", json={"reason": "bench needed"})
        assert r.status_code == 200, r.text
    # The dongle closes the connection: recv sees EOF (or a reset), not a timeout.
    s.sock.settimeout(5)
    try:
        assert s.sock.recv(1) == b""
    except ConnectionResetError:
        pass
    cut = time.monotonic() - t0
    assert next(x for x in d.list() if x["busid"] == "1-1")["attached_to"] is None
    print(f"revoke -> session closed on the dongle: {cut * 1000:.0f} ms")
    assert cut < 2.0, f"session cut after {cut:.2f} s"
    assert keeper.step() == EXIT_LEASE_ENDED
    assert any("revoked" in m and "bench needed" in m for m in said), said


def test_keeper_renews_a_short_lease(disk_lab, tmp_path, monkeypatch):
    lab, d, b = disk_lab
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    api = Api(Credentials(lab.service.url, lab.tokens["alice"]))
    lease = api.acquire("disk-1", 30, ["127.0.0.1"])
    root = tmp_path / "root"
    make_vhci(root, used={0: (2, "3-1")})
    (root / "var/run/vhci_hcd").mkdir(parents=True)
    (root / "var/run/vhci_hcd/port0").write_text(f"127.0.0.1 {d.port} 1-1\n")
    att = Attachment(lease_id=lease["id"], device_id=lease["device"]["id"], device="disk-1", dongle_id=b.id,
                     host="127.0.0.1", tcp_port=d.port, busid="1-1", vhci_port=0)
    said: list[str] = []
    keeper = Keeper(api, session.Host(usbip=Usbip(sudo=False), sysfs=Sysfs(root)), att, duration_s=600,
                    log=said.append)
    assert keeper.step() is None
    after = session.parse_iso(api.lease(lease["id"])["expires_at"])
    assert after - time.time() > 500, "the keeper did not renew a lease about to run out"
    assert said == []  # attached (per sysfs) and renewed: nothing to report


def test_extend_and_release_through_the_commands(disk_lab):
    lab, d, b = disk_lab
    with lab.api("alice") as c:
        lease = c.post("/leases", json={"device": "disk-1", "duration_s": 600, "clients": ["127.0.0.1"]}).json()
    out = fleet(lab, "alice", "extend", "disk-1", "--for", "30m")
    assert out.returncode == 0, out.stderr
    with lab.api("alice") as c:
        now = c.get(f"/leases/{lease['id']}").json()
    assert session.parse_iso(now["expires_at"]) - session.parse_iso(lease["expires_at"]) == 1800
    assert now["expires_at"] in out.stdout
    bad = fleet(lab, "alice", "extend", "disk-1", "--for", "soon")
    assert bad.returncode == 2 and "duration must look like" in bad.stderr
    assert fleet(lab, "bob", "release", "disk-1").returncode == 1  # not bob's to release
    out = fleet(lab, "alice", "release", "disk-1")
    assert out.returncode == 0 and f"lease {lease['id']}" in out.stdout, out.stderr
    with lab.api("alice") as c:
        assert c.get(f"/leases/{lease['id']}").json()["state"] == "released"


def test_wait_in_line_for_a_tag(disk_lab):
    lab, d, b = disk_lab
    alice = Api(Credentials(lab.service.url, lab.tokens["alice"]))
    bob = Api(Credentials(lab.service.url, lab.tokens["bob"]))
    first = alice.acquire("tag:probe", 600, ["127.0.0.1"])
    said: list[str] = []
    got: dict = {}
    t = threading.Thread(target=lambda: got.update(session.acquire(
        bob, "tag:probe", 600, ["127.0.0.1"], wait=True, wait_timeout=20, poll_s=0.2, say=said.append)))
    t.start()
    time.sleep(1.0)
    assert not got and said and "leased" in said[0]  # in line, and told why
    alice.release(first["id"])
    t.join(20)
    assert got["device"]["name"] == "disk-1" and got["holder"] == "bob"
