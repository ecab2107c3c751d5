#!/usr/bin/env python3
"""Range-capable static file server for the agent tests (127.0.0.1 only).

Python's http.server ignores Range, so this one implements the part of RFC 9110
the OTA download relies on: "Range: bytes=N-" -> 206 with Content-Range, a start
at or past the end -> 416 with "Content-Range: bytes */SIZE". The first path
segment picks a behaviour, so one server covers every case:

  /fw/NAME              honours Range
  /ignore-range/NAME    always 200 with the whole file (a server without Range)
  /cut/N/NAME           honours Range, then drops the connection after N body bytes
  /slow/NAME            honours Range, sends 4 KiB every 20 ms (time to kill a client)

Prints "port N" on stdout once listening; appends "METHOD PATH range=... status"
to --log for each request so tests can see what the client asked for.
"""
import argparse
import os
import re
import socket
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CHUNK = 4096


class Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        # Clients that vanish mid-body (the kill -9 test) are expected here.
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # keep test output clean; the log file is the record
        pass

    def _record(self, status, rng):
        with open(self.server.log_path, "a", encoding="utf-8") as f:
            f.write(f"{self.command} {self.path} range={rng or '-'} {status}\n")

    def do_GET(self):
        parts = self.path.lstrip("/").split("/")
        mode, cut = parts[0], None
        if mode == "cut" and len(parts) >= 3 and parts[1].isdigit():
            cut, name = int(parts[1]), "/".join(parts[2:])
        elif mode in ("fw", "ignore-range", "slow") and len(parts) >= 2:
            name = "/".join(parts[1:])
        else:
            return self._error(404, None)
        path = os.path.realpath(os.path.join(self.server.root, name))
        if not path.startswith(self.server.root + os.sep) or not os.path.isfile(path):
            return self._error(404, self.headers.get("Range"))
        with open(path, "rb") as f:
            data = f.read()
        rng = self.headers.get("Range")
        start = 0
        if rng and mode != "ignore-range":
            m = re.fullmatch(r"bytes=(\d+)-", rng.strip())
            if not m:
                return self._error(400, rng)
            start = int(m.group(1))
            if start >= len(data):
                self._record(416, rng)
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        status = 206 if start or (rng and mode != "ignore-range") else 200
        body = data[start:]
        self._record(status, rng)
        self.send_response(status)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "none" if mode == "ignore-range" else "bytes")
        self.end_headers()
        if cut is not None:
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        for i in range(0, len(body), CHUNK):
            self.wfile.write(body[i:i + CHUNK])
            if mode == "slow":
                self.wfile.flush()
                time.sleep(0.02)

    def _error(self, code, rng):
        self._record(code, rng)
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    srv = Server(("127.0.0.1", args.port), Handler)
    srv.daemon_threads = True
    srv.root = os.path.realpath(args.dir)
    srv.log_path = args.log
    print(f"port {srv.server_address[1]}", flush=True)
    sys.stdout.close()
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    main()
