"""Helpers for the agent's end-to-end tests: a dongle process and an MQTT observer."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import paho.mqtt.client as mqtt

MOSQUITTO = ("127.0.0.1", 1883)
REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "agent_fw" / "host" / "build"


def built_binary(env: str, default: Path) -> Path:
    """A program of the C build: $env, else its place in agent_fw/host/build; a clear failure if missing."""
    import os  # noqa: PLC0415

    import pytest  # noqa: PLC0415

    path = Path(os.environ.get(env, str(default)))
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.fail(
            f"{path} is missing: build agent_fw/host first "
            f"(cmake -S agent_fw/host -B agent_fw/host/build && cmake --build agent_fw/host/build -j2) "
            f"or point {env} at it"
        )
    return path
MQTT_URL = f"mqtt://{MOSQUITTO[0]}:{MOSQUITTO[1]}"


def random_mac() -> str:
    # locally administered unicast, so it never collides with a real vendor MAC
    return "02" + secrets.token_hex(5)


def request_id() -> str:
    return str(uuid.uuid4())


class Observer:
    """Subscribes to fleet/v1/<id>/# for some dongles and records every message."""

    def __init__(self, dongle_ids: Sequence[str]) -> None:
        self.dongle_ids = list(dongle_ids)
        self.messages: list[tuple[str, dict | str, bool]] = []
        self.arrived: list[float] = []  # time.monotonic() of each message, parallel to messages
        self.cond = threading.Condition()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"obs-{secrets.token_hex(4)}")
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.connect(*MOSQUITTO, 30)
        self.client.loop_start()
        self.client.subscribe([(f"fleet/v1/{d}/#", 1) for d in dongle_ids])
        assert subscribed.wait(10), "observer subscription not acknowledged"

    def _on_message(self, client, userdata, msg) -> None:
        try:
            payload: dict | str = json.loads(msg.payload)
        except ValueError:
            payload = msg.payload.decode("utf-8", "replace")
        with self.cond:
            self.messages.append((msg.topic, payload, bool(msg.retain)))
            self.arrived.append(time.monotonic())
            self.cond.notify_all()

    def wait_for(self, pred: Callable[[str, dict], bool], timeout: float = 10.0, after: int = 0):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for topic, payload, _ in self.messages[after:]:
                    if isinstance(payload, dict) and pred(topic, payload):
                        return payload
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [(t, p) for t, p, _ in self.messages[after:]][-15:]
                    raise AssertionError(f"not seen within {timeout}s; last messages: {seen}")
                self.cond.wait(left)

    def arrivals(self, topic: str, after: int = 0) -> list[float]:
        """When each message on topic arrived (monotonic seconds), from index after on."""
        with self.cond:
            return [at for (t, _, _), at in zip(self.messages[after:], self.arrived[after:], strict=True)
                    if t == topic]

    def mark(self) -> int:
        with self.cond:
            return len(self.messages)

    def command(self, dongle_id: str, name: str, payload: dict) -> dict:
        """Send cmd/<name> and return the cmd-result answering it."""
        start = self.mark()
        rid = payload.setdefault("request_id", request_id())
        payload.setdefault("v", 1)
        payload.setdefault("issued_at", time.time())
        info = self.client.publish(f"fleet/v1/{dongle_id}/cmd/{name}", json.dumps(payload), qos=1)
        info.wait_for_publish(10)
        return self.wait_for(
            lambda t, p: t.endswith("/cmd-result") and p.get("request_id") == rid, after=start
        )

    def raw(self, dongle_id: str, name: str, text: bytes) -> None:
        self.client.publish(f"fleet/v1/{dongle_id}/cmd/{name}", text, qos=1).wait_for_publish(10)

    def close(self) -> None:
        """Also clears the retained status/state the test's dongles left (call after they stopped):
        leftovers pile up in the broker and every later subscriber receives them all."""
        for d in self.dongle_ids:
            for leaf in ("status", "state"):
                self.client.publish(f"fleet/v1/{d}/{leaf}", b"", qos=1, retain=True).wait_for_publish(5)
        self.client.loop_stop()
        self.client.disconnect()


