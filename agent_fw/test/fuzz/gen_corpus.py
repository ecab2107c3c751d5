#!/usr/bin/env python3
"""Write the seed corpus: valid and tricky PDUs for both fuzz targets.

Run from anywhere: python3 agent_fw/test/fuzz/gen_corpus.py
The stream target's input is [mode][chunk][client bytes] (see fuzz_usbip_stream.c).
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
DEVID = (1 << 16) | 2  # busnum 1, the fake device's address 2


def op(code, status=0, version=0x0111):
    return struct.pack(">HHI", version, code, status)


def imp(busid=b"1-1"):
    return op(0x8003) + busid.ljust(32, b"\0")


def submit(seq, ep, direction, tbl, flags=0, np=0, setup=b"\0" * 8, devid=DEVID, interval=0):
    return struct.pack(">IIIIIIiiii", 1, seq, devid, direction, ep, flags, tbl, 0, np, interval) + setup


def unlink(seq, target, devid=DEVID):
    return struct.pack(">IIIIII", 2, seq, devid, 0, 0, target) + b"\0" * 24


def iso_desc(offset, length):
    return struct.pack(">IIIi", offset, length, 0, 0)


def setup(rt, req, value, index, length):
    return struct.pack("<BBHHH", rt, req, value, index, length)


STREAM = {
    # management phase
    "devlist": (0, 0, op(0x8005)),
    "devlist_split_bytes": (0, 0, op(0x8005) + op(0x8005)),
    "import": (0, 50, imp()),
    "import_unknown": (0, 50, imp(b"9-9")),
    "import_not_granted": (2, 50, imp()),
    "import_no_nul": (0, 50, op(0x8003) + b"A" * 32),
    "bad_version": (0, 50, op(0x8005, version=0x0106)),
    "bad_code": (0, 50, op(0x1234)),
    "nonzero_status": (0, 50, op(0x8005, status=7)),
    "import_then_urbs": (0, 96, imp() + submit(1, 2, 1, 64) + submit(2, 1, 0, 16) + b"x" * 16),
    # URB phase (mode bit0: already imported)
    "bulk_out": (1, 96, submit(1, 1, 0, 100) + bytes(range(100))),
    "bulk_out_split_zlp": (1, 96, submit(1, 1, 0, 3 * 8128, flags=0x40) + b"\xa5" * (3 * 8128)),
    "bulk_out_zero_len": (1, 96, submit(1, 1, 0, 0, flags=0x40)),
    "bulk_in_split": (1, 96, submit(1, 2, 1, 20000) + submit(2, 2, 1, 64)),
    "bulk_in_short_not_ok": (1, 96, submit(1, 2, 1, 100, flags=0x201)),
    "intr_in": (1, 96, submit(7, 3, 1, 8, interval=10)),
    "np_minus_one": (1, 96, submit(1, 2, 1, 64, np=-1)),
    "np_bad": (1, 96, submit(1, 2, 1, 64, np=-7)),
    "iso_on_bulk": (1, 96, submit(1, 2, 1, 384, np=2) + iso_desc(0, 192) + iso_desc(192, 192)),
    "iso_gap": (1, 96, submit(1, 1, 0, 16, np=2) + b"z" * 16 + iso_desc(0, 8) + iso_desc(12, 4)),
    "control_get_desc": (1, 96, submit(1, 0, 1, 18, setup=setup(0x80, 6, 0x100, 0, 18))),
    "control_out_data": (1, 96, submit(1, 0, 0, 8, setup=setup(0x21, 9, 0x200, 0, 8)) + b"\1" * 8),
    "control_len_mismatch": (1, 96, submit(1, 0, 0, 4, setup=setup(0x21, 9, 0x200, 0, 8)) + b"\1" * 4),
    "control_huge_wlength": (1, 96, submit(1, 0, 1, 65535, setup=setup(0x80, 6, 0x200, 0, 65535))),
    "set_interface": (1, 96, submit(9, 3, 1, 8) + submit(1, 0, 0, 0, setup=setup(1, 11, 1, 0, 0))),
    "set_interface_bad_alt": (1, 96, submit(1, 0, 0, 0, setup=setup(1, 11, 9, 0, 0))),
    "set_configuration": (1, 96, submit(1, 0, 0, 0, setup=setup(0, 9, 1, 0, 0)) + submit(2, 0, 0, 0, setup=setup(0, 9, 2, 0, 0))),
    "clear_halt": (1, 96, submit(1, 0, 0, 0, setup=setup(2, 1, 0, 0x82, 0))),
    "unlink_queued": (17, 96, submit(1, 2, 1, 64) + submit(2, 2, 1, 64) + unlink(3, 2)),
    "unlink_active": (17, 96, submit(1, 2, 1, 20000) + unlink(2, 1)),
    "unlink_unknown": (1, 96, unlink(5, 999)),
    "unlink_ep0": (17, 96, submit(1, 0, 1, 18, setup=setup(0x80, 6, 0x100, 0, 18)) + unlink(2, 1)),
    "unlink_after_done_blocked": (9, 96, submit(1, 2, 1, 64) + unlink(2, 1)),
    "dup_seqnum": (17, 96, submit(1, 2, 1, 64) + submit(1, 2, 1, 64)),
    "bad_devid": (1, 96, submit(1, 2, 1, 64, devid=0x20005)),
    "bad_ep": (1, 96, submit(1, 16, 1, 64)),
    "no_such_ep": (1, 96, submit(1, 9, 0, 4) + b"abcd"),
    "too_big": (1, 96, submit(1, 1, 0, 9 * 8128) + b"\0" * (9 * 8128) + submit(2, 1, 0, 4) + b"ok!!"),
    "back_pressure": (1, 96, (submit(1, 1, 0, 3 * 8128) + b"\x11" * (3 * 8128)) * 1
                      + submit(2, 1, 0, 3 * 8128) + b"\x22" * (3 * 8128)
                      + submit(3, 1, 0, 3 * 8128) + b"\x33" * (3 * 8128)),
    "negative_length": (1, 96, submit(1, 1, 0, -1)),
    "ret_submit_from_client": (1, 96, struct.pack(">I", 3) + b"\0" * 44),
    "unplug_mid_transfer": (21, 96, submit(1, 2, 1, 20000) + submit(2, 1, 0, 8) + b"\0" * 8),
    "truncated_header": (1, 5, submit(1, 2, 1, 64)[:30]),
    "byte_by_byte": (1, 0, submit(1, 1, 0, 10) + b"0123456789" + submit(2, 2, 1, 64)),
}

CODEC = {
    "op_devlist": op(0x8005),
    "op_import": imp(b"1-2.3"),
    "cmd_submit": submit(1, 2, 1, 512),
    "cmd_submit_iso": submit(1, 4, 1, 384, np=2) + iso_desc(0, 192) + iso_desc(192, 192),
    "cmd_unlink": unlink(4, 1),
    "ret_submit": struct.pack(">IIIIIiiiii", 3, 1, 0, 0, 0, -32, 0, 0, 0, 0) + b"\0" * 8,
    "ret_unlink": struct.pack(">IIIIIi", 4, 2, 0, 0, 0, -104) + b"\0" * 24,
    "dev_record": b"/x".ljust(256, b"\0") + b"1-1".ljust(32, b"\0") + struct.pack(">IIIHHHBBBBBB", 1, 2, 2, 0x1209, 1, 0x100, 0, 0, 0, 1, 1, 1),
    "iso_wrap": struct.pack(">IIIi", 0xFFFFFFF0, 0x20, 0, 0),
}


def write(target, name, blob):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(blob)


for name, (mode, chunk, stream) in STREAM.items():
    write("fuzz_usbip_stream", name, bytes([mode, chunk]) + stream)
for name, blob in CODEC.items():
    write("fuzz_codec", name, blob)
