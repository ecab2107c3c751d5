#!/usr/bin/env python3
"""USB/IP data-path benchmark of the simulated dongle (fleet-dongle), over loopback.

  (a) Full-Speed bulk read throughput (SCSI READ(10), 120 KiB URBs, CBW + data +
      CSW of a command queued together, one command at a time as usb-storage
      runs Bulk-Only) through a relay that adds 1 ms each way (2 ms round
      trip; loadgen's relay mode, or DelayRelay with --client python), with
      the bus-timing model on; as a fraction of the 1.216 MB/s
      Full-Speed ceiling (19 x 64-byte packets per 1 ms frame).  target >= 0.94
  (b) depth-1 latency of 64-byte probe echo URBs (vendor 0x80: OUT then IN),
      submit -> RET_SUBMIT per URB, loopback, no bus model. Also shown: the
      same client against a null USB/IP server (answers each URB at once,
      no device behind it), the floor this machine's loopback TCP sets, and
      what the dongle adds on top of it.     target p50 <= 0.5 ms, p99 <= 2 ms
  (c) 64-byte URBs per second with 64 outstanding (probe echo), wall clock and
      per dongle CPU-second (it is single-threaded: "on one core").
                                                         target >= 19 000 / s
  (d) the same workloads (msc read MB/s, echo latency, URB rate) against the
      pure-Python `usbip` package from PyPI serving equivalent devices
      (bench/pyusbip/server.py); ratio fleet / PyPI, wall clock and per server
      CPU-second.                                        target >= 10x
  (e) peak payload-buffer memory (stats: buffers.peak vs budget) and the
      dongle's peak RSS.

The client is bench/loadgen.c (compiled here with one cc call): a Python client
cannot drive 20k+ URBs/s, so with it the wall-clock numbers and the ratios in (d)
measured the client, not the servers. Both servers get the same client and the
same offered load; per-CPU numbers divide the work by the server process's own
CPU time (utime + stime) over the timed part. `--client python` runs the old
fleet.usbip client instead, for comparison.

Usage: .venv/bin/python bench/usbip.py [--seconds 4] [--json out.json] [--runs N]
Builds nothing but the load generator: needs agent_fw/host/build/fleet-dongle
(or $FLEET_DONGLE) and a C compiler ($CC, default cc).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import queue
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fleet.usbip import DIR_IN, DIR_OUT, ImportRefused, OpStatus, import_device  # noqa: E402
from fleet.usbip.scsi import BulkOnly  # noqa: E402
from fleet.usbip.simdongle import SimDongle  # noqa: E402

FS_CEILING = 19 * 64 * 1000  # bytes/s: 19 bulk packets of 64 B per 1 ms frame
URB_BLOCKS = 240  # 120 KiB READ(10)s, as usb-storage issues them
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- helpers


class DelayRelay:
    """127.0.0.1 TCP relay delaying every byte by `delay_s` in each direction.
    It delays without limiting bandwidth: chunks are time-stamped on arrival and
    released `delay_s` later, so many can be in flight, as on a long link."""

    def __init__(self, target_port: int, delay_s: float):
        self.target_port = target_port
        self.delay_s = delay_s
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(8)
        self.port = self.lsock.getsockname()[1]
        self.socks: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.lsock.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target_port))
            for s in (client, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.socks.append(s)
            for a, b in ((client, server), (server, client)):
                q: queue.Queue = queue.Queue()
                threading.Thread(target=self._read, args=(a, q), daemon=True).start()
                threading.Thread(target=self._write, args=(b, q), daemon=True).start()

    def _read(self, src: socket.socket, q: queue.Queue) -> None:
        while True:
            try:
                data = src.recv(1 << 20)
            except OSError:
                data = b""
            q.put((time.monotonic() + self.delay_s, data))
            if not data:
                return

    def _write(self, dst: socket.socket, q: queue.Queue) -> None:
        while True:
            due, data = q.get()
            # merge what is already due so a burst leaves in one write
            while not q.empty() and data:
                due2, more = q.queue[0]
                if due2 > due or not more:
                    break
                q.get()
                data += more
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            try:
                if not data:
                    dst.shutdown(socket.SHUT_WR)
                    return
                dst.sendall(data)
            except OSError:
                return

    def stop(self) -> None:
        self.close()

    def close(self) -> None:
        self.lsock.close()
        for s in self.socks:
            # shutdown first: close() alone does not wake a thread blocked in recv(),
            # and the connection would stay open (and the device imported)
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


class PyPIServer:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "pyusbip" / "server.py")], stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "listening on 127.0.0.1:" not in line:
            raise RuntimeError(f"PyPI usbip server did not start: {line!r}")
        self.port = int(line.rsplit(":", 1)[1])
        self.pid = self.proc.pid

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def peak_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def open_device(port: int, busid: str):
    """import_device, waiting out DEV_BUSY while the server notices that the
    previous workload's connection has closed."""
    deadline = time.monotonic() + 3
    while True:
        try:
            return import_device("127.0.0.1", port, busid)
        except ImportRefused as e:
            if e.status != OpStatus.DEV_BUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


