"""USB/IP in Python: the wire codec, a synchronous client and a SCSI-over-BOT helper.

Used by the integration tests and benchmarks of the simulated dongle, and by the
`fleet` CLI for health checks (list a dongle's devices, import one, read a descriptor).

    from fleet.usbip import devlist, import_device
    for d in devlist("127.0.0.1", 3240):
        print(d.busid, d.vid_pid)
    with import_device("127.0.0.1", 3240, "1-1") as s:
        print(s.device_descriptor().hex())
"""

from .client import (
    ImportRefused,
    Session,
    SessionClosed,
    Unlinked,
    UrbError,
    devlist,
    endpoints,
    import_device,
)
from .codec import DeviceRecord, Interface, IsoPacket, ProtocolError, RetSubmit, setup_packet
from .constants import DIR_IN, DIR_OUT, OpStatus, Speed, UrbFlag

__all__ = [
    "DIR_IN",
    "DIR_OUT",
    "DeviceRecord",
    "ImportRefused",
    "Interface",
    "IsoPacket",
    "OpStatus",
    "ProtocolError",
    "RetSubmit",
    "Session",
    "SessionClosed",
    "Speed",
    "Unlinked",
    "UrbError",
    "UrbFlag",
    "devlist",
    "endpoints",
    "import_device",
    "setup_packet",
]
