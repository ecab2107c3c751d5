"""Firmware images and the OTA manifest's signed string (docs/ota.md is the contract).

Pure: bytes in, facts out. The dongle runs the same header checks after its
download; refusing here means a bad image never reaches the registry, and the
messages say what is wrong before anyone waits for a dongle to say it.
"""

from __future__ import annotations

import hashlib
import re
import struct
from dataclasses import dataclass

from fleet.domain.errors import InvalidInput

MiB = 1024 * 1024
# The largest app partition ESP-IDF's partition tables allow on these chips;
# also the default slot size of the simulated dongle.
ESP_MAX_IMAGE_BYTES = 16 * MiB
DEFAULT_MAX_IMAGE_BYTES = 16 * MiB

CHIP_IDS = {"esp32s3": 9, "esp32p4": 18, "posix-sim": 0x7E57}
ESP_CHIPS = {cid: name for name, cid in CHIP_IDS.items() if name != "posix-sim"}

VERSION_MAX = 31  # esp_app_desc_t.version is char[32] with its NUL
ESP_IMAGE_MAGIC = 0xE9
ESP_APP_DESC_OFFSET = 0x20
ESP_APP_DESC_MAGIC = 0xABCD5432
ESP_APP_DESC_LEN = 256
SIM_MAGIC = b"FLEETSIM"
SIM_CHIP = "posix-sim"
SIM_HEADER_LEN = 64
SIM_FAULTS = ("no-usbip-listener",)
SIM_FAULT_PREFIX = b"fleet-sim-fault: "
REV_MAX = 65535
SECURE_VERSION_MAX = 2**32 - 1

# SemVer 2.0.0 as the dongle's fleet_semver_valid() reads it: numeric fields
# without leading zeros and at most 9 digits (they must fit a uint32 there).
_NUM = r"(?:0|[1-9][0-9]{0,8})"
_PRE = r"(?:0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)"
_BUILD = r"[0-9A-Za-z-]+"
_SEMVER = re.compile(rf"{_NUM}\.{_NUM}\.{_NUM}(?:-{_PRE}(?:\.{_PRE})*)?(?:\+{_BUILD}(?:\.{_BUILD})*)?")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


@dataclass(frozen=True, slots=True)
class ImageInfo:
    version: str
    chip: str
    chip_id: int
    min_rev: int
    max_rev: int
    secure_version: int
    size: int
    sha256: str


def version_problem(version: str) -> str | None:
    """Why ``version`` cannot be a firmware version, or None when it can."""
    if not version:
        return "is empty"
    if len(version) > VERSION_MAX:
        return f"{version!r} is {len(version)} characters; at most {VERSION_MAX} fit esp_app_desc_t.version"
    if not _SEMVER.fullmatch(version):
        return f"{version!r} is not a SemVer 2.0.0 version (MAJOR.MINOR.PATCH[-PRE][+BUILD])"
    return None


def check_version(version: str, field: str = "version") -> str:
    problem = version_problem(version)
    if problem:
        raise InvalidInput(field, problem)
    return version


def _semver_key(v: str) -> tuple[tuple[int, int, int], int, list[tuple[int, int | str]]]:
    core, _, pre = v.split("+", 1)[0].partition("-")
    major, minor, patch = (int(x) for x in core.split("."))
    # Numeric identifiers sort before alphanumeric ones; a release sorts after its pre-releases.
    idents = [(0, int(p)) if p.isdigit() else (1, p) for p in pre.split(".")] if pre else []
    return (major, minor, patch), 0 if pre else 1, idents


def compare_versions(a: str, b: str) -> int:
    """SemVer precedence (build metadata ignored), as the dongle's fleet_semver_cmp(): -1, 0 or 1."""
    ka, kb = _semver_key(a), _semver_key(b)
    return (ka > kb) - (ka < kb)


def _cstr(raw: bytes) -> str | None:
    """A NUL-padded fixed-size field: its text, or None when empty or without a NUL."""
    nul = raw.find(b"\0")
    if nul <= 0:
        return None
    try:
        return raw[:nul].decode("ascii")
    except UnicodeDecodeError:
        return None


def _check_revs(min_rev: int, max_rev: int) -> None:
    if min_rev > max_rev:
        raise InvalidInput("image", f"min_rev {min_rev} is greater than max_rev {max_rev}")


def _check_size(size: int, limit: int) -> None:
    if size > limit:
        raise InvalidInput("image", f"{size} bytes is larger than the {limit}-byte slot")


def _image_version(raw: bytes, where: str) -> str:
    version = _cstr(raw)
    if version is None:
        raise InvalidInput("image", f"{where} version is empty, unterminated or not ASCII")
    problem = version_problem(version)
    if problem:
        raise InvalidInput("image", f"{where} version {problem}")
    return version


def _parse_sim(data: bytes, max_size: int) -> ImageInfo:
    if len(data) < SIM_HEADER_LEN:
        raise InvalidInput(
            "image", f"{len(data)} bytes is too short for a posix-sim image ({SIM_HEADER_LEN}-byte header)"
        )
    chip = _cstr(data[8:24])
    if chip != SIM_CHIP:
        raise InvalidInput("image", f"posix-sim header chip is {chip!r}, expected {SIM_CHIP!r}")
    version = _image_version(data[24:56], "posix-sim header")
    secure_version, min_rev, max_rev = struct.unpack_from("<IHH", data, 56)
    _check_revs(min_rev, max_rev)
    _check_size(len(data), max_size)
    return ImageInfo(
        version,
        SIM_CHIP,
        CHIP_IDS[SIM_CHIP],
        min_rev,
        max_rev,
        secure_version,
        len(data),
        hashlib.sha256(data).hexdigest(),
    )


