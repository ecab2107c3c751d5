"""The client refuses servers that break the protocol, with a clear exception.
A scripted server on 127.0.0.1 plays each violation over a real TCP socket."""

from __future__ import annotations

import socket
import threading

import pytest

from fleet.usbip import (
    DIR_IN,
    DIR_OUT,
    ImportRefused,
    ProtocolError,
    SessionClosed,
    codec,
    devlist,
    import_device,
)
from fleet.usbip.codec import DeviceRecord, RetSubmit, RetUnlink
from fleet.usbip.constants import OpStatus, Speed

pytestmark = pytest.mark.timeout(20)


def _record(busid="1-1"):
    return DeviceRecord(f"/fleet/{busid}", busid, 1, 2, Speed.FULL, 0x1209, 4, 0x100, 0, 0, 0, 1, 1, 0)


class ScriptedServer:
    """Accepts one connection, reads `expect` bytes, sends `reply`, then keeps the
    connection open until the test ends (so EOF is never what the client sees
    unless the script says so)."""

    def __init__(self, script):
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(1)
        self.port = self.lsock.getsockname()[1]
        self.script = script
        self.received = b""
        self.conn = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _recv(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.conn.recv(n - len(buf))
            if not chunk:
                break
            buf += chunk
        self.received += buf
        return buf

    def _run(self):
        self.conn, _ = self.lsock.accept()
        for expect, reply in self.script:
            self._recv(expect)
            if reply is None:
                self.conn.close()
                return
            self.conn.sendall(reply)

    def close(self):
        self.lsock.close()
        if self.conn:
            self.conn.close()


@pytest.fixture
def server():
    made = []

    def make(script):
        s = ScriptedServer(script)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


IMPORT_OK = codec.encode_import_reply(OpStatus.OK, _record())


def test_import_sends_the_request_and_returns_a_session(server):
    srv = server([(40, IMPORT_OK)])
    with import_device("127.0.0.1", srv.port, "1-1") as s:
        assert s.devid == (1 << 16) | 2
        assert s.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    assert srv.received == codec.encode_import_request("1-1")


def test_import_reply_for_another_busid_is_refused(server):
    srv = server([(40, codec.encode_import_reply(OpStatus.OK, _record("1-2")))])
    with pytest.raises(ProtocolError, match="imported '1-1' but the reply describes '1-2'"):
        import_device("127.0.0.1", srv.port, "1-1")


def test_import_refusal_carries_the_status(server):
    srv = server([(40, codec.encode_import_reply(OpStatus.DEV_BUSY))])
    with pytest.raises(ImportRefused, match="status 2 \\(DEV_BUSY\\)") as e:
        import_device("127.0.0.1", srv.port, "1-1")
    assert e.value.status == OpStatus.DEV_BUSY


def test_devlist_truncated_reply_raises_session_closed(server):
    full = codec.encode_devlist_reply([_record()])
    srv = server([(8, full[:100]), (0, None)])
    with pytest.raises(SessionClosed, match="truncated at 100 bytes"):
        devlist("127.0.0.1", srv.port)


def _session_with(server, replies):
    """A session whose server answers the first submit with `replies`."""
    srv = server([(40, IMPORT_OK), (48, b"".join(replies))])
    return import_device("127.0.0.1", srv.port, "1-1")


def test_ret_submit_for_an_unknown_seqnum_is_a_protocol_error(server):
    with _session_with(server, [RetSubmit(99, 0, 0).encode()]) as s:
        s.submit(1, DIR_IN, 64)
        with pytest.raises(ProtocolError, match="seqnum 99, which is not pending"):
            s.recv(timeout=5)


def test_ret_submit_longer_than_requested_is_a_protocol_error(server):
    with _session_with(server, [RetSubmit(1, 0, 65, data=bytes(65)).encode()]) as s:
        s.submit(1, DIR_IN, 64)
        with pytest.raises(ProtocolError, match="actual_length 65 exceeds the requested 64"):
            s.recv(timeout=5)


def test_ret_unlink_without_a_pending_unlink_is_a_protocol_error(server):
    with _session_with(server, [RetUnlink(7, -104).encode()]) as s:
        s.submit(1, DIR_IN, 64)
        with pytest.raises(ProtocolError, match="not a pending unlink"):
            s.recv(timeout=5)


def test_server_sending_a_client_command_is_a_protocol_error(server):
    bogus = codec.CmdSubmit(1, 0, DIR_OUT, 1, 0, 0).encode()
    with _session_with(server, [bogus]) as s:
        s.submit(1, DIR_IN, 64)
        with pytest.raises(ProtocolError, match="command 1, which only a client may send"):
            s.recv(timeout=5)


def test_out_of_order_replies_are_matched_by_seqnum(server):
    srv = server(
        [(40, IMPORT_OK), (48 * 2 + 3, RetSubmit(2, 0, 3).encode() + RetSubmit(1, 0, 2, data=b"ok").encode())]
    )
    with import_device("127.0.0.1", srv.port, "1-1") as s:
        a = s.submit(1, DIR_IN, 64)
        b = s.submit(2, DIR_OUT, b"abc")
        assert s.wait(a, timeout=5).data == b"ok"
        assert s.recv(timeout=5).seqnum == b  # parked while waiting for a
        assert s.pending == 0


def test_argument_errors_are_caught_before_anything_is_sent(server):
    with _session_with(server, []) as s:
        with pytest.raises(ValueError, match="OUT URB takes its data"):
            s.submit(1, DIR_OUT, 64)
        with pytest.raises(ValueError, match="IN URB takes the number of bytes"):
            s.submit(1, DIR_IN, b"x")
        with pytest.raises(ValueError, match="needs a setup packet"):
            s.submit(0, DIR_IN, 8)
        with pytest.raises(ValueError, match="endpoint number 16"):
            s.submit(16, DIR_IN, 8)
        assert s.pending == 0
