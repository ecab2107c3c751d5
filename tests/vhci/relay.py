#!/usr/bin/env python3
"""Guest-connection relay that QEMU's slirp starts for each guest TCP connection
(guestfwd=...-cmd:relay.py 127.0.0.1 PORT): stdin/stdout is the guest's stream,
the other end is the USB/IP server on the host's loopback.

Why not plain socat: slirp delivers a second small segment to the guest late
(~40 ms) when a server writes a PDU header and its payload separately. Merging
whatever the server sends within 0.2 ms into one write keeps the kernel client's
round trips realistic whatever the server's write pattern. Guest-to-server bytes
pass through untouched.
"""

from __future__ import annotations

import os
import select
import socket
import sys

GATHER_S = 0.0002
MAX_GATHER = 1 << 20


def main() -> int:
    if len(sys.argv) != 3:
        sys.stderr.write("usage: relay.py 127.0.0.1 PORT\n")
        return 2
    host, port = sys.argv[1], int(sys.argv[2])
    # the harness promises traffic to the loopback only
    if not host.startswith("127."):
        sys.stderr.write(f"relay.py: refusing non-loopback target {host}\n")
        return 2
    server = socket.create_connection((host, port))
    server.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    gin, gout = sys.stdin.fileno(), sys.stdout.fileno()
    guest_open = True
    while True:
        ready, _, _ = select.select([server, gin] if guest_open else [server], [], [])
        if gin in ready:
            data = os.read(gin, 1 << 18)
            if data:
                server.sendall(data)
            else:
                guest_open = False
                server.shutdown(socket.SHUT_WR)
        if server in ready:
            buf = bytearray()
            eof = False
            while True:
                try:
                    chunk = server.recv(1 << 18)
                except OSError:
                    chunk = b""
                if not chunk:
                    eof = True
                    break
                buf += chunk
                if len(buf) >= MAX_GATHER or not select.select([server], [], [], GATHER_S)[0]:
                    break
            view = memoryview(buf)
            while view:
                view = view[os.write(gout, view) :]
            if eof:
                break
    server.close()
    os.close(gout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