# ---------------------------------------------------------------- workloads


def msc_read(
    port: int, busid: str, seconds: float, depth: int = 1, pid: int | None = None
) -> tuple[float, float]:
    """Sequential READ(10)s for about `seconds`: (bytes/s wall, bytes per server
    CPU-second; the latter only with the server's pid).

    depth=1: each command's CBW, data IN and CSW go out together, the next command
    as soon as the CSW is back. Bulk-Only runs one command at a time, and a CBW
    queued behind a running command is NAKed with the host's exponential retry
    back-off (up to 32 frames), which costs more than the round trip it would hide
    (measured: 0.78 of the ceiling at depth 2 vs 0.96 at depth 1)."""
    with open_device(port, busid) as s:
        disk = BulkOnly(s)
        cap = disk.read_capacity()
        disk.read(0, 8)  # warm-up: first command pays for configuration
        total = 0
        c0 = cpu_seconds(pid) if pid else 0.0
        t0 = time.perf_counter()

        def times_up() -> bool:
            return time.perf_counter() - t0 >= seconds

        while not times_up():  # wraps around the disk if it is read completely
            for chunk in disk.read_stream(0, cap.blocks, URB_BLOCKS, depth, stop=times_up):
                total += len(chunk)
        dt = time.perf_counter() - t0
        dc = cpu_seconds(pid) - c0 if pid else 0.0
    return total / dt, (total / dc if dc > 0 else float("inf")) if pid else 0.0


def echo_latency(port: int, busid: str, count: int) -> list[float]:
    """Seconds from submit to RET_SUBMIT of each 64-byte URB, one URB at a time."""
    lat = []
    with open_device(port, busid) as s:
        payload = b"\x80" + bytes(range(63))
        for i in range(count + 20):
            t0 = time.perf_counter()
            r = s.transfer(1, DIR_OUT, payload, timeout=5)
            t1 = time.perf_counter()
            back = s.transfer(1, DIR_IN, 64, timeout=5)
            t2 = time.perf_counter()
            if r.status or back.data != payload:
                raise RuntimeError(f"echo {i} failed: {r} {back}")
            if i >= 20:  # warm-up excluded
                lat += [t1 - t0, t2 - t1]
    return lat


def urb_rate(port: int, busid: str, pid: int, seconds: float, depth: int = 64) -> tuple[float, float]:
    """(URBs/s wall, URBs per server CPU-second) for pipelined 64-byte echo URBs."""
    payload = b"\x80" + bytes(63)
    with open_device(port, busid) as s:

        def reqs():
            while True:
                yield (1, DIR_OUT, payload)
                yield (1, DIR_IN, 64)

        it = s.pipeline(reqs(), depth=depth, timeout=5)
        for _ in range(2000):  # warm-up
            next(it)
        n = 0
        c0, t0 = cpu_seconds(pid), time.perf_counter()
        while True:
            for _ in range(1000):
                r = next(it)
                if r.status:
                    raise RuntimeError(f"URB failed: {r}")
            n += 1000
            if time.perf_counter() - t0 >= seconds:
                break
        dt, dc = time.perf_counter() - t0, cpu_seconds(pid) - c0
        # drain what is still outstanding so the session closes cleanly
        it.close()
        while s.pending:
            s.recv(timeout=5)
    return n / dt, n / dc if dc > 0 else float("inf")


