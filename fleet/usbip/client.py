"""Synchronous USB/IP client: device list, import, and URB traffic on one session.

Blocking sockets and no threads on purpose: tests and the CLI want to say exactly
which PDU goes out when, and read replies in the order the server sends them.
Many outstanding URBs are just several submit() calls before the recv() calls.
"""

from __future__ import annotations

import socket
import struct
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from . import codec
from .codec import DeviceRecord, ProtocolError, RetSubmit
from .constants import (
    DEFAULT_PORT,
    DEVICE_RECORD_SIZE,
    DIR_IN,
    DIR_OUT,
    HEADER_SIZE,
    ISO_DESCRIPTOR_SIZE,
    OP_HEADER_SIZE,
    OP_REP_DEVLIST,
    OP_REP_IMPORT,
    RET_SUBMIT,
    RET_UNLINK,
    OpStatus,
    errno_name,
)

_RECV_CHUNK = 256 * 1024
_PAYLOAD_TIMEOUT_S = 10.0


class SessionClosed(ConnectionError):
    """The server closed the connection (or it broke)."""


class ImportRefused(Exception):
    """OP_REP_IMPORT with a non-zero status."""

    def __init__(self, busid: str, status: int):
        try:
            name = OpStatus(status).name
        except ValueError:
            name = "unknown"
        super().__init__(f"import of {busid} refused: status {status} ({name})")
        self.busid = busid
        self.status = status


class UrbError(Exception):
    """A URB completed with a non-zero status where the caller needed success."""

    def __init__(self, what: str, status: int):
        super().__init__(f"{what} failed: {errno_name(status)} ({status})")
        self.status = status


@dataclass(frozen=True)
class Unlinked:
    """RET_UNLINK: `seqnum` is the CMD_UNLINK's, `target` the URB it was about."""

    seqnum: int
    status: int
    target: int


def _connect(host: str, port: int, timeout: float | None, source: str | None = None) -> socket.socket:
    # `source` picks the local address (e.g. 127.0.0.2) so tests can act as another client
    sock = socket.create_connection(
        (host, port), timeout=timeout, source_address=(source, 0) if source else None
    )
    # One small PDU per URB: Nagle would hold each one for an ACK (tens of ms)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _recv_exact(sock: socket.socket, n: int, what: str) -> bytes:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        r = sock.recv_into(view[got:])
        if r == 0:
            raise SessionClosed(f"connection closed after {got} of {n} bytes of {what}")
        got += r
    return bytes(buf)


def devlist(
    host: str, port: int = DEFAULT_PORT, timeout: float | None = 5.0, source: str | None = None
) -> list[DeviceRecord]:
    """OP_REQ_DEVLIST on a fresh connection, as `usbip list -r` does."""
    with _connect(host, port, timeout, source) as sock:
        sock.sendall(codec.encode_devlist_request())
        data = bytearray()
        while True:
            size = codec.devlist_reply_size(data) if len(data) >= OP_HEADER_SIZE else None
            if len(data) >= OP_HEADER_SIZE:
                codec.decode_op_header(bytes(data[:OP_HEADER_SIZE]), OP_REP_DEVLIST)
            if size is not None:
                break
            chunk = sock.recv(65536)
            if not chunk:
                raise SessionClosed(f"DEVLIST reply truncated at {len(data)} bytes")
            data += chunk
        return codec.decode_devlist_reply(bytes(data))


def import_device(
    host: str, port: int, busid: str, timeout: float | None = 5.0, source: str | None = None
) -> Session:
    """OP_REQ_IMPORT; on success the same connection becomes the URB session."""
    sock = _connect(host, port, timeout, source)
    try:
        sock.sendall(codec.encode_import_request(busid))
        hdr = codec.decode_op_header(_recv_exact(sock, OP_HEADER_SIZE, "OP_REP_IMPORT"), OP_REP_IMPORT)
        if hdr.status != OpStatus.OK:
            raise ImportRefused(busid, hdr.status)
        rec = codec.decode_device_record(_recv_exact(sock, DEVICE_RECORD_SIZE, "OP_REP_IMPORT device"))
        if rec.busid != busid:
            # the Linux client refuses this too ("recv different busid")
            raise ProtocolError(f"imported {busid!r} but the reply describes {rec.busid!r}")
        sock.settimeout(None)
        return Session(sock, rec)
    except BaseException:
        sock.close()
        raise


