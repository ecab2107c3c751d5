"""Split transfers and unlink, end to end (docs: usbip-protocol.md, "Split transfers").

An ESP32-S3 moves at most 127 x MPS = 8128 bytes per Full-Speed bulk transfer, so
fleet-dongle splits bigger URBs. The probe's vendor bulk echo (0x81) frames its
messages with a short packet or a ZLP, which makes every split mistake visible:
a missing or extra ZLP, a short chunk that does not end its URB, a lost unlink.
"""

from __future__ import annotations

import os
import time

import pytest

from fleet.usbip import DIR_IN, DIR_OUT, RetSubmit, Unlinked, UrbFlag
from fleet.usbip.constants import ECONNRESET

pytestmark = [pytest.mark.dongle, pytest.mark.timeout(60)]

EP = 1  # probe: bulk OUT 0x01, bulk IN 0x81
MPS = 64  # Full-Speed bulk
CHUNK = 8128  # S3 Full-Speed per-transfer limit; everything below crosses it
BIG_IN = 65537  # largest bulk echo reply (0x81 + 64 KiB)


def _msg(n: int) -> bytes:
    return b"\x81" + os.urandom(n - 1)


def _silent(s, seconds: float) -> None:
    with pytest.raises(TimeoutError):
        r = s.recv(timeout=seconds)
        raise AssertionError(f"expected no reply yet, got {r}")


@pytest.fixture
def probe(dongle, open_session):
    return open_session(dongle, "1-3")


@pytest.fixture
def slow_probe(dongle, open_session):
    return open_session(dongle, "1-4")  # answers 300 ms after each command


def test_big_bulk_out_and_in_urbs_cross_the_chunk_limit(probe):
    for n in (CHUNK + 1, 3 * CHUNK + 17, 50_001, BIG_IN):
        assert n % MPS  # each message ends with a short packet
        msg = _msg(n)
        out = probe.transfer(EP, DIR_OUT, msg, timeout=10)
        assert (out.status, out.actual_length) == (0, n)
        back = probe.transfer(EP, DIR_IN, BIG_IN, timeout=10)
        assert back.status == 0 and back.actual_length == n
        assert back.data == msg, f"{n}-byte echo corrupted"


def test_exact_multiple_without_zero_packet_is_not_the_end_of_the_message(probe):
    msg = _msg(2 * CHUNK + 2 * MPS)  # 16 384 bytes = 256 full packets, split in 3 chunks
    assert len(msg) % MPS == 0
    out = probe.submit(EP, DIR_OUT, msg)  # no URB_ZERO_PACKET: no ZLP on the bus
    r = probe.recv(timeout=5)
    assert r.seqnum == out and r.status == 0 and r.actual_length == len(msg)
    rd = probe.submit(EP, DIR_IN, BIG_IN)
    _silent(probe, 0.5)  # the probe still waits for the rest of the message
    zlp = probe.submit(EP, DIR_OUT, b"")  # an explicit zero-length URB ends it
    got = {}
    for _ in range(2):
        r = probe.recv(timeout=5)
        got[r.seqnum] = r
    assert got[zlp].status == 0 and got[zlp].actual_length == 0
    assert got[rd].status == 0 and got[rd].data == msg


def test_exact_multiple_with_zero_packet_ends_the_message(probe):
    msg = _msg(CHUNK + MPS * 2)  # 8256 bytes = 129 packets: two chunks, then the ZLP
    assert len(msg) % MPS == 0
    out = probe.transfer(EP, DIR_OUT, msg, flags=UrbFlag.ZERO_PACKET, timeout=5)
    assert out.status == 0 and out.actual_length == len(msg)
    back = probe.transfer(EP, DIR_IN, BIG_IN, timeout=5)
    assert back.status == 0 and back.data == msg
    # and the ZLP the reply ended with was consumed by that URB, not left for the next:
    small = _msg(100)
    probe.transfer(EP, DIR_OUT, small, timeout=5)
    assert probe.transfer(EP, DIR_IN, BIG_IN, timeout=5).data == small


def test_short_in_chunk_ends_the_urb_without_swallowing_the_next(probe):
    first, second = _msg(100), _msg(CHUNK + 300)
    # everything queued at once: the second message's reply must land in the second IN URB
    o1 = probe.submit(EP, DIR_OUT, first)
    i1 = probe.submit(EP, DIR_IN, BIG_IN)
    i2 = probe.submit(EP, DIR_IN, BIG_IN)
    o2 = probe.submit(EP, DIR_OUT, second)
    got = {}
    while len(got) < 4:
        r = probe.recv(timeout=5)
        got[r.seqnum] = r
    assert got[o1].status == got[o2].status == 0
    assert got[i1].actual_length == 100 and got[i1].data == first
    assert got[i2].actual_length == len(second) and got[i2].data == second