# ---------------------------------------------------------------- C client


def build_loadgen() -> Path:
    """Compile bench/loadgen.c once per source version (cached in the temp dir)."""
    src = ROOT / "bench" / "loadgen.c"
    digest = hashlib.sha256(src.read_bytes()).hexdigest()[:16]
    out = Path(tempfile.gettempdir()) / "fleet-bench" / f"loadgen-{digest}"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(f".{os.getpid()}")
        cc = os.environ.get("CC", "cc")
        subprocess.run([cc, "-O2", "-std=c11", "-Wall", "-Wextra", "-o", str(tmp), str(src)], check=True)
        tmp.replace(out)
    return out


class LoadGen:
    def __init__(self) -> None:
        self.binary = build_loadgen()

    def run(self, mode: str, port: int, busid: str, *args, pid: int | None = None) -> dict:
        """One workload; the process exits non-zero (and we raise) if any reply is wrong."""
        deadline = time.monotonic() + 3
        while True:  # the previous workload's session may still be closing: DEV_BUSY
            cmd = [str(self.binary), mode, "127.0.0.1", str(port), busid, *map(str, args)]
            if pid:
                cmd.append(str(pid))
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            if p.returncode == 0:
                return json.loads(p.stdout)
            if "status 2" not in p.stderr or time.monotonic() > deadline:
                raise RuntimeError(f"loadgen {mode} failed: {p.stderr.strip()}")
            time.sleep(0.05)


class LoadGenServer:
    """A loadgen mode that listens: prints "listening on 127.0.0.1:PORT"."""

    def __init__(self, lg: LoadGen, *args) -> None:
        self.proc = subprocess.Popen([str(lg.binary), *map(str, args)], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "listening on 127.0.0.1:" not in line:
            raise RuntimeError(f"loadgen {args[0]} did not start: {line!r}")
        self.port = int(line.rsplit(":", 1)[1])

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)


def null_server(lg: LoadGen) -> LoadGenServer:
    """The least a USB/IP server can do: the latency floor of loopback TCP + the client."""
    return LoadGenServer(lg, "null-server")


def c_relay(lg: LoadGen, target_port: int, delay_s: float) -> LoadGenServer:
    """DelayRelay in C: with the C client, Python threads would add their own
    scheduling delay to the 2 ms round trip on a loaded machine."""
    return LoadGenServer(lg, "relay", target_port, int(delay_s * 1e6))


def c_latencies(lg: LoadGen, servers: dict, echoes: int, res: dict, rounds: int = 3) -> None:
    """Depth-1 echo latency of each server, measured in alternating rounds so
    that the load other programs put on the machine hits all of them alike;
    per server the median of the rounds' p50 and p99."""
    runs: dict = {k: [] for k in servers}
    for _ in range(rounds):
        for key, (port, pid) in servers.items():
            runs[key].append(lg.run("echo-lat", port, "1-2", echoes, pid=pid))
    for key, rs in runs.items():
        res[f"{key}_p50_ms"] = statistics.median(r["p50_ms"] for r in rs)
        res[f"{key}_p99_ms"] = statistics.median(r["p99_ms"] for r in rs)


def c_throughput(lg: LoadGen, port: int, pid: int, seconds: float, res: dict, key: str) -> None:
    """URB rate (64 outstanding) and msc read against one server, C client."""
    rate = lg.run("echo-rate", port, "1-2", seconds, 64, pid=pid)
    res[f"{key}_urbs_s"] = rate["urbs"] / rate["seconds"]
    res[f"{key}_urbs_cpu_s"] = rate["urbs"] / max(rate["server_cpu_s"], 1e-9)
    msc = lg.run("msc-read", port, "1-1", seconds, URB_BLOCKS, 1, pid=pid)
    res[f"{key}_msc_Bps"] = msc["bytes"] / msc["seconds"]
    res[f"{key}_msc_B_cpu_s"] = msc["bytes"] / max(msc["server_cpu_s"], 1e-9)


