"""Run the simulated dongle (`fleet-dongle`, built from agent_fw/host) and drive its
control channel. Shared by the integration tests, the vhci harness and bench/.

    with SimDongle(["msc:size=16M", "hid-keyboard"]) as d:
        print(d.port, d.list())
        d.command("dev 1-2 type hello")
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

_LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")
REPO = Path(__file__).resolve().parents[2]


class ControlError(Exception):
    """The dongle answered `err <message>`."""


def find_binary() -> Path:
    """$FLEET_DONGLE, else the CMake build in the repository."""
    env = os.environ.get("FLEET_DONGLE")
    return Path(env) if env else REPO / "agent_fw" / "host" / "build" / "fleet-dongle"


class SimDongle:
    def __init__(
        self,
        devices: list[str] | tuple[str, ...] = (),
        args: list[str] | tuple[str, ...] = (),
        binary: Path | str | None = None,
        start_timeout: float = 10.0,
    ):
        self.binary = Path(binary) if binary else find_binary()
        self.devices = list(devices)
        self.args = list(args)
        self.start_timeout = start_timeout
        self.port = 0
        self.host = "127.0.0.1"
        self.proc: subprocess.Popen[str] | None = None
        self.output: list[str] = []
        self._tmp = tempfile.TemporaryDirectory(prefix="fleet-dongle-")
        self.control_path = os.path.join(self._tmp.name, "control.sock")
        self._ctl: socket.socket | None = None
        self._ctl_buf = b""
        self._lock = threading.Lock()

    # ------------------------------------------------------------ lifecycle

    def start(self) -> SimDongle:
        if not self.binary.exists():
            raise FileNotFoundError(
                f"{self.binary} not found: build it with "
                "cmake -S agent_fw/host -B agent_fw/host/build && cmake --build agent_fw/host/build -j2"
            )
        cmd = [str(self.binary), "--listen", "127.0.0.1:0", "--control", self.control_path]
        for d in self.devices:
            cmd += ["--device", d]
        cmd += self.args
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        deadline = time.monotonic() + self.start_timeout
        assert self.proc.stdout is not None
        while True:
            line = self.proc.stdout.readline()
            if not line:
                self.proc.wait(2)
                raise RuntimeError(
                    f"fleet-dongle exited ({self.proc.returncode}) before listening:\n" + "".join(self.output)
                )
            self.output.append(line)
            m = _LISTENING.search(line)
            if m:
                self.port = int(m.group(1))
                break
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError("fleet-dongle did not print 'listening on ...':\n" + "".join(self.output))
        threading.Thread(target=self._drain, daemon=True).start()
        return self

    def _drain(self) -> None:
        # keep reading so a chatty log never blocks the dongle on a full pipe
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)

    def stop(self, timeout: float = 5.0) -> int | None:
        if self._ctl is not None:
            self._ctl.close()
            self._ctl = None
        rc = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            rc = self.proc.returncode
        self._tmp.cleanup()
        return rc

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> SimDongle:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------ control channel

    def command(self, line: str, timeout: float = 10.0) -> str:
        """Sends one command line; returns what follows "ok" (may be ""), raises
        ControlError on "err ..."."""
        if "\n" in line:
            raise ValueError("one command per line")
        with self._lock:
            if self._ctl is None:
                self._ctl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self._ctl.connect(self.control_path)
            self._ctl.settimeout(timeout)
            self._ctl.sendall(line.encode() + b"\n")
            while b"\n" not in self._ctl_buf:
                chunk = self._ctl.recv(65536)
                if not chunk:
                    self._ctl.close()
                    self._ctl = None
                    raise ControlError(f"control channel closed while waiting for the reply to {line!r}")
                self._ctl_buf += chunk
            reply, self._ctl_buf = self._ctl_buf.split(b"\n", 1)
        text = reply.decode()
        if text == "ok":
            return ""
        if text.startswith("ok "):
            return text[3:]
        if text.startswith("err"):
            raise ControlError(text[4:] if text.startswith("err ") else text)
        raise ControlError(f"unexpected control reply {text!r} to {line!r}")

    def plug(self, spec: str) -> str:
        return self.command(f"plug {spec}")

    def unplug(self, busid: str) -> None:
        self.command(f"unplug {busid}")

    def list(self) -> list[dict]:
        return json.loads(self.command("list"))

    def stats(self) -> dict:
        return json.loads(self.command("stats"))

    def device_stats(self, busid: str) -> dict:
        for d in self.stats()["devices"]:
            if d["busid"] == busid:
                return d
        raise KeyError(f"no stats for {busid}")

    def dev(self, busid: str, text: str) -> str:
        return self.command(f"dev {busid} {text}")
