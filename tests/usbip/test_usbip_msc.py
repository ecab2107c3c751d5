"""The simulated mass-storage device through USB/IP, the way usb-storage drives it:
SCSI over Bulk-Only with 120 KiB URBs, several MiB written and read back."""

from __future__ import annotations

import hashlib
import os

import pytest

from fleet.usbip.scsi import BulkOnly

pytestmark = [pytest.mark.dongle, pytest.mark.timeout(60)]

URB_BLOCKS = 240  # 120 KiB, usb-storage's usual transfer size


@pytest.fixture
def disk(dongle, open_session):
    return BulkOnly(open_session(dongle, "1-1"))


def test_inquiry_and_capacity(disk):
    inq = disk.inquiry()
    assert len(inq) == 36 and inq[0] & 0x1F == 0  # direct-access block device
    assert inq[8:16].strip()  # vendor identification present
    disk.test_unit_ready()
    cap = disk.read_capacity()
    assert cap.block_size == 512 and cap.bytes == 16 * 1024 * 1024


def test_write_and_read_back_several_mib_in_120k_urbs(dongle, disk):
    disk.read_capacity()
    total_blocks = 4 * 1024 * 1024 // 512 + 7  # not a multiple of the URB size
    data = os.urandom(total_blocks * 512)
    before = dongle.device_stats("1-1")
    for off in range(0, total_blocks, URB_BLOCKS):
        n = min(URB_BLOCKS, total_blocks - off)
        disk.write(1000 + off, data[off * 512 : (off + n) * 512])
    got = b"".join(disk.read_stream(1000, total_blocks, URB_BLOCKS, depth=3))
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest()
    # and a single unaligned look at the middle agrees too
    assert disk.read(1000 + 4321, 3) == data[4321 * 512 : 4324 * 512]
    after = dongle.device_stats("1-1")
    assert after["bytes_out"] - before["bytes_out"] >= len(data)
    assert after["bytes_in"] - before["bytes_in"] >= len(data)


def test_read_past_the_end_fails_cleanly_and_the_disk_keeps_working(disk):
    from fleet.usbip.scsi import ScsiError

    cap = disk.read_capacity()
    # the device stalls the data stage and reports failure in its CSW; the helper
    # recovers like usb-storage (CLEAR_FEATURE(HALT), then read the CSW)
    with pytest.raises(ScsiError, match="CSW status 1"):
        disk.read(cap.last_lba, 2)
    sense = disk.request_sense()
    assert sense[0] & 0x7F in (0x70, 0x71)
    assert sense[2] & 0x0F == 0x05  # ILLEGAL REQUEST
    assert len(disk.read(cap.last_lba, 1)) == 512
    assert len(disk.read(0, 8)) == 4096


def test_zero_copy_on_the_bulk_path(dongle, disk):
    disk.read_capacity()
    list(disk.read_stream(0, 2048, URB_BLOCKS, depth=2))
    stats = dongle.stats()
    # the core counts every payload memcpy (usbip_server_copies); the data path must have none
    assert "copies" in stats, f"stats has no 'copies' counter: {stats}"
    assert stats["copies"] == 0
