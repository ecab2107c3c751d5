"""The host abstraction, preflight and local files, against a sysfs tree with the kernel's formats."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

from fleet.client import credentials, preflight, session
from fleet.client.errors import ClientError
from fleet.client.host import Sysfs, Usbip, classify, parse_status, parse_usbip_port

from .fakesys import make_usb_device, make_vhci

# What `usbip port` (usbip-utils 2.0) prints for two imported devices.
USBIP_PORT_OUT = """Imported USB devices
====================
Port 00: <Port in Use> at Full Speed(12Mbps)
       unknown vendor : unknown product (1209:0008)
       3-1 -> usbip://198.18.0.100:40123/1-1
           -> remote bus/dev 001/002
Port 09: <Port in Use> at Super Speed(5000Mbps)
       unknown vendor : unknown product (0781:5581)
       4-1 -> usbip://fleet-dongle-7:3240/1-2.3
           -> remote bus/dev 001/005
"""


def test_status_file_parses_hub_ports_and_local_busid(tmp_path):
    make_vhci(tmp_path, used={0: (2, "3-1"), 9: (5, "4-1")})
    ports = Sysfs(tmp_path).ports()
    assert len(ports) == 16
    assert [p.port for p in ports] == list(range(16))
    used = [p for p in ports if not p.free]
    assert [(p.hub, p.port, p.speed_name, p.local_busid) for p in used] == [
        ("hs", 0, "full", "3-1"), ("ss", 9, "super", "4-1")]
    assert len(Sysfs(tmp_path).free_ports("hs")) == 7


def test_status_parser_rejects_malformed_lines():
    with pytest.raises(ValueError, match="not a vhci status file"):
        parse_status("garbage\n")
    with pytest.raises(ValueError, match="line 2 has 3 fields"):
        parse_status("hub port sta spd dev sockfd local_busid\nhs 0000 004\n")
    with pytest.raises(ValueError, match="malformed"):
        parse_status("hub port sta spd dev sockfd local_busid\nhs 00x0 004 000 00000000 000000 0-0\n")


def test_old_kernel_status_format_without_hub_column():
    ports = parse_status("port sta spd dev      sockfd local_busid\n0000 006 002 00010002 000003 3-1\n")
    assert ports[0].hub == "hs" and ports[0].local_busid == "3-1" and ports[0].devid == 0x10002


def test_usbip_port_output():
    imps = parse_usbip_port(USBIP_PORT_OUT)
    assert [(i.port, i.host, i.tcp_port, i.remote_busid, i.local_busid) for i in imps] == [
        (0, "198.18.0.100", 40123, "1-1", "3-1"), (9, "fleet-dongle-7", 3240, "1-2.3", "4-1")]
    assert imps[0].speed == "full speed"


@pytest.mark.parametrize("kind,nodes", [
    ("disk", ["/dev/sdb"]),
    ("serial", ["/dev/ttyACM0"]),
    ("keyboard", ["/dev/hidraw0", "/dev/input/event3"]),
])
def test_local_device_nodes(tmp_path, kind, nodes):
    make_usb_device(tmp_path, "3-1", 3, 2, kind)
    dev = Sysfs(tmp_path).local_device("3-1")
    assert dev.nodes == nodes
    assert dev.usb_node == "/dev/bus/usb/003/002"
    assert nodes[0] in dev.describe() and "bus 003 device 002" in dev.describe()


def test_imported_records(tmp_path):
    d = tmp_path / "var/run/vhci_hcd"
    d.mkdir(parents=True)
    (d / "port0").write_text("127.0.0.5 3240 1-1\n")
    (d / "port3").write_text("broken\n")
    assert Sysfs(tmp_path).imported() == {0: ("127.0.0.5", 3240, "1-1")}


def test_usbip_messages_are_classified():
    assert classify("usbip: error: open vhci_driver")[0] == "vhci"
    assert classify("usbip: error: Attach Request for 1-1 failed - Request Rejected")[0] == "refused"
    assert classify("usbip: error: tcp connect")[0] == "connect"


def test_usbip_argv_uses_sudo_and_tcp_port():
    u = Usbip(binary="/usr/sbin/usbip", sudo=True)
    assert u.argv(["port"]) == ["sudo", "-n", "/usr/sbin/usbip", "port"]


def test_preflight_messages_carry_the_fix(tmp_path):
    sysfs = Sysfs(tmp_path)
    with pytest.raises(ClientError) as e:
        preflight.vhci_loaded(sysfs)
    assert "sudo modprobe vhci-hcd" in str(e.value)
    with pytest.raises(ClientError) as e:
        preflight.usbip_tool(Usbip(binary=str(tmp_path / "nope"), sudo=False))
    assert "apt install usbip" in str(e.value) and "dnf install usbip" in str(e.value)
    make_vhci(tmp_path, used={i: (2, f"3-{i + 1}") for i in range(8)})
    with pytest.raises(ClientError) as e:
        preflight.free_port(sysfs, "high")
    assert "all 8 are in use" in e.value.message and "8 per controller" in e.value.message
    preflight.free_port(sysfs, "super")  # the SuperSpeed hub still has room
    dev = {"name": "jlink-3", "speed": "high", "dongle_id": "esp-1", "busid": "1-1"}
    with pytest.raises(ClientError) as e:
        preflight.speed_supported(dev, {"id": "esp-1", "chip": {"model": "esp32s3"}})
    assert "high-speed" in e.value.message and "esp32s3" in e.value.message and "ESP32-P4" in str(e.value)
    preflight.speed_supported(dev, {"id": "esp-2", "chip": {"model": "esp32p4"}})


def test_credentials_file_is_private_and_env_overrides(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    for k in ("FLEET_URL", "FLEET_TOKEN", "FLEET_USER"):
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(ClientError, match="no fleet server configured"):
        credentials.load()
    path = credentials.save(credentials.Credentials("http://127.0.0.1:8080", "tok", "alice"))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert json.loads(path.read_text())["token"] == "tok"
    assert credentials.load() == credentials.Credentials("http://127.0.0.1:8080", "tok", "alice")
    monkeypatch.setenv("FLEET_URL", "http://127.0.0.2:9000/")
    monkeypatch.setenv("FLEET_TOKEN", "other")
    assert credentials.load().url == "http://127.0.0.2:9000" and credentials.load().token == "other"
    with pytest.raises(ClientError, match="http"):
        credentials.normalize_url("ftp://x")


def test_durations_and_routes():
    assert session.parse_duration("2h") == 7200
    assert session.parse_duration("1h30m") == 5400
    assert session.parse_duration("45") == 45
    for bad in ("", "2x", "h", "-5m"):
        with pytest.raises(ClientError, match="duration"):
            session.parse_duration(bad)
    assert session.parse_routes("127.0.0.5:3240=198.18.0.100:40001") == {
        ("127.0.0.5", 3240): ("198.18.0.100", 40001)}
    with pytest.raises(ClientError, match="IP:PORT=IP:PORT"):
        session.parse_routes("127.0.0.5")


def _fleet(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "import sys; from fleet.cli import main; sys.exit(main())", *args],
                          capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})})


def test_shell_completion_scripts_and_answers():
    bash = _fleet("completion", "bash")
    assert bash.returncode == 0 and "_FLEET_COMPLETE=complete_bash" in bash.stdout
    assert "complete_zsh" in _fleet("completion", "zsh").stdout
    assert "complete_fish" in _fleet("completion", "fish").stdout
    bad = _fleet("completion", "tcsh")
    assert bad.returncode == 2 and "choose bash, zsh or fish" in bad.stderr
    # what bash gets back when the user typed `fleet at<TAB>`
    r = _fleet(env={"_FLEET_COMPLETE": "complete_bash", "COMP_WORDS": "fleet at", "COMP_CWORD": "1"})
    assert r.stdout.split() == ["attach"]
