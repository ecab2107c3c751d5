"""attach / detach / release workflows, built from the API, the host and preflight."""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fleet.client import preflight, state
from fleet.client.api import Api
from fleet.client.errors import EXIT_BUSY, EXIT_USAGE, ClientError
from fleet.client.host import USBIP_PORT, LocalDevice, Sysfs, Usbip, UsbipError
from fleet.client.state import Attachment

Say = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(f"fleet: {msg}", file=sys.stderr, flush=True)


@dataclass
class Host:
    """This workstation: how to reach dongles, which address they see, the usbip tool."""

    usbip: Usbip = field(default_factory=Usbip)
    sysfs: Sysfs = field(default_factory=Sysfs)
    client_address: str | None = None  # what the dongle sees as our address (NAT, relays)
    routes: dict[tuple[str, int], tuple[str, int]] = field(default_factory=dict)

    @classmethod
    def from_env(cls, client_address: str | None = None) -> Host:
        return cls(
            sysfs=Sysfs(os.environ.get("FLEET_SYSFS_ROOT", "/")),
            client_address=client_address or os.environ.get("FLEET_CLIENT_ADDRESS") or None,
            routes=parse_routes(os.environ.get("FLEET_DONGLE_ROUTES", "")),
        )

    def route(self, ip: str, port: int) -> tuple[str, int]:
        return self.routes.get((ip, port), (ip, port))

    def source_address(self, ip: str, port: int) -> str:
        if self.client_address:
            return self.client_address
        # The kernel's choice of source address toward the dongle, without sending anything.
        fam = socket.AF_INET6 if ":" in ip else socket.AF_INET
        with socket.socket(fam, socket.SOCK_DGRAM) as s:
            try:
                s.connect((ip, port))
            except OSError as e:
                raise ClientError(f"no route to the dongle at {ip}:{port}: {e.strerror}") from None
            return str(s.getsockname()[0])


def parse_routes(text: str) -> dict[tuple[str, int], tuple[str, int]]:
    """``FLEET_DONGLE_ROUTES="A:P=B:Q,..."``: reach the dongle the service knows as A:P at B:Q
    (port forwards, VMs, jump hosts)."""
    out: dict[tuple[str, int], tuple[str, int]] = {}
    for item in filter(None, (x.strip() for x in text.split(","))):
        try:
            left, right = item.split("=")
            a, p = left.rsplit(":", 1)
            b, q = right.rsplit(":", 1)
            out[(a, int(p))] = (b, int(q))
        except ValueError:
            raise ClientError(
                f"FLEET_DONGLE_ROUTES entry {item!r} must look like IP:PORT=IP:PORT", exit_code=EXIT_USAGE
            ) from None
    return out


def parse_duration(text: str) -> int:
    """``90``, ``90s``, ``30m``, ``2h``, ``1d``, ``1h30m`` -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    t = text.strip().lower()
    if t.isdigit():
        return int(t)
    total, num = 0, ""
    for ch in t:
        if ch.isdigit():
            num += ch
        elif ch in units and num:
            total += int(num) * units[ch]
            num = ""
        else:
            num = "x"
            break
    if num or total <= 0:
        raise ClientError(
            f"duration must look like 90s, 30m, 2h or 1h30m, got {text!r}", exit_code=EXIT_USAGE
        )
    return total


def parse_iso(ts: str | None) -> float | None:
    if not ts:
        return None
    return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def device_label(d: dict[str, Any]) -> str:
    """The name a person uses: the device's name, else dongle/busid (devices and lease["device"])."""
    return str(d.get("name") or f"{d.get('dongle_id')}/{d.get('busid')}")


def dongle_address(api: Api, host: Host, dongle_id: str) -> tuple[str, int, dict[str, Any]]:
    dongle = api.dongle(dongle_id)
    ip = dongle.get("ip")
    if not ip:
        raise ClientError(
            f"dongle {dongle_id} has not reported an IP address yet; is it online? (`fleet ls`)"
        )
    port = int(dongle.get("usbip_port") or USBIP_PORT)
    return ip, port, dongle


@dataclass
class Attached:
    attachment: Attachment
    local: LocalDevice
    lease: dict[str, Any]


def acquire(
    api: Api,
    target: str,
    duration_s: int,
    clients: list[str],
    *,
    wait: bool,
    wait_timeout: float | None = None,
    poll_s: float = 2.0,
    say: Say = _stderr,
) -> dict[str, Any]:
    """A lease on ``target``; with ``wait`` keep asking until one is free (in line for a tag)."""
    deadline = None if wait_timeout is None else time.monotonic() + wait_timeout
    told = None
    while True:
        try:
            return api.acquire(target, duration_s, clients)
        except ClientError as e:
            if not wait or e.exit_code != EXIT_BUSY:
                raise
            if deadline is not None and time.monotonic() > deadline:
                raise ClientError(
                    f"gave up waiting after {wait_timeout:.0f} s: {e.message}", exit_code=EXIT_BUSY
                ) from None
            if e.message != told:
                say(f"waiting: {e.message}")
                told = e.message
            time.sleep(poll_s)


