"""Numbers of the USB/IP wire protocol (docs: /work/shared/docs/usbip-protocol.md).

Names follow the Linux kernel's so that a reader can grep the kernel sources for them.
"""

from __future__ import annotations

import enum

USBIP_VERSION = 0x0111
DEFAULT_PORT = 3240

OP_REQ_DEVLIST = 0x8005
OP_REP_DEVLIST = 0x0005
OP_REQ_IMPORT = 0x8003
OP_REP_IMPORT = 0x0003

CMD_SUBMIT = 1
CMD_UNLINK = 2
RET_SUBMIT = 3
RET_UNLINK = 4

DIR_OUT = 0
DIR_IN = 1

HEADER_SIZE = 48
OP_HEADER_SIZE = 8
DEVICE_RECORD_SIZE = 0x138
INTERFACE_RECORD_SIZE = 4
ISO_DESCRIPTOR_SIZE = 16
BUSID_SIZE = 32
PATH_SIZE = 256

# Larger than any URB a real client sends (usb-storage: 120 KiB, usbfs: 16 MiB cap
# is configurable); anything above is treated as a corrupt stream, not a request.
MAX_TRANSFER_LENGTH = 16 * 1024 * 1024
# Linux limits ISO URBs to 1024 packets; usbip-win2 rejects anything above too.
MAX_ISO_PACKETS = 1024
# A dongle exports a handful of devices; a reply claiming thousands is corrupt.
MAX_DEVICES = 1024
MAX_INTERFACES = 32


class OpStatus(enum.IntEnum):
    """op_common.status (tools/usb/usbip/libsrc/usbip_common.h)."""

    OK = 0
    NA = 1
    DEV_BUSY = 2
    DEV_ERR = 3
    NODEV = 4
    ERROR = 5


class Speed(enum.IntEnum):
    """Linux enum usb_device_speed, as carried in device records."""

    UNKNOWN = 0
    LOW = 1
    FULL = 2
    HIGH = 3
    WIRELESS = 4
    SUPER = 5
    SUPER_PLUS = 6


class UrbFlag(enum.IntFlag):
    """transfer_flags (include/uapi/linux/usbip.h)."""

    SHORT_NOT_OK = 0x0001
    ISO_ASAP = 0x0002
    NO_TRANSFER_DMA_MAP = 0x0004
    ZERO_PACKET = 0x0040
    NO_INTERRUPT = 0x0080
    FREE_BUFFER = 0x0100
    DIR_IN = 0x0200


# Negative errno values a server reports in RET_SUBMIT / RET_UNLINK status.
ENOENT = -2
EXDEV = -18
ENODEV = -19
EPIPE = -32
ETIME = -62
EPROTO = -71
EOVERFLOW = -75
EILSEQ = -84
ECONNRESET = -104
ESHUTDOWN = -108
ETIMEDOUT = -110
EREMOTEIO = -121

ERRNO_NAMES = {
    0: "OK",
    ENOENT: "ENOENT",
    EXDEV: "EXDEV",
    ENODEV: "ENODEV",
    EPIPE: "EPIPE (stall)",
    ETIME: "ETIME",
    EPROTO: "EPROTO",
    EOVERFLOW: "EOVERFLOW",
    EILSEQ: "EILSEQ",
    ECONNRESET: "ECONNRESET",
    ESHUTDOWN: "ESHUTDOWN",
    ETIMEDOUT: "ETIMEDOUT",
    EREMOTEIO: "EREMOTEIO",
}


def errno_name(status: int) -> str:
    return ERRNO_NAMES.get(status, str(status))
