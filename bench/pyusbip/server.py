#!/usr/bin/env python3
"""Baseline for bench/usbip.py: the pure-Python `usbip` package from PyPI (0.7.0)
serving devices equivalent to fleet-dongle's, on 127.0.0.1 only.

  1-1  mass storage (Bulk-Only/SCSI) over a RAM disk, Full-Speed, the package's
       own MSC class: the read source for the throughput comparison
  1-2  echo device, vendor interface with bulk OUT 0x01 / IN 0x81 (64 B): every
       OUT packet comes back on IN, like the probe's vendor echo 0x80

Prints "listening on 127.0.0.1:PORT" once it accepts connections; stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import threading

from usbip import USBIP
from usbip.classes.device.msc import MSC
from usbip.device import In, Out, USBDevice
from usbip.function import Interface


class RamDisk:
    """The block-store interface the package's MSC class calls."""

    def __init__(self, blocks: int, block_size: int = 512):
        self.num_blocks = blocks
        self.block_size = block_size
        self.buf = bytearray(blocks * block_size)

    def read(self, lba: int, count: int) -> bytes:
        return bytes(self.buf[lba * self.block_size : (lba + count) * self.block_size])

    def write(self, lba: int, count: int, data: bytes) -> None:
        self.buf[lba * self.block_size : lba * self.block_size + len(data)] = data


class Echo(Interface):
    bInterfaceClass = 0xFF
    in_ep = In(0x81, "bulk", mps=64)
    out_ep = Out(0x01, "bulk", mps=64)

    def on_out(self, ep, data: bytes) -> None:
        self.in_ep.write(data)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--blocks", type=int, default=65536)
    args = ap.parse_args()
    port = args.port or free_port()
    # the package binds 0.0.0.0 unless told otherwise: always pass the loopback
    transport = USBIP("127.0.0.1", port)
    disk = USBDevice(0x1209, 0x0001, manufacturer="bench", product="PyPI usbip disk", serial="PY0001")
    disk.add(MSC(RamDisk(args.blocks), vendor="BENCH", product="RAMDISK"))
    disk.set_busid("1-1")
    echo = USBDevice(0x1209, 0x0004, manufacturer="bench", product="PyPI usbip echo", serial="PY0002")
    echo.add(Echo())
    echo.set_busid("1-2")
    for d in (disk, echo):
        d.plug(via=transport)
    print(f"listening on 127.0.0.1:{port}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