@dataclass
class _Pending:
    direction: int
    length: int
    iso_packets: int


class Session:
    """One imported device. Not thread-safe: one caller drives it."""

    def __init__(self, sock: socket.socket, device: DeviceRecord):
        self.sock = sock
        self.device = device
        self.devid = device.devid
        self._seq = 0
        self._pending: dict[int, _Pending] = {}
        self._unlinks: dict[int, int] = {}
        self._rbuf = bytearray()
        self._rpos = 0
        self._parked: deque[RetSubmit | Unlinked] = deque()
        self.closed = False

    # ------------------------------------------------------------ sending

    def next_seqnum(self) -> int:
        # one counter for SUBMIT and UNLINK, like Linux vhci; never 0
        self._seq = (self._seq % 0xFFFFFFFF) + 1
        return self._seq

    def encode_submit(
        self,
        ep: int,
        direction: int,
        data_or_length: bytes | int,
        setup: bytes | None = None,
        flags: int = 0,
        interval: int = 0,
        iso: Iterable[codec.IsoPacket] | None = None,
    ) -> tuple[int, bytes]:
        """Builds a CMD_SUBMIT and registers it as pending; the caller sends it.
        Batching several of these into one sendall() is how pipeline() keeps
        the socket busy with few syscalls."""
        if direction == DIR_OUT:
            if isinstance(data_or_length, int):
                raise ValueError("an OUT URB takes its data (bytes), not a length")
            data = bytes(data_or_length)
            length = len(data)
        elif direction == DIR_IN:
            if not isinstance(data_or_length, int):
                raise ValueError("an IN URB takes the number of bytes to read, not data")
            data, length = b"", data_or_length
        else:
            raise ValueError(f"direction {direction} must be DIR_OUT (0) or DIR_IN (1)")
        if ep == 0 and setup is None:
            raise ValueError("a control URB (ep 0) needs a setup packet")
        iso_t = tuple(iso or ())
        seqnum = self.next_seqnum()
        pdu = codec.CmdSubmit(
            seqnum,
            self.devid,
            direction,
            ep,
            flags,
            length,
            0,
            len(iso_t),
            interval,
            setup if setup is not None else bytes(8),
            data,
            iso_t,
        ).encode()
        self._pending[seqnum] = _Pending(direction, length, len(iso_t))
        return seqnum, pdu

    def submit(
        self,
        ep: int,
        direction: int,
        data_or_length: bytes | int,
        setup: bytes | None = None,
        flags: int = 0,
        interval: int = 0,
        iso: Iterable[codec.IsoPacket] | None = None,
    ) -> int:
        seqnum, pdu = self.encode_submit(ep, direction, data_or_length, setup, flags, interval, iso)
        self.send_raw(pdu)
        return seqnum

    def unlink(self, target: int) -> int:
        seqnum = self.next_seqnum()
        self._unlinks[seqnum] = target
        self.send_raw(codec.CmdUnlink(seqnum, self.devid, target).encode())
        return seqnum

    def send_raw(self, data: bytes) -> None:
        """Bytes straight onto the session (tests use it to send malformed PDUs)."""
        try:
            self.sock.sendall(data)
        except OSError as e:
            self.closed = True
            raise SessionClosed(f"send failed: {e}") from e

    # ------------------------------------------------------------ receiving

    def _fill(self, n: int) -> bytes:
        """The next n bytes of the stream (reads ahead in big chunks: few syscalls)."""
        avail = len(self._rbuf) - self._rpos
        if avail < n:
            if self._rpos:
                del self._rbuf[: self._rpos]
                self._rpos = 0
            while len(self._rbuf) < n:
                try:
                    chunk = self.sock.recv(max(_RECV_CHUNK, n - len(self._rbuf)))
                except TimeoutError:
                    raise  # nothing consumed: the caller may try again
                except OSError as e:
                    self.closed = True
                    raise SessionClosed(f"receive failed: {e}") from e
                if not chunk:
                    self.closed = True
                    raise SessionClosed(
                        f"server closed the session ({len(self._pending)} URBs still pending)"
                    )
                self._rbuf += chunk
        out = bytes(self._rbuf[self._rpos : self._rpos + n])
        self._rpos += n
        return out

    def recv(self, timeout: float | None = None) -> RetSubmit | Unlinked:
        """The next reply from the server (or one parked by wait()).
        TimeoutError if none within `timeout` seconds (None = block)."""
        if self._parked:
            return self._parked.popleft()
        self.sock.settimeout(timeout)
        h = codec.decode_header(self._fill(HEADER_SIZE))
        if h.command == RET_SUBMIT:
            p = self._pending.pop(h.seqnum, None)
            if p is None:
                raise ProtocolError(f"RET_SUBMIT for seqnum {h.seqnum}, which is not pending")
            codec.check_ret_submit(h, p.direction, p.length)
            n = h.actual_length if p.direction == DIR_IN else 0
            # the header is consumed: the rest of this PDU must follow promptly,
            # or the stream cannot be resumed
            self.sock.settimeout(None if timeout is None else max(timeout, _PAYLOAD_TIMEOUT_S))
            try:
                data = self._fill(n) if n else b""
                iso = ()
                if p.iso_packets:
                    if h.number_of_packets != p.iso_packets:
                        raise ProtocolError(
                            f"RET_SUBMIT seqnum {h.seqnum}: {h.number_of_packets} ISO packets, "
                            f"sent {p.iso_packets}"
                        )
                    raw = self._fill(p.iso_packets * ISO_DESCRIPTOR_SIZE)
                    iso = codec.decode_iso_packets(raw, p.iso_packets, p.length)
            except TimeoutError as e:
                self.closed = True
                raise ProtocolError(
                    f"RET_SUBMIT seqnum {h.seqnum}: {n} payload bytes did not follow its header"
                ) from e
            return RetSubmit(
                h.seqnum,
                h.status,
                h.actual_length,
                h.start_frame,
                h.number_of_packets,
                h.error_count,
                data,
                iso,
                h.devid,
                h.direction,
                h.ep,
            )
        if h.command == RET_UNLINK:
            target = self._unlinks.pop(h.seqnum, None)
            if target is None:
                raise ProtocolError(f"RET_UNLINK for seqnum {h.seqnum}, which is not a pending unlink")
            if h.status != 0:
                # the target was cancelled: its RET_SUBMIT must never come
                self._pending.pop(target, None)
            return Unlinked(h.seqnum, h.status, target)
        raise ProtocolError(f"server sent command {h.command}, which only a client may send")

    def wait(self, seqnum: int, timeout: float | None = None) -> RetSubmit | Unlinked:
        """The reply to `seqnum`; replies to other URBs are kept for later recv()."""
        for i, r in enumerate(self._parked):
            if r.seqnum == seqnum:
                del self._parked[i]
                return r
        others = []
        try:
            while True:
                self.sock.settimeout(timeout)
                r = self._recv_wire(timeout)
                if r.seqnum == seqnum:
                    return r
                others.append(r)
        finally:
            self._parked.extend(others)

    def _recv_wire(self, timeout: float | None) -> RetSubmit | Unlinked:
        parked, self._parked = self._parked, deque()
        try:
            return self.recv(timeout)
        finally:
            self._parked = parked

    @property
    def pending(self) -> int:
        return len(self._pending)

    # ------------------------------------------------------------ conveniences

    def transfer(
        self,
        ep: int,
        direction: int,
        data_or_length: bytes | int,
        setup: bytes | None = None,
        flags: int = 0,
        timeout: float | None = 10.0,
    ) -> RetSubmit:
        r = self.wait(self.submit(ep, direction, data_or_length, setup, flags), timeout)
        assert isinstance(r, RetSubmit)
        return r

    def pipeline(
        self, requests: Iterable[tuple], depth: int = 8, timeout: float | None = 10.0
    ) -> Iterator[RetSubmit]:
        """Keeps up to `depth` URBs outstanding; yields completions in arrival order.
        Each request is the positional arguments of submit()."""
        it = iter(requests)
        outstanding = 0
        exhausted = False
        while True:
            batch = []
            while not exhausted and outstanding < depth:
                try:
                    req = next(it)
                except StopIteration:
                    exhausted = True
                    break
                batch.append(self.encode_submit(*req)[1])
                outstanding += 1
            if batch:
                self.send_raw(b"".join(batch))
            if outstanding == 0:
                return
            r = self.recv(timeout)
            if isinstance(r, RetSubmit):
                outstanding -= 1
                yield r

    def control(
        self,
        bm_request_type: int,
        b_request: int,
        w_value: int = 0,
        w_index: int = 0,
        data_or_length: bytes | int = 0,
        timeout: float | None = 10.0,
    ) -> RetSubmit:
        direction = DIR_IN if bm_request_type & 0x80 else DIR_OUT
        if direction == DIR_IN:
            if not isinstance(data_or_length, int):
                raise ValueError("a device-to-host control request takes a length")
            w_length = data_or_length
        else:
            if isinstance(data_or_length, int):
                data_or_length = bytes(data_or_length)
            w_length = len(data_or_length)
        setup = codec.setup_packet(bm_request_type, b_request, w_value, w_index, w_length)
        return self.transfer(0, direction, data_or_length, setup, timeout=timeout)

    def get_descriptor(self, dtype: int, index: int = 0, length: int = 255, lang: int = 0) -> bytes:
        r = self.control(0x80, 0x06, (dtype << 8) | index, lang, length)
        if r.status:
            raise UrbError(f"GET_DESCRIPTOR type {dtype} index {index}", r.status)
        return r.data

    def device_descriptor(self) -> bytes:
        return self.get_descriptor(1, 0, 18)

    def config_descriptor(self) -> bytes:
        head = self.get_descriptor(2, 0, 9)
        (total,) = struct.unpack_from("<H", head, 2)
        return self.get_descriptor(2, 0, total)

    def string(self, index: int, lang: int = 0x0409) -> str:
        raw = self.get_descriptor(3, index, 255, lang)
        return raw[2 : raw[0]].decode("utf-16-le")

    def set_configuration(self, value: int = 1) -> None:
        r = self.control(0x00, 0x09, value)
        if r.status:
            raise UrbError(f"SET_CONFIGURATION {value}", r.status)

    def clear_halt(self, ep_address: int) -> None:
        r = self.control(0x02, 0x01, 0, ep_address)
        if r.status:
            raise UrbError(f"CLEAR_FEATURE(ENDPOINT_HALT) 0x{ep_address:02x}", r.status)

    def close(self) -> None:
        self.closed = True
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def endpoints(config: bytes) -> list[tuple[int, int, int, int]]:
    """(interface number, endpoint address, attributes, wMaxPacketSize) of every
    endpoint in a configuration descriptor."""
    out = []
    off, intf = 0, -1
    while off + 2 <= len(config):
        blen, btype = config[off], config[off + 1]
        if blen < 2 or off + blen > len(config):
            raise ProtocolError(f"configuration descriptor: bad bLength {blen} at offset {off}")
        if btype == 4:
            intf = config[off + 2]
        elif btype == 5:
            out.append((intf, config[off + 2], config[off + 3], struct.unpack_from("<H", config, off + 4)[0]))
        off += blen
    return out
