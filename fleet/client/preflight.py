"""Checks run before anything is leased, each failing with the fix in its message."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

from fleet.client.errors import ClientError
from fleet.client.host import USBIP_PACKAGES, Sysfs, Usbip

# What each chip's USB host controller can drive (the S3's OTG is Full-Speed only).
CHIP_SPEEDS = {
    "esp32s3": {"low", "full"},
    "esp32p4": {"low", "full", "high"},
}
SUPER = {"super", "super-plus"}


class PreflightError(ClientError):
    pass


def usbip_tool(usbip: Usbip) -> None:
    if os.path.sep in usbip.binary:
        ok = os.access(usbip.binary, os.X_OK)
    else:
        ok = shutil.which(usbip.binary) is not None
    if not ok:
        raise PreflightError(f"the usbip tool ({usbip.binary}) is not installed", fix=USBIP_PACKAGES)


def vhci_loaded(sysfs: Sysfs) -> None:
    if not sysfs.vhci_loaded():
        raise PreflightError(
            "the vhci-hcd kernel module (the USB/IP client side) is not loaded",
            fix="sudo modprobe vhci-hcd   (at every boot: "
            "echo vhci-hcd | sudo tee /etc/modules-load.d/vhci.conf)",
        )


def privileges(usbip: Usbip) -> None:
    if not usbip.sudo:
        return
    try:
        ok = subprocess.run(["sudo", "-n", "true"], capture_output=True, timeout=10).returncode == 0
    except (FileNotFoundError, subprocess.TimeoutExpired):
        ok = False
    if not ok:
        raise PreflightError(
            "usbip attach needs root, you are not root and sudo cannot run without a password",
            fix="run fleet as root, or allow the tool without a password, e.g. in /etc/sudoers.d/usbip: "
            f"`%plugdev ALL=(root) NOPASSWD: {usbip.binary}`",
        )


def free_port(sysfs: Sysfs, speed: str | None) -> None:
    hub = "ss" if speed in SUPER else "hs"
    ports = [p for p in sysfs.ports() if p.hub == hub]
    if ports and not any(p.free for p in ports):
        kind = "SuperSpeed" if hub == "ss" else "USB 2.0"
        raise PreflightError(
            f"no free {kind} vhci port: all {len(ports)} are in use "
            "(stock kernels have 8 per controller and one controller)",
            fix="detach one (`fleet detach DEVICE`, or `usbip port` then `sudo usbip detach -p N`), "
            "or reload the module with more controllers: "
            "`sudo modprobe -r vhci-hcd && sudo modprobe vhci-hcd nr_hcs=2`",
        )


def speed_supported(device: dict[str, Any], dongle: dict[str, Any]) -> None:
    speed = device.get("speed")
    model = str((dongle.get("chip") or {}).get("model") or "").lower().replace("-", "")
    allowed = CHIP_SPEEDS.get(model)
    if allowed is None or speed is None or speed in allowed:
        return
    label = device.get("name") or f"{device.get('dongle_id')}/{device.get('busid')}"
    raise PreflightError(
        f"{label} is a {speed}-speed device but dongle {dongle.get('id')} is an {model} whose USB host "
        f"supports only {'/'.join(sorted(allowed))} speed",
        fix="plug the device into a dongle with a High-Speed host (ESP32-P4)",
    )


def host(usbip: Usbip, sysfs: Sysfs, speed: str | None) -> None:
    """Everything about this workstation, in the order a person would fix it."""
    usbip_tool(usbip)
    vhci_loaded(sysfs)
    privileges(usbip)
    free_port(sysfs, speed)