class LiveAgents:
    """agent_live: simulated dongles running the C agent with its real posix ports."""

    def __init__(self, binary: Path, n: int = 1, extra: Sequence[str] = (), state_dir: Path | None = None,
                 base_mac: str | None = None) -> None:
        self.base_mac = base_mac or random_mac()
        base = int(self.base_mac, 16)
        self.ids = [f"esp-{base + i:012x}" for i in range(n)]
        args = [str(binary), "--mqtt", MQTT_URL, "--dongles", str(n), "--base-mac", self.base_mac,
                "--base-address", "127.3.0.1", *extra]
        if state_dir is not None:
            args += ["--state-dir", str(state_dir)]
        # stderr to a file: a pipe nobody reads would fill and stall the dongles
        self.log = tempfile.NamedTemporaryFile("w+", prefix="agent_live-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self.proc.stdout.readline()
        assert line.startswith("ready"), f"agent_live did not start: {line!r} {Path(self.log.name).read_text()}"
        # keep reading stdout ("online", "rebooted" lines) so that pipe never fills either
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()

    def stop(self, sig: str = "term") -> int:
        if self.proc.poll() is None:
            if sig == "kill":
                self.proc.kill()
            else:
                self.proc.terminate()
        return self.proc.wait(10)


class MultiDongle:
    """fleet-dongle --dongles N: started and driven through its control socket."""

    def __init__(self, binary: Path, args: Sequence[str], control_dir: Path, timeout: float = 20.0) -> None:
        import socket  # noqa: PLC0415

        self.control = str(control_dir / "control.sock")
        self.log = tempfile.NamedTemporaryFile("w+", prefix="fleet-dongle-", suffix=".log", delete=False)
        self.proc = subprocess.Popen([str(binary), "--control", self.control, *args], stdout=subprocess.PIPE,
                                     stderr=self.log, text=True)
        ready = threading.Event()
        self.banner: list[str] = []

        def read() -> None:
            for line in self.proc.stdout:
                self.banner.append(line)
                if line.startswith("listening on "):
                    ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(timeout):
            self.stop()
            raise AssertionError(f"fleet-dongle did not come up: {self.banner} {Path(self.log.name).read_text()}")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.control)
        self.sock.settimeout(10)
        self.buf = b""

    def command(self, line: str) -> str:
        self.sock.sendall(line.encode() + b"\n")
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            assert chunk, "control channel closed"
            self.buf += chunk
        reply, self.buf = self.buf.split(b"\n", 1)
        return reply.decode()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        return self.proc.wait(20)


# ---- OTA images and manifests for the simulated dongle (docs/ota.md) ----------

FIXTURES = REPO / "agent_fw" / "test" / "unit" / "agent" / "fixtures"
TEST_KEY = FIXTURES / "TEST-ONLY-ota-signing-key.pem"
TEST_PUBKEY = FIXTURES / "TEST-ONLY-ota-signing-key.pub.pem"
POSIX_SIM_CHIP_ID = 0x7E57


def sim_image(version: str, payload: bytes = b"", *, secure_version: int = 0,
              fault: str | None = None) -> bytes:
    """A posix-sim image: the 64-byte FLEETSIM header, then the payload (after a
    `fleet-sim-fault:` line when fault is given)."""
    import struct  # noqa: PLC0415

    head = (b"FLEETSIM" + b"posix-sim".ljust(16, b"\0") + version.encode().ljust(32, b"\0")
            + struct.pack("<IHH", secure_version, 0, 99))
    assert len(head) == 64
    if fault is not None:
        payload = f"fleet-sim-fault: {fault}\n".encode() + payload
    return head + payload


