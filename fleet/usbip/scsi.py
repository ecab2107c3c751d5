"""SCSI over USB Mass Storage Bulk-Only Transport, on top of a USB/IP Session.

Enough of BOT (CBW -> data -> CSW) and SCSI (INQUIRY, TEST UNIT READY, READ
CAPACITY(10), READ(10), WRITE(10), REQUEST SENSE) for tests and benchmarks to move
real blocks through a dongle the way usb-storage does, including its 120 KiB URBs.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .client import Session, UrbError, endpoints
from .codec import ProtocolError, RetSubmit
from .constants import DIR_IN, DIR_OUT, ECONNRESET, EPIPE

CBW_SIGNATURE = 0x43425355
CSW_SIGNATURE = 0x53425355
_CBW = struct.Struct("<IIIBBB16s")
_CSW = struct.Struct("<IIIB")


class ScsiError(Exception):
    """CSW reported failure or phase error."""


@dataclass(frozen=True)
class Capacity:
    last_lba: int
    block_size: int

    @property
    def blocks(self) -> int:
        return self.last_lba + 1

    @property
    def bytes(self) -> int:
        return self.blocks * self.block_size


class BulkOnly:
    """A mass-storage interface reached through `session`. Endpoints are read from
    the configuration descriptor, so the class works at Full and High Speed."""

    def __init__(self, session: Session, lun: int = 0, configure: bool = True, timeout: float = 15.0):
        self.s = session
        self.lun = lun
        self.timeout = timeout
        self._tag = 0
        cfg = session.config_descriptor()
        bulk = [(addr, mps) for _i, addr, attr, mps in endpoints(cfg) if attr & 3 == 2]
        outs = [(a, m) for a, m in bulk if not a & 0x80]
        ins = [(a, m) for a, m in bulk if a & 0x80]
        if not outs or not ins:
            raise ProtocolError("configuration has no bulk IN/OUT endpoint pair for mass storage")
        self.ep_out, self.mps_out = outs[0][0] & 0x0F, outs[0][1]
        self.ep_in, self.mps_in = ins[0][0] & 0x0F, ins[0][1]
        if configure:
            session.set_configuration(cfg[5])
        self.block_size = 512

    # ------------------------------------------------------------ BOT

    def cbw(self, cdb: bytes, length: int, direction: int) -> tuple[int, bytes]:
        if not 1 <= len(cdb) <= 16:
            raise ValueError(f"CDB must be 1..16 bytes, got {len(cdb)}")
        self._tag = (self._tag + 1) & 0xFFFFFFFF
        flags = 0x80 if direction == DIR_IN else 0x00
        return self._tag, _CBW.pack(
            CBW_SIGNATURE, self._tag, length, flags, self.lun, len(cdb), cdb.ljust(16, b"\0")
        )

    def check_csw(self, r: RetSubmit, tag: int, what: str) -> int:
        """Returns the CSW residue; raises on a failed command or a malformed CSW."""
        if r.status:
            raise UrbError(f"{what}: CSW transfer", r.status)
        if len(r.data) != 13:
            raise ProtocolError(f"{what}: CSW is {len(r.data)} bytes, expected 13")
        sig, rtag, residue, status = _CSW.unpack(r.data)
        if sig != CSW_SIGNATURE or rtag != tag:
            raise ProtocolError(f"{what}: bad CSW signature 0x{sig:08x} or tag {rtag} (expected {tag})")
        if status:
            raise ScsiError(f"{what}: CSW status {status} ({'failed' if status == 1 else 'phase error'})")
        return residue

    def command(self, cdb: bytes, direction: int = DIR_IN, data_or_length: bytes | int = 0) -> bytes:
        """One command: CBW, optional data stage, CSW, all queued at once (the device
        sees them in USB order). Returns the IN data.

        A stalled data stage is recovered the way usb-storage does it: clear the
        halt, then read the CSW, which says why the command failed."""
        length = data_or_length if isinstance(data_or_length, int) else len(data_or_length)
        tag, cbw = self.cbw(cdb, length, direction)
        s = self.s
        what = f"SCSI 0x{cdb[0]:02x}"
        cbw_seq = s.submit(self.ep_out, DIR_OUT, cbw)
        data_seq = None
        if length:
            data_ep = self.ep_in if direction == DIR_IN else self.ep_out
            data_seq = s.submit(data_ep, direction, data_or_length)
        csw_seq = s.submit(self.ep_in, DIR_IN, 13)
        r = s.wait(cbw_seq, self.timeout)
        if r.status:
            raise UrbError(f"{what}: CBW", r.status)
        data = b""
        stalled = False
        if data_seq is not None:
            r = s.wait(data_seq, self.timeout)
            if r.status == EPIPE:
                stalled = True
                s.clear_halt(data_ep | (0x80 if direction == DIR_IN else 0))
            elif r.status:
                raise UrbError(f"{what}: data stage", r.status)
            else:
                data = r.data
        r = s.wait(csw_seq, self.timeout)
        if r.status == EPIPE:  # CSW stalled once: clear and read it again
            s.clear_halt(0x80 | self.ep_in)
            r = s.transfer(self.ep_in, DIR_IN, 13, timeout=self.timeout)
        elif r.status == ECONNRESET and stalled:
            # a host that flushes an endpoint's queue when it clears a halt (as
            # ESP-IDF does) cancels the CSW read queued behind the stalled data
            r = s.transfer(self.ep_in, DIR_IN, 13, timeout=self.timeout)
        self.check_csw(r, tag, what)
        return data

    # ------------------------------------------------------------ SCSI

    def inquiry(self) -> bytes:
        return self.command(bytes([0x12, 0, 0, 0, 36, 0]), DIR_IN, 36)

    def test_unit_ready(self) -> None:
        self.command(bytes(6), DIR_IN, 0)

    def request_sense(self) -> bytes:
        return self.command(bytes([0x03, 0, 0, 0, 18, 0]), DIR_IN, 18)

    def read_capacity(self) -> Capacity:
        data = self.command(bytes([0x25]) + bytes(9), DIR_IN, 8)
        last, bs = struct.unpack(">II", data)
        self.block_size = bs
        return Capacity(last, bs)

    def read_cdb(self, lba: int, blocks: int) -> bytes:
        return struct.pack(">BBIBHB", 0x28, 0, lba, 0, blocks, 0)

    def write_cdb(self, lba: int, blocks: int) -> bytes:
        return struct.pack(">BBIBHB", 0x2A, 0, lba, 0, blocks, 0)

    def read(self, lba: int, blocks: int) -> bytes:
        data = self.command(self.read_cdb(lba, blocks), DIR_IN, blocks * self.block_size)
        if len(data) != blocks * self.block_size:
            raise ScsiError(f"READ(10) lba {lba}: got {len(data)} of {blocks * self.block_size} bytes")
        return data

    def write(self, lba: int, data: bytes) -> None:
        if len(data) % self.block_size:
            raise ValueError(
                f"write of {len(data)} bytes is not a multiple of the {self.block_size}-byte block"
            )
        self.command(self.write_cdb(lba, len(data) // self.block_size), DIR_OUT, data)

    def read_stream(
        self,
        lba: int,
        total_blocks: int,
        blocks_per_urb: int,
        depth: int = 2,
        stop: Callable[[], bool] | None = None,
    ) -> Iterator[bytes]:
        """Reads `total_blocks` with up to `depth` commands queued (each CBW, data IN
        and CSW submitted ahead), yielding each command's data in order. The device
        still runs one command at a time: with depth=1 the next command leaves when
        the CSW returns; deeper queues hide that round trip only on hosts that do
        not back off while a queued CBW is NAKed.
        `stop()` returning True ends the stream early (no new commands; the queued
        ones are still read), which lets a benchmark run for a duration."""
        s = self.s
        queue: list[tuple[int, int, int, int, int]] = []  # tag, CBW seq, data seq, CSW seq, bytes
        next_lba, end = lba, lba + total_blocks

        def issue() -> None:
            nonlocal next_lba
            n = min(blocks_per_urb, end - next_lba)
            nbytes = n * self.block_size
            tag, cbw = self.cbw(self.read_cdb(next_lba, n), nbytes, DIR_IN)
            bseq, p = s.encode_submit(self.ep_out, DIR_OUT, cbw)
            pdus = [p]
            dseq, p = s.encode_submit(self.ep_in, DIR_IN, nbytes)
            pdus.append(p)
            cseq, p = s.encode_submit(self.ep_in, DIR_IN, 13)
            pdus.append(p)
            s.send_raw(b"".join(pdus))
            queue.append((tag, bseq, dseq, cseq, nbytes))
            next_lba += n

        while next_lba < end and len(queue) < depth:
            issue()
        while queue:
            tag, bseq, dseq, cseq, nbytes = queue.pop(0)
            r = s.wait(bseq, self.timeout)
            if r.status:
                raise UrbError(f"READ(10) tag {tag}: CBW", r.status)
            r = s.wait(dseq, self.timeout)
            if not isinstance(r, RetSubmit) or r.status or r.actual_length != nbytes:
                raise ScsiError(f"READ(10) tag {tag}: data stage {r}")
            self.check_csw(s.wait(cseq, self.timeout), tag, "READ(10)")
            if next_lba < end and not (stop and stop()):
                issue()
            yield r.data