def _parse_esp(data: bytes, max_size: int) -> ImageInfo:
    need = ESP_APP_DESC_OFFSET + ESP_APP_DESC_LEN
    if len(data) < need:
        raise InvalidInput("image", f"{len(data)} bytes is too short for an ESP app image ({need} at least)")
    chip_id, min_rev, max_rev = struct.unpack_from("<HxHH", data, 12)
    chip = ESP_CHIPS.get(chip_id)
    if chip is None:
        known = ", ".join(f"{n}={i}" for i, n in ESP_CHIPS.items())
        raise InvalidInput("image", f"unknown ESP chip id {chip_id} in the image header (known: {known})")
    magic, secure_version = struct.unpack_from("<II", data, ESP_APP_DESC_OFFSET)
    if magic != ESP_APP_DESC_MAGIC:
        raise InvalidInput(
            "image",
            f"no app descriptor: magic at 0x{ESP_APP_DESC_OFFSET:x} is 0x{magic:08x}, "
            f"expected 0x{ESP_APP_DESC_MAGIC:08x} (is this a bootloader or a raw binary?)",
        )
    version = _image_version(data[ESP_APP_DESC_OFFSET + 16 : ESP_APP_DESC_OFFSET + 48], "app descriptor")
    _check_revs(min_rev, max_rev)
    _check_size(len(data), min(max_size, ESP_MAX_IMAGE_BYTES))
    _esptool_check(chip, data)
    return ImageInfo(
        version, chip, chip_id, min_rev, max_rev, secure_version, len(data), hashlib.sha256(data).hexdigest()
    )


def _esptool_check(chip: str, data: bytes) -> None:
    """Segments, checksum and appended SHA-256, read by esptool's own loader so
    an image esptool would not flash is not offered to a dongle either."""
    # Imported here: esptool is large and only ESP uploads need it.
    from esptool.bin_image import LoadFirmwareImage

    try:
        image = LoadFirmwareImage(chip, data)
    except Exception as exc:  # esptool raises FatalError, RuntimeError or struct.error
        raise InvalidInput("image", f"esptool cannot read the {chip} image: {exc}") from None
    calculated = image.calculate_checksum()
    if image.checksum != calculated:
        raise InvalidInput(
            "image", f"segment checksum is 0x{image.checksum:02x}, esptool calculates 0x{calculated:02x}"
        )
    if image.append_digest and image.stored_digest != image.calc_digest:
        raise InvalidInput(
            "image",
            f"appended SHA-256 {image.stored_digest.hex() or '(missing)'} does not match the image "
            f"({image.calc_digest.hex()})",
        )


def parse_image(data: bytes, *, max_size: int = DEFAULT_MAX_IMAGE_BYTES) -> ImageInfo:
    """What a firmware image says about itself; ``InvalidInput("image", ...)`` if it is not one."""
    if not data:
        raise InvalidInput("image", "the file is empty")
    if data[0] == ESP_IMAGE_MAGIC:
        return _parse_esp(data, max_size)
    if data[:8] == SIM_MAGIC or (len(data) < 8 and SIM_MAGIC.startswith(data)):
        return _parse_sim(data, max_size)
    raise InvalidInput(
        "image",
        f"unknown format: starts with {data[:8].hex()}; expected an ESP app image (0xe9) "
        f"or a posix-sim image ({SIM_MAGIC.decode()})",
    )


def sim_image(
    version: str,
    *,
    secure_version: int = 0,
    min_rev: int = 0,
    max_rev: int = 99,
    payload: bytes = b"",
    fault: str | None = None,
) -> bytes:
    """A posix-sim image (docs/ota.md); ``fault`` makes the simulated firmware misbehave after boot."""
    check_version(version)
    for name, value, top in (
        ("secure_version", secure_version, SECURE_VERSION_MAX),
        ("min_rev", min_rev, REV_MAX),
        ("max_rev", max_rev, REV_MAX),
    ):
        if not 0 <= value <= top:
            raise InvalidInput(name, f"must be from 0 to {top}, got {value}")
    if min_rev > max_rev:
        raise InvalidInput("min_rev", f"{min_rev} is greater than max_rev {max_rev}")
    if fault is not None:
        if fault not in SIM_FAULTS:
            raise InvalidInput("fault", f"{fault!r} is not one of {', '.join(SIM_FAULTS)}")
        payload = SIM_FAULT_PREFIX + fault.encode() + b"\n" + payload
    header = (
        SIM_MAGIC
        + SIM_CHIP.encode().ljust(16, b"\0")
        + version.encode().ljust(32, b"\0")
        + struct.pack("<IHH", secure_version, min_rev, max_rev)
    )
    return header + payload


def canonical_manifest(
    *,
    version: str,
    size: int,
    sha256: str,
    chip: str,
    chip_id: int,
    min_rev: int,
    max_rev: int,
    secure_version: int,
    allow_downgrade: bool,
) -> bytes:
    """The ten lines the manifest signature covers, byte for byte as the dongle rebuilds them."""
    check_version(version)
    if not _SHA256.fullmatch(sha256):
        raise InvalidInput("sha256", f"must be 64 hex digits, got {sha256!r}")
    if CHIP_IDS.get(chip) != chip_id:
        raise InvalidInput("chip_id", f"{chip_id} does not belong to chip {chip!r}")
    fields = [
        "fleet-ota-v1",
        version,
        str(int(size)),
        sha256.lower(),
        chip,
        str(int(chip_id)),
        str(int(min_rev)),
        str(int(max_rev)),
        str(int(secure_version)),
        "1" if allow_downgrade else "0",
    ]
    return "".join(f"{f}\n" for f in fields).encode("ascii")