def signed_manifest(image: bytes, version: str, url: str, *, secure_version: int = 0,
                    key: Path = TEST_KEY) -> dict:
    """The cmd/ota body for image, signed with the test-only key by the openssl CLI."""
    import base64  # noqa: PLC0415
    import hashlib  # noqa: PLC0415

    sha = hashlib.sha256(image).hexdigest()
    signed = (f"fleet-ota-v1\n{version}\n{len(image)}\n{sha}\nposix-sim\n{POSIX_SIM_CHIP_ID}\n0\n99\n"
              f"{secure_version}\n0\n").encode()
    sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(key)], input=signed, capture_output=True,
                         check=True).stdout
    return {"v": 1, "request_id": request_id(), "issued_at": int(time.time()), "version": version, "url": url,
            "size": len(image), "sha256": sha, "chip": "posix-sim", "chip_id": POSIX_SIM_CHIP_ID,
            "min_rev": 0, "max_rev": 99, "secure_version": secure_version, "allow_downgrade": False,
            "signature": base64.b64encode(sig).decode()}


class FileServer:
    """http.server on 127.0.0.1 serving one directory (firmware downloads)."""

    def __init__(self, directory: Path) -> None:
        import functools  # noqa: PLC0415
        import http.server  # noqa: PLC0415

        class Quiet(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args) -> None:  # the test output stays readable
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                                     functools.partial(Quiet, directory=str(directory)))
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class RangeServer:
    """The agent tests' range_server.py on 127.0.0.1: honours "Range: bytes=N-" (http.server does not),
    so a download can resume; /fw/NAME serves directory/NAME. Its request log: requests()."""

    def __init__(self, directory: Path) -> None:
        self.log_path = directory.parent / f"{directory.name}-requests.log"
        self.proc = subprocess.Popen([sys.executable, str(FIXTURES.parent / "range_server.py"), "--dir",
                                      str(directory), "--log", str(self.log_path)], stdout=subprocess.PIPE,
                                     text=True)
        line = self.proc.stdout.readline()
        assert line.startswith("port "), f"range_server.py did not start: {line!r}"
        self.url = f"http://127.0.0.1:{int(line.split()[1])}/fw"

    def requests(self) -> list[str]:
        """One "GET PATH range=bytes=N- STATUS" line per request so far."""
        return self.log_path.read_text().splitlines() if self.log_path.exists() else []

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


# ---- mDNS on loopback, at the packet level (needs `ip link set lo multicast on`) ----

MDNS_GROUP = ("224.0.0.251", 5353)


def mdns_legacy_query(timeout: float = 0.7) -> bytes:
    """A one-shot ("legacy", RFC 6762 6.7) PTR query for _usbip._tcp.local from an
    ephemeral port: responders answer it unicast to us. Every answer packet, joined."""
    import socket  # noqa: PLC0415
    import struct  # noqa: PLC0415

    qname = b"".join(bytes([len(x)]) + x for x in (b"_usbip", b"_tcp", b"local")) + b"\0"
    query = struct.pack(">HHHHHH", 0x4242, 0, 1, 0, 0, 0) + qname + struct.pack(">HH", 12, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
        s.sendto(query, MDNS_GROUP)
        got = b""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            s.settimeout(left)
            try:
                got += s.recv(9000)
            except TimeoutError:
                break
        return got


class MdnsSniffer:
    """Every packet sent to the mDNS group on loopback (announcements, goodbyes, answers)."""

    def __init__(self) -> None:
        import socket  # noqa: PLC0415

        self.packets: list[bytes] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        self.sock.bind(("0.0.0.0", 5353))
        self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                             socket.inet_aton(MDNS_GROUP[0]) + socket.inet_aton("127.0.0.1"))
        self.sock.settimeout(0.2)
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while self.running:
            try:
                self.packets.append(self.sock.recv(9000))
            except OSError:
                continue

    def mentioning(self, name: str, after: int = 0) -> list[bytes]:
        return [p for p in self.packets[after:] if name.encode() in p]

    def close(self) -> None:
        self.running = False
        self.thread.join(2)
        self.sock.close()
