"""Keep the inventory current from mDNS alone: browse ``_usbip._tcp``, report what appears, changes, leaves.

The zeroconf browser thread only resolves and queues; a worker thread hands
each change to the ``IngestSink`` and retries when it fails, so a database
hiccup neither blocks zeroconf nor loses the latest state of a dongle.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence

from prometheus_client import Counter
from zeroconf import InterfaceChoice, IPVersion, ServiceBrowser, ServiceInfo, ServiceStateChange, Zeroconf

from fleet.ports import InboundMessage, IngestSink

from .txt import BadTxt, NotADongle, check_txt, decode_txt

log = logging.getLogger(__name__)

SERVICE_TYPE = "_usbip._tcp.local."
RESOLVE_TIMEOUT_MS = 3000

MDNS_SEEN = Counter("fleet_mdns_changes", "mDNS changes of fleet dongles delivered to the sink", ["change"])
MDNS_IGNORED = Counter("fleet_mdns_ignored", "mDNS _usbip._tcp services not taken as dongles", ["reason"])


class MdnsBrowser:
    """Browses ``_usbip._tcp`` on ``interfaces`` (addresses; None = all) and feeds ``sink``."""

    def __init__(self, sink: IngestSink, interfaces: Sequence[str] | None = None) -> None:
        self.sink = sink
        self.interfaces = list(interfaces) if interfaces is not None else None
        self.zeroconf: Zeroconf | None = None
        self._browser: ServiceBrowser | None = None
        self._names: dict[str, str] = {}  # service name -> dongle id, for removals
        self._queue: queue.Queue[InboundMessage | None] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._stopping = threading.Event()

    def start(self) -> MdnsBrowser:
        if self.zeroconf is not None:
            raise RuntimeError("mDNS browser already started")

        self._stopping.clear()
        self._worker = threading.Thread(target=self._run, name="mdns-sink", daemon=True)
        self._worker.start()
        self.zeroconf = Zeroconf(
            interfaces=self.interfaces if self.interfaces is not None else InterfaceChoice.All,
            ip_version=IPVersion.V4Only,
        )
        self._browser = ServiceBrowser(self.zeroconf, SERVICE_TYPE, handlers=[self._on_change])
        log.info("mDNS: browsing %s on %s", SERVICE_TYPE, self.interfaces or "all interfaces")
        return self

    def stop(self) -> None:
        if self.zeroconf is None:
            return
        self._browser.cancel()
        self.zeroconf.close()
        self.zeroconf = None
        self._stopping.set()
        self._queue.put(None)
        self._worker.join(10)
        self._worker = None

    # ---------------------------------------------------------------- zeroconf thread

    def _on_change(
        self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        try:
            if state_change is ServiceStateChange.Removed:
                self._removed(name)
            else:
                self._resolved(zeroconf, service_type, name)
        except Exception:  # one odd record must not stop the browser
            log.exception("mDNS: failed to handle %s %s", state_change.name, name)

    def _resolved(self, zeroconf: Zeroconf, service_type: str, name: str) -> None:
        info = ServiceInfo(service_type, name)
        if not info.request(zeroconf, RESOLVE_TIMEOUT_MS):
            MDNS_IGNORED.labels("unresolved").inc()
            log.info("mDNS: %s did not resolve within %d ms", name, RESOLVE_TIMEOUT_MS)
            return
        try:
            txt = check_txt(decode_txt(info.properties))
        except NotADongle as exc:
            MDNS_IGNORED.labels("not_a_dongle").inc()
            log.debug("mDNS: ignoring %s: %s", name, exc)
            return
        except BadTxt as exc:
            MDNS_IGNORED.labels("bad_txt").inc()
            log.warning("mDNS: ignoring %s: %s", name, exc)
            return
        addresses = info.parsed_addresses(IPVersion.V4Only)
        if not addresses or not info.port:
            MDNS_IGNORED.labels("no_address").inc()
            log.warning("mDNS: ignoring %s: no IPv4 address or port", name)
            return
        dongle_id = txt["id"]
        previous = self._names.get(name)
        if previous is not None and previous != dongle_id:
            self._removed(name)  # the name now announces another dongle
        self._names[name] = dongle_id
        self._queue.put(
            InboundMessage(
                kind="mdns",
                dongle_id=dongle_id,
                source="mdns",
                topic=name,
                received_at=time.time(),
                payload={"present": True, "address": addresses[0], "port": info.port, "txt": txt},
            )
        )

    def _removed(self, name: str) -> None:
        dongle_id = self._names.pop(name, None)
        if dongle_id is None:
            return  # never reported (not a dongle, or unresolved)
        self._queue.put(
            InboundMessage(
                kind="mdns",
                dongle_id=dongle_id,
                source="mdns",
                topic=name,
                received_at=time.time(),
                payload={"present": False, "address": None, "port": None, "txt": {}},
            )
        )

    # ---------------------------------------------------------------- sink worker

    def _run(self) -> None:
        while True:
            msg = self._queue.get()
            if msg is None:
                return
            delay = 0.1
            while True:
                try:
                    self.sink.apply([msg])
                    MDNS_SEEN.labels("present" if msg.payload["present"] else "absent").inc()
                    break
                except Exception:
                    log.exception("mDNS: sink failed for %s; retrying in %.1f s", msg.dongle_id, delay)
                if self._stopping.wait(delay):
                    return
                delay = min(delay * 2, 5.0)