# ---------------------------------------------------------------- main


def run_once(args) -> dict:
    res: dict = {"client": args.client}
    devs = ["msc:size=64M,port=1-1", "probe:port=1-2"]
    lg = LoadGen() if args.client == "c" else None

    print("(a) Full-Speed bulk read, bus timing on, +2 ms round trip ...", flush=True)
    with SimDongle(devs, ["--bus-timing"]) as d:
        relay = c_relay(lg, d.port, 0.001) if lg else DelayRelay(d.port, 0.001)
        try:
            if lg:
                # three windows, the median reported: a window in which other
                # programs kept the client or relay off the CPU shows as the min
                rates = []
                for _ in range(3):
                    r = lg.run("msc-read", relay.port, "1-1", args.seconds * 2 / 3, URB_BLOCKS, 1)
                    rates.append(r["bytes"] / r["seconds"])
                rate = statistics.median(rates)
                res["a_fraction_windows"] = [x / FS_CEILING for x in rates]
                # two commands queued: the second CBW waits, NAKed, in the dongle
                # and must start as soon as the first CSW is taken
                r = lg.run("msc-read", relay.port, "1-1", args.seconds, URB_BLOCKS, 2)
                res["a_fs_read_depth2_Bps"] = r["bytes"] / r["seconds"]
            else:
                rate, _ = msc_read(relay.port, "1-1", args.seconds * 2)
        finally:
            relay.stop()
        res["a_fs_read_Bps"] = rate
        res["a_fraction"] = rate / FS_CEILING
        # same dongle, no relay: what the bus model alone allows
        if lg:
            r = lg.run("msc-read", d.port, "1-1", args.seconds, URB_BLOCKS, 1)
            res["a_fs_read_norelay_Bps"] = r["bytes"] / r["seconds"]
        else:
            res["a_fs_read_norelay_Bps"], _ = msc_read(d.port, "1-1", args.seconds)
        res["e_peak_bus"] = d.stats()["buffers"]

    print("(b)(c) latency and URB rate, no bus model ...", flush=True)
    with SimDongle(devs) as d:
        if lg:
            py = None if args.skip_pypi else PyPIServer()
            ns = null_server(lg)
            try:
                servers = {"fleet": (d.port, d.proc.pid), "floor": (ns.port, 0)}
                if py:
                    servers["pypi"] = (py.port, py.pid)
                c_latencies(lg, servers, args.echoes, res)
                c_throughput(lg, d.port, d.proc.pid, args.seconds, res, "fleet")
                if py:
                    print("(d) PyPI usbip 0.7.0 baseline ...", flush=True)
                    c_throughput(lg, py.port, py.pid, args.seconds, res, "pypi")
            finally:
                ns.stop()
                if py:
                    py.stop()
            res["b_p50_ms"], res["b_p99_ms"] = res["fleet_p50_ms"], res["fleet_p99_ms"]
            res["c_urbs_s"], res["c_urbs_cpu_s"] = res["fleet_urbs_s"], res["fleet_urbs_cpu_s"]
            res["d_fleet_msc_Bps"], res["d_fleet_msc_B_cpu_s"] = (
                res["fleet_msc_Bps"],
                res["fleet_msc_B_cpu_s"],
            )
            if py:
                res["d_pypi_p50_ms"] = res["pypi_p50_ms"]
                res["d_pypi_urbs_s"], res["d_pypi_urbs_cpu_s"] = res["pypi_urbs_s"], res["pypi_urbs_cpu_s"]
                res["d_pypi_msc_Bps"], res["d_pypi_msc_B_cpu_s"] = (
                    res["pypi_msc_Bps"],
                    res["pypi_msc_B_cpu_s"],
                )
        else:
            lat = echo_latency(d.port, "1-2", args.echoes)
            res["b_p50_ms"], res["b_p99_ms"] = pct(lat, 50) * 1e3, pct(lat, 99) * 1e3
            res["c_urbs_s"], res["c_urbs_cpu_s"] = urb_rate(d.port, "1-2", d.proc.pid, args.seconds)
            res["d_fleet_msc_Bps"], res["d_fleet_msc_B_cpu_s"] = msc_read(
                d.port, "1-1", args.seconds, pid=d.proc.pid
            )
        st = d.stats()
        res["e_buffers"] = st["buffers"]
        res["e_copies"] = st.get("copies")
        res["e_rss_kib"] = peak_rss_kib(d.proc.pid)

    if not lg and not args.skip_pypi:
        print("(d) PyPI usbip 0.7.0 baseline ...", flush=True)
        py = PyPIServer()
        try:
            plat = echo_latency(py.port, "1-2", max(200, args.echoes // 5))
            res["d_pypi_p50_ms"] = pct(plat, 50) * 1e3
            res["d_pypi_urbs_s"], res["d_pypi_urbs_cpu_s"] = urb_rate(py.port, "1-2", py.pid, args.seconds)
            res["d_pypi_msc_Bps"], res["d_pypi_msc_B_cpu_s"] = msc_read(
                py.port, "1-1", args.seconds, pid=py.pid
            )
        finally:
            py.stop()
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=4.0, help="duration of each throughput/rate run")
    ap.add_argument("--echoes", type=int, default=2000, help="echoes for the latency percentiles")
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--skip-pypi", action="store_true", help="skip the PyPI baseline (d)")
    ap.add_argument("--client", choices=("c", "python"), default="c", help="load generator (default: c)")
    ap.add_argument("--runs", type=int, default=1, help="repeat everything; the table shows each run")
    args = ap.parse_args()
    runs = []
    for i in range(args.runs):
        if args.runs > 1:
            print(f"--- run {i + 1} of {args.runs}", flush=True)
        runs.append(run_once(args))
        report(runs[-1])
    if args.runs > 1:
        fr = [r["a_fraction"] for r in runs]
        allw = [w for r in runs for w in r.get("a_fraction_windows", [r["a_fraction"]])]
        print(
            f"\n(a) fraction over {len(fr)} runs: min {min(fr):.3f}  median {statistics.median(fr):.3f}  "
            f"max {max(fr):.3f}; over all {len(allw)} windows: min {min(allw):.3f}  "
            f"median {statistics.median(allw):.3f}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(runs if args.runs > 1 else runs[0], indent=2))
    return 0


def report(r: dict) -> None:
    rows = []

    def row(name, value, target="", ok=None):
        mark = "" if ok is None else ("PASS" if ok else "MISS")
        rows.append((name, value, target, mark))

    client = "C loadgen" if r["client"] == "c" else "Python client"
    row("(a) FS bulk read, +2 ms RTT, bus model", f"{r['a_fs_read_Bps'] / 1e6:.3f} MB/s")
    windows = r.get("a_fraction_windows")
    label = " (median of 3 windows)" if windows else ""
    row(
        f"(a) fraction of 1.216 MB/s ceiling{label}",
        f"{r['a_fraction']:.3f}",
        ">= 0.94",
        r["a_fraction"] >= 0.94,
    )
    if windows:
        row("(a) the 3 windows", " / ".join(f"{w:.3f}" for w in windows))
    if "a_fs_read_depth2_Bps" in r:
        row(
            "(a'') same, 2 commands queued (CBW NAKed, then woken)",
            f"{r['a_fs_read_depth2_Bps'] / 1e6:.3f} MB/s ({r['a_fs_read_depth2_Bps'] / FS_CEILING:.3f})",
        )
    row(
        "(a') same without the relay",
        f"{r['a_fs_read_norelay_Bps'] / 1e6:.3f} MB/s ({r['a_fs_read_norelay_Bps'] / FS_CEILING:.3f})",
    )
    row(f"(b) echo URB latency p50 ({client})", f"{r['b_p50_ms']:.3f} ms", "<= 0.5 ms", r["b_p50_ms"] <= 0.5)
    row(f"(b) echo URB latency p99 ({client})", f"{r['b_p99_ms']:.3f} ms", "<= 2 ms", r["b_p99_ms"] <= 2.0)
    if "floor_p50_ms" in r:
        row(
            "(b) null-server floor p50 / p99 (median of 3 rounds)",
            f"{r['floor_p50_ms']:.3f} / {r['floor_p99_ms']:.3f} ms",
        )
        row("(b) added by the dongle, p50", f"{r['b_p50_ms'] - r['floor_p50_ms']:.3f} ms")
    row(f"(c) 64-byte URBs/s wall ({client})", f"{r['c_urbs_s']:,.0f}", ">= 19,000", r["c_urbs_s"] >= 19000)
    row(
        "(c) 64-byte URBs per dongle CPU-second",
        f"{r['c_urbs_cpu_s']:,.0f}",
        ">= 19,000",
        r["c_urbs_cpu_s"] >= 19000,
    )
    if "d_pypi_msc_Bps" in r:
        ratios = {
            "msc read MB/s wall": (r["d_fleet_msc_Bps"] / r["d_pypi_msc_Bps"], False),
            "msc read MB per CPU-s": (r["d_fleet_msc_B_cpu_s"] / r["d_pypi_msc_B_cpu_s"], False),
            "echo latency p50": (r["d_pypi_p50_ms"] / r["b_p50_ms"], False),
            "URBs/s wall": (r["c_urbs_s"] / r["d_pypi_urbs_s"], True),
            "URBs per CPU-s": (r["c_urbs_cpu_s"] / r["d_pypi_urbs_cpu_s"], True),
        }
        if "floor_p50_ms" in r:
            added_f = max(r["b_p50_ms"] - r["floor_p50_ms"], 1e-6)
            added_p = max(r["d_pypi_p50_ms"] - r["floor_p50_ms"], 1e-6)
            ratios["echo latency p50 added over floor"] = (added_p / added_f, False)
        row(
            "(d) msc read fleet / PyPI (wall)",
            f"{r['d_fleet_msc_Bps'] / 1e6:.1f} / {r['d_pypi_msc_Bps'] / 1e6:.1f} MB/s",
        )
        row(
            "(d) msc read fleet / PyPI (per CPU-s)",
            f"{r['d_fleet_msc_B_cpu_s'] / 1e6:.0f} / {r['d_pypi_msc_B_cpu_s'] / 1e6:.0f} MB",
        )
        row("(d) echo p50 PyPI", f"{r['d_pypi_p50_ms']:.3f} ms")
        row(
            "(d) URBs/s PyPI (wall / per CPU-s)", f"{r['d_pypi_urbs_s']:,.0f} / {r['d_pypi_urbs_cpu_s']:,.0f}"
        )
        for k, (v, _) in ratios.items():
            row(f"(d) ratio {k}", f"{v:.1f}x", ">= 10x", v >= 10)
    b = r["e_buffers"]
    row(
        "(e) peak payload buffers",
        f"{b['peak'] / 1024:.0f} KiB of {b['budget'] / 1024:.0f} KiB budget (waits {b['waits']})",
    )
    row("(e) peak payload buffers, bus model run", f"{r['e_peak_bus']['peak'] / 1024:.0f} KiB")
    row("(e) dongle peak RSS", f"{r['e_rss_kib'] / 1024:.1f} MiB")
    row(
        "(e) payload copies",
        str(r["e_copies"]),
        "0",
        r["e_copies"] == 0 if r["e_copies"] is not None else None,
    )
    w = max(len(x[0]) for x in rows)
    print()
    print(f"{'metric':<{w}}  {'value':>32}  {'target':>10}  result")
    for name, value, target, mark in rows:
        print(f"{name:<{w}}  {value:>32}  {target:>10}  {mark}")


if __name__ == "__main__":
    sys.exit(main())