def test_in_urbs_of_one_endpoint_complete_in_order(probe):
    msgs = [_msg(n) for n in (10, CHUNK + 5, 64 * 3 + 1, 5000)]
    seqs = []
    for m in msgs:
        seqs.append(("out", probe.submit(EP, DIR_OUT, m)))
        seqs.append(("in", probe.submit(EP, DIR_IN, BIG_IN)))
    replies = [probe.recv(timeout=5) for _ in seqs]
    ins = [r for r in replies if r.seqnum in {s for k, s in seqs if k == "in"}]
    assert [r.seqnum for r in ins] == [s for k, s in seqs if k == "in"]
    assert [r.data for r in ins] == msgs


def test_unlink_of_a_queued_urb(probe):
    head = probe.submit(EP, DIR_IN, BIG_IN)  # in the host controller, NAKing: no command yet
    queued = probe.submit(EP, DIR_IN, BIG_IN)  # behind it in the endpoint queue
    u = probe.unlink(queued)
    r = probe.recv(timeout=2)
    assert isinstance(r, Unlinked) and r.seqnum == u and r.target == queued
    assert r.status == ECONNRESET
    # the head URB is untouched and still gets the next reply; the unlinked one never answers
    msg = _msg(200)
    o = probe.submit(EP, DIR_OUT, msg)
    got = {}
    while len(got) < 2:
        x = probe.recv(timeout=5)
        assert x.seqnum != queued, "RET_SUBMIT for an unlinked URB"
        got[x.seqnum] = x
    assert got[o].status == 0 and got[head].data == msg
    _silent(probe, 0.3)


def test_unlink_of_an_in_flight_urb_loses_nothing(slow_probe):
    s = slow_probe
    msg = b"\x80ping"
    s.transfer(EP, DIR_OUT, msg, timeout=5)
    rd = s.submit(EP, DIR_IN, 64)  # in flight: the probe NAKs for 300 ms
    time.sleep(0.05)
    u = s.unlink(rd)
    r = s.recv(timeout=2)
    assert isinstance(r, Unlinked) and r.seqnum == u and r.status == ECONNRESET
    _silent(s, 0.5)  # no RET_SUBMIT for the cancelled URB, even after the probe is ready
    # the response was not consumed by the cancelled URB: the next read gets it
    assert s.transfer(EP, DIR_IN, 64, timeout=5).data == msg


def test_unlink_mid_split_in_urb(probe):
    # Non-framed 64-byte echo replies are full packets with no terminator, so they
    # all pile into one big IN URB: after 200 of them its first 8128-byte chunk
    # is complete and the second chunk is in flight.
    rd = probe.submit(EP, DIR_IN, 32768)
    outs = [probe.submit(EP, DIR_OUT, b"\x80" + bytes([i]) * 63) for i in range(200)]
    done = set()
    while len(done) < len(outs):
        r = probe.recv(timeout=5)
        assert isinstance(r, RetSubmit) and r.seqnum != rd and r.status == 0
        done.add(r.seqnum)
    u = probe.unlink(rd)
    r = probe.recv(timeout=2)
    assert isinstance(r, Unlinked) and r.seqnum == u and r.target == rd
    assert r.status == ECONNRESET
    _silent(probe, 0.3)
    # the endpoint is usable again and carries fresh data only
    msg = _msg(300)
    probe.transfer(EP, DIR_OUT, msg, timeout=5)
    assert probe.transfer(EP, DIR_IN, BIG_IN, timeout=5).data == msg


def test_unlink_after_completion_answers_zero_after_the_ret_submit(probe):
    msg = b"\x80done"
    probe.transfer(EP, DIR_OUT, msg, timeout=5)
    rd = probe.submit(EP, DIR_IN, 64)
    r = probe.recv(timeout=5)
    assert isinstance(r, RetSubmit) and r.seqnum == rd and r.data == msg
    u = probe.unlink(rd)
    r = probe.recv(timeout=2)
    assert isinstance(r, Unlinked) and r.seqnum == u and r.status == 0


def test_unlink_counter_moves(dongle, probe):
    before = dongle.device_stats("1-3")["unlinks"]
    rd = probe.submit(EP, DIR_IN, 64)
    probe.unlink(rd)
    assert probe.recv(timeout=2).status == ECONNRESET
    assert dongle.device_stats("1-3")["unlinks"] == before + 1
