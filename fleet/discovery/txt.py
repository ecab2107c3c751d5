"""The TXT record a dongle announces with its ``_usbip._tcp`` service (see docs/mqtt-contracts.md)."""

from __future__ import annotations

import re

DONGLE_ID = re.compile(r"^esp-[0-9a-f]{12}$")
KNOWN_KEYS = ("v", "id", "fw", "chip", "rev", "ndev")
CHIPS = ("esp32s3", "esp32p4", "posix-sim")


class NotADongle(ValueError):
    """The service is some other USB/IP server (no fleet id): ignored quietly."""


class BadTxt(ValueError):
    """A fleet dongle announced a TXT record that breaks the contract."""


def decode_txt(properties: dict[bytes, bytes | None]) -> dict[str, str]:
    """DNS-SD key/value pairs -> str dict; keys are case-insensitive (RFC 6763 §6.4)."""
    out: dict[str, str] = {}
    for key, value in properties.items():
        try:
            k = key.decode("ascii").lower()
            v = "" if value is None else value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadTxt(f"TXT entry {key!r} is not ASCII key / UTF-8 value") from exc
        out.setdefault(k, v)  # RFC 6763: the first occurrence wins
    return out


def check_txt(txt: dict[str, str]) -> dict[str, str]:
    """Validate a decoded TXT dict; return the known keys. Raises NotADongle or BadTxt."""
    dongle_id = txt.get("id", "")
    if not DONGLE_ID.fullmatch(dongle_id):
        raise NotADongle(f"id={dongle_id!r} is not esp-<12 lowercase hex>")
    if txt.get("v") != "1":
        raise BadTxt(f"{dongle_id}: unsupported TXT version v={txt.get('v')!r}")
    for key in ("rev", "ndev"):
        if key in txt and not (txt[key].isascii() and txt[key].isdigit() and len(txt[key]) <= 6):
            raise BadTxt(f"{dongle_id}: {key}={txt[key]!r} is not a non-negative integer")
    if "chip" in txt and txt["chip"] not in CHIPS:
        raise BadTxt(f"{dongle_id}: chip={txt['chip']!r} is not one of {', '.join(CHIPS)}")
    if "fw" in txt and not 0 < len(txt["fw"]) <= 32:
        raise BadTxt(f"{dongle_id}: fw must be 1-32 characters")
    return {k: txt[k] for k in KNOWN_KEYS if k in txt}