def attach(
    api: Api,
    host: Host,
    target: str,
    duration_s: int,
    *,
    wait: bool = False,
    wait_timeout: float | None = None,
    grant_timeout: float = 15.0,
    say: Say = _stderr,
) -> Attached:
    """Lease ``target``, attach it through vhci-hcd, and return what it became locally."""
    is_tag = target.startswith("tag:")
    preflight.host(host.usbip, host.sysfs, None)
    clients: list[str]
    if not is_tag:
        dev = api.device(target)
        ip, port, dongle = dongle_address(api, host, dev["dongle_id"])
        preflight.speed_supported(dev, dongle)
        preflight.free_port(host.sysfs, dev.get("speed"))
        clients = [host.source_address(*host.route(ip, port))]
    else:
        # Which device we get is not known yet; on a lab network every dongle sees the
        # same address of ours, so the route to any candidate tells it.
        candidates = api.devices(tag=target[4:])
        if not candidates:
            raise ClientError(f"no device is tagged {target[4:]!r}", fix="`fleet ls` shows the tags")
        ip, port, _ = dongle_address(api, host, candidates[0]["dongle_id"])
        clients = [host.source_address(*host.route(ip, port))]
    lease = acquire(api, target, duration_s, clients, wait=wait, wait_timeout=wait_timeout, say=say)
    try:
        dev = api.device(lease["device"]["id"])
        ip, port, dongle = dongle_address(api, host, dev["dongle_id"])
        if is_tag:
            preflight.speed_supported(dev, dongle)
        rhost, rport = host.route(ip, port)
        att = Attachment(
            lease_id=int(lease["id"]),
            device_id=int(dev["id"]),
            device=device_label(dev),
            dongle_id=dev["dongle_id"],
            host=rhost,
            tcp_port=rport,
            busid=dev["busid"],
            expires_at=lease.get("expires_at"),
        )
        say(f"leased {att.device} until {lease.get('expires_at')} (lease {att.lease_id}); attaching")
        local = connect(host, att, grant_timeout=grant_timeout)
    except BaseException:
        # Whatever went wrong, do not leave a lease nobody uses.
        try:
            api.release(int(lease["id"]))
        except ClientError:
            pass
        raise
    state.save(att)
    return Attached(att, local, lease)


def connect(host: Host, att: Attachment, *, grant_timeout: float = 15.0) -> LocalDevice:
    """``usbip attach`` until the dongle has the grant, then find the vhci port and device nodes."""
    deadline = time.monotonic() + grant_timeout
    delay = 0.2
    while True:
        try:
            host.usbip.attach(att.host, att.tcp_port, att.busid)
            break
        except UsbipError as e:
            # The dongle refuses until the service's grant reaches it: that refusal is
            # the only acknowledgement a non-admin can observe, so retry for a while.
            if e.extra.get("kind") != "refused" or time.monotonic() > deadline:
                if e.extra.get("kind") == "refused":
                    raise ClientError(
                        f"the dongle still refuses {att.busid} to this machine after {grant_timeout:.0f} s: "
                        f"the grant did not reach it, or it sees another address than the lease names",
                        fix="check `fleet ls` (is the dongle online?) or pass --client-address",
                    ) from None
                raise
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)
    att.vhci_port = find_port(host, att)
    return wait_local(host, att)


def find_port(host: Host, att: Attachment, timeout: float = 10.0) -> int:
    """The vhci port `usbip port` reports for our device. While the kernel is still
    enumerating a freshly attached device, `usbip port` can fail to read its sysfs
    entries ("open vhci_driver"), so transient failures are retried."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            for imp in host.usbip.ports():
                if imp.remote_busid == att.busid and imp.tcp_port == att.tcp_port and imp.host == att.host:
                    return imp.port
            problem = f"`usbip port` lists no port for {att.host}:{att.tcp_port}/{att.busid}"
        except UsbipError as e:
            if e.extra.get("kind") != "vhci" or not host.sysfs.vhci_loaded():
                raise
            problem = e.message
        if time.monotonic() > deadline:
            raise ClientError(f"usbip attach succeeded but {problem}")
        time.sleep(0.3)


def wait_local(host: Host, att: Attachment, timeout: float = 10.0) -> LocalDevice:
    """The kernel enumerates the device shortly after the attach; wait for its nodes."""
    deadline = time.monotonic() + timeout
    local = LocalDevice(local_busid="")
    while time.monotonic() < deadline:
        p = host.sysfs.port(att.vhci_port) if att.vhci_port is not None else None
        if p is not None and p.local_busid:
            local = host.sysfs.local_device(p.local_busid)
            if local.nodes:
                return local
        time.sleep(0.2)
    return local


def is_attached(host: Host, att: Attachment) -> bool:
    """Our vhci port still carries a live connection to the device."""
    if att.vhci_port is None:
        return False
    p = host.sysfs.port(att.vhci_port)
    if p is None or p.free:
        return False
    imp = host.sysfs.imported().get(att.vhci_port)
    return imp is None or imp == (att.host, att.tcp_port, att.busid)


def stop_keeper(att: Attachment, timeout: float = 5.0) -> None:
    import signal

    pid = att.keeper_pid
    if not pid or pid == os.getpid():
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def detach_local(host: Host, att: Attachment) -> bool:
    if att.vhci_port is None or not is_attached(host, att):
        return False
    host.usbip.detach(att.vhci_port)
    return True


def detach(api: Api, host: Host, att: Attachment, *, release: bool = True) -> dict[str, Any] | None:
    """Stop the keeper, free the vhci port, release the lease (in that order, so the keeper
    never mistakes our own detach for a dropped connection)."""
    stop_keeper(att)
    detach_local(host, att)
    out = None
    if release:
        try:
            out = api.release(att.lease_id)
        except ClientError as e:
            if e.extra.get("status") != 409:  # already ended: nothing left to release
                state.remove(att.lease_id)
                raise
    state.remove(att.lease_id)
    return out
