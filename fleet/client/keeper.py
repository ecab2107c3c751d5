"""Keeps an attached device usable: renews its lease, notices a dropped USB/IP
connection (dongle reboot, network blip, device re-enumerated on its port) and
re-attaches while the lease is valid, and tells the holder when the lease was
revoked or expired (stderr, the log file, and exit status 3).

Runs in the foreground (``fleet attach --foreground``) or as a background process
started by ``fleet attach``: ``python -m fleet.client.keeper LEASE_ID ...``.
"""

from __future__ import annotations

import argparse
import signal
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from fleet.client import credentials, session, state
from fleet.client.api import Api
from fleet.client.errors import EXIT_AUTH, EXIT_LEASE_ENDED, ClientError
from fleet.client.state import Attachment

KEEP_GOING = None


class Keeper:
    def __init__(
        self,
        api: Api,
        host: session.Host,
        att: Attachment,
        *,
        duration_s: int,
        renew: bool = True,
        interval_s: float = 1.0,
        log: Callable[[str], None] | None = None,
    ):
        self.api = api
        self.host = host
        self.att = att
        self.duration_s = duration_s
        self.renew = renew
        self.interval_s = interval_s
        self.log = log or _log_to_file_and_stderr
        self.reattaches = 0
        self._stop = threading.Event()
        self._down_since: float | None = None

    # Renew when less than this is left: early enough to survive a few failed calls.
    def margin_s(self) -> float:
        return max(2 * self.interval_s + 1, min(300.0, self.duration_s / 3))

    def stop(self, *_: object) -> None:
        self._stop.set()

    def step(self) -> int | None:
        """One round; returns an exit status when the keeper is done."""
        try:
            lease = self.api.lease(self.att.lease_id)
        except ClientError as e:
            if e.exit_code == EXIT_AUTH:
                self.log(f"{self.att.device}: the server rejected our token; giving up ({e.message})")
                return EXIT_AUTH
            # The server being away does not end the lease: keep the device attached.
            self.log(f"{self.att.device}: cannot check lease {self.att.lease_id}: {e.message}")
            lease = None
        if lease is not None:
            ended = lease.get("state") != "active"
            expires = session.parse_iso(lease.get("expires_at"))
            if not ended and expires is not None and expires <= time.time():
                ended = True
            if ended:
                return self._ended(lease)
            if self.renew and expires is not None and expires - time.time() < self.margin_s():
                self._renew(expires)
        if not session.is_attached(self.host, self.att):
            self._reattach()
        return KEEP_GOING

    def _ended(self, lease: dict) -> int:
        why = lease.get("end_reason") or lease.get("state")
        state_ = lease.get("state")
        if state_ == "active":
            state_, why = "expired", f"expired at {lease.get('expires_at')}"
        try:
            session.detach_local(self.host, self.att)
        except ClientError as e:
            self.log(f"{self.att.device}: detaching after the lease ended failed: {e.message}")
        state.remove(self.att.lease_id)
        self.log(
            f"{self.att.device}: your lease {self.att.lease_id} was {state_} ({why}); "
            "the dongle closed the connection and the device is detached"
        )
        return EXIT_LEASE_ENDED

    def _renew(self, expires: float) -> None:
        add = int(self.duration_s - (expires - time.time()))
        if add <= 0:
            return
        try:
            out = self.api.extend(self.att.lease_id, add)
            self.att.expires_at = out.get("expires_at")
            state.save(self.att)
        except ClientError as e:
            self.log(f"{self.att.device}: renewing lease {self.att.lease_id} failed: {e.message}")

    def _reattach(self) -> None:
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = now
            self.log(f"{self.att.device}: the USB/IP connection dropped; re-attaching")
        try:
            local = session.connect(self.host, self.att, grant_timeout=2.0)
        except ClientError as e:
            self.log(f"{self.att.device}: re-attach failed, will retry: {e.message}")
            return
        self.reattaches += 1
        state.save(self.att)
        self.log(
            f"{self.att.device}: re-attached {time.monotonic() - self._down_since:.1f} s after the drop, "
            f"on vhci port {self.att.vhci_port} as {local.describe()}"
        )
        self._down_since = None

    def run(self) -> int:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.stop)
        if self.att.keeper_pid != os.getpid():
            self.att.keeper_pid = os.getpid()
            state.save(self.att)
        while not self._stop.is_set():
            rc = self.step()
            if rc is not None:
                return rc
            self._stop.wait(self.interval_s)
        return 0


def _log_to_file_and_stderr(msg: str) -> None:
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    print(f"fleet: {msg}", file=sys.stderr, flush=True)
    try:
        path = state.log_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as f:
            f.write(f"{stamp} {msg}\n")
    except OSError:
        pass  # the message already reached stderr; a read-only home must not stop the keeper


def spawn(att: Attachment, duration_s: int, *, renew: bool, interval_s: float) -> int:
    """Start the background keeper; its stderr stays the terminal's so the holder hears it."""
    argv = [
        sys.executable,
        "-m",
        "fleet.client.keeper",
        str(att.lease_id),
        "--duration",
        str(duration_s),
        "--interval",
        str(interval_s),
    ]
    if not renew:
        argv.append("--no-renew")
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True)
    att.keeper_pid = proc.pid
    state.save(att)
    return proc.pid


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fleet-keeper", description=__doc__.splitlines()[0])
    p.add_argument("lease_id", type=int)
    p.add_argument("--duration", type=int, required=True)
    p.add_argument("--interval", type=float, default=1.0)
    p.add_argument("--no-renew", action="store_true")
    a = p.parse_args(argv)
    att = state.load(a.lease_id)
    if att is None:
        print(f"fleet-keeper: no attachment recorded for lease {a.lease_id}", file=sys.stderr)
        return 1
    try:
        with Api(credentials.load()) as api:
            host = session.Host.from_env()
            keeper = Keeper(
                api, host, att, duration_s=a.duration, renew=not a.no_renew, interval_s=a.interval
            )
            return keeper.run()
    except ClientError as e:
        _log_to_file_and_stderr(str(e))
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())
