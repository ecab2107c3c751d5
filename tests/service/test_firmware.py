"""Firmware registry, image checks, manifest signing and OTA requests (docs/firmware.md).

The API runs over FastAPI's TestClient (httpx against the ASGI app) on both
database backends; the signer is cross-checked against the agent's own test
vectors in agent_fw/test/unit/agent/fixtures/.
"""

from __future__ import annotations

import base64
import json
import socket
import stat
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from esptool.bin_image import ELFSection, ESP32P4FirmwareImage, ESP32S3FirmwareImage
from fastapi.testclient import TestClient

from fleet import contracts
from fleet.api import create_api
from fleet.config import load_settings
from fleet.domain.errors import ConfigError, InvalidInput
from fleet.domain.firmware import canonical_manifest, compare_versions, parse_image, sim_image
from fleet.services.container import Services, build_services
from fleet.services.firmware import (
    FirmwareSettings,
    ensure_signing_key,
    load_signing_key,
    public_key_path,
    sign,
)

from .helpers import DONGLE_A, DONGLE_B, Db, RecordingPublisher, state, status

FIXTURES = Path(__file__).resolve().parents[2] / "agent_fw" / "test" / "unit" / "agent" / "fixtures"
TEST_KEY = FIXTURES / "TEST-ONLY-ota-signing-key.pem"
TEST_PUB = FIXTURES / "TEST-ONLY-ota-signing-key.pub.pem"
FIXTURE_IMAGE = FIXTURES / "fw-posix-sim-0.4.0.bin"
PUBLIC_URL = "http://127.0.0.1:18080"
MAX_BYTES = 256 * 1024


# -- image builders ------------------------------------------------------------------------
def esp_image(
    version: str = "1.2.0",
    *,
    chip: str = "esp32s3",
    secure_version: int = 3,
    min_rev: int = 0,
    max_rev: int = 99,
    desc_magic: int = 0xABCD5432,
) -> bytes:
    """A real ESP app image written by esptool: the app descriptor first, at file offset 0x20."""
    img = ESP32S3FirmwareImage() if chip == "esp32s3" else ESP32P4FirmwareImage()
    desc = (
        struct.pack("<II8x", desc_magic, secure_version)
        + version.encode().ljust(32, b"\0")[:32]
        + b"fleet-dongle".ljust(32, b"\0")
        + bytes(256 - 80)
    )
    img.segments = [
        ELFSection(b".flash.appdesc", 0x3C000020, desc + bytes(64), 0),
        ELFSection(b".iram0.text", 0x40370000, bytes(range(128)), 0),
    ]
    img.min_rev_full, img.max_rev_full, img.entrypoint = min_rev, max_rev, 0x40370000
    data = img.save(None)
    assert data is not None
    return data


def _patch(data: bytes, offset: int, raw: bytes) -> bytes:
    return data[:offset] + raw + data[offset + len(raw) :]


def _sim_header_version(raw: bytes) -> bytes:
    return _patch(sim_image("1.0.0"), 24, raw.ljust(32, b"\0")[:32])


ESP = esp_image()

REFUSED = [
    ("empty", b"", "image: the file is empty"),
    ("unknown-magic", b"\x7fELF" + bytes(100), "image: unknown format: starts with 7f454c46"),
    ("sim-too-short", sim_image("1.0.0")[:40], "image: 40 bytes is too short for a posix-sim image"),
    (
        "sim-bad-chip",
        _patch(sim_image("1.0.0"), 8, b"esp32s3\0\0"),
        "image: posix-sim header chip is 'esp32s3', expected 'posix-sim'",
    ),
    (
        "sim-not-semver",
        _sim_header_version(b"1.0"),
        "image: posix-sim header version '1.0' is not a SemVer 2.0.0 version",
    ),
    (
        "sim-leading-zero",
        _sim_header_version(b"1.02.0"),
        "image: posix-sim header version '1.02.0' is not a SemVer 2.0.0 version",
    ),
    (
        "sim-version-unterminated",
        _sim_header_version(b"1.0.0-" + b"a" * 26),
        "image: posix-sim header version is empty, unterminated or not ASCII",
    ),
    (
        "sim-min-over-max",
        _patch(sim_image("1.0.0"), 60, struct.pack("<HH", 7, 3)),
        "image: min_rev 7 is greater than max_rev 3",
    ),
    (
        "sim-too-large",
        sim_image("1.0.0", payload=bytes(MAX_BYTES)),
        f"image: {MAX_BYTES + 64} bytes is larger",
    ),
    ("esp-too-short", ESP[:100], "image: 100 bytes is too short for an ESP app image"),
    (
        "esp-unknown-chip",
        _patch(ESP, 12, struct.pack("<H", 5)),
        "image: unknown ESP chip id 5 in the image header (known: esp32s3=9, esp32p4=18)",
    ),
    (
        "esp-no-app-desc",
        esp_image(desc_magic=0x12345678),
        "image: no app descriptor: magic at 0x20 is 0x12345678, expected 0xabcd5432",
    ),
    ("esp-not-semver", esp_image("v1.2"), "image: app descriptor version 'v1.2' is not a SemVer 2.0.0"),
    (
        "esp-min-over-max",
        esp_image(min_rev=300, max_rev=100),
        "image: min_rev 300 is greater than max_rev 100",
    ),
    ("esp-checksum", _patch(ESP, 0x20 + 200, b"\x55"), "image: segment checksum is 0x"),
    ("esp-digest", ESP[:-1] + bytes([ESP[-1] ^ 1]), "image: appended SHA-256"),
    ("esp-truncated-segment", ESP[:400], "image: esptool cannot read the esp32s3 image: End of file"),
]


@pytest.mark.parametrize(("data", "message"), [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_parse_image_refuses_with_a_clear_reason(data: bytes, message: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        parse_image(data, max_size=MAX_BYTES)
    assert exc.value.field == "image"
    assert exc.value.message.startswith(message), exc.value.message


def test_parse_image_reads_esp_and_sim_headers() -> None:
    s3 = parse_image(esp_image("2.0.0-rc.1", secure_version=4, min_rev=1, max_rev=199))
    assert (s3.chip, s3.chip_id, s3.version, s3.secure_version, s3.min_rev, s3.max_rev) == (
        "esp32s3",
        9,
        "2.0.0-rc.1",
        4,
        1,
        199,
    )
    p4 = parse_image(esp_image(chip="esp32p4"))
    assert (p4.chip, p4.chip_id) == ("esp32p4", 18)
    fixture = FIXTURE_IMAGE.read_bytes()
    info = parse_image(fixture)
    assert (info.chip, info.chip_id, info.version, info.secure_version, info.size) == (
        "posix-sim",
        32343,
        "0.4.0",
        1,
        1064,
    )
    assert info.sha256 == "cee9c2f6bb9225be36cb1343dd0ef51bb39b8937fcdf5c9334e8f0fb7a3a7cc9"
    # The posix-sim writer produces the fixture byte for byte (same header, same payload).
    assert sim_image("0.4.0", secure_version=1, payload=fixture[64:]) == fixture


def test_sim_image_fault_line_and_argument_checks() -> None:
    img = sim_image("0.5.0", fault="no-usbip-listener", payload=b"rest")
    assert img[64:] == b"fleet-sim-fault: no-usbip-listener\nrest"
    assert parse_image(img).version == "0.5.0"
    for kwargs, field in (
        ({"fault": "explode"}, "fault"),
        ({"min_rev": 5, "max_rev": 4}, "min_rev"),
        ({"max_rev": 70000}, "max_rev"),
        ({"secure_version": -1}, "secure_version"),
    ):
        with pytest.raises(InvalidInput) as exc:
            sim_image("0.5.0", **kwargs)  # type: ignore[arg-type]
        assert exc.value.field == field
    with pytest.raises(InvalidInput, match="at most 31 fit"):
        sim_image("1.0.0-" + "a" * 26)


def test_semver_precedence_matches_the_dongle() -> None:
    ordered = ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta.2", "1.0.0-beta.11", "1.0.0"]
    for a, b in zip(ordered, ordered[1:], strict=False):
        assert compare_versions(a, b) == -1 and compare_versions(b, a) == 1
    assert compare_versions("1.10.0", "1.9.9") == 1
    assert compare_versions("1.0.0+build.5", "1.0.0") == 0


# -- signing -------------------------------------------------------------------------------
def _verify(pub_pem: bytes, signature_b64: str, message: bytes) -> None:
    pub = serialization.load_pem_public_key(pub_pem)
    assert isinstance(pub, ec.EllipticCurvePublicKey)
    pub.verify(base64.b64decode(signature_b64, validate=True), message, ec.ECDSA(hashes.SHA256()))


def test_signer_matches_the_agent_fixture() -> None:
    manifest = json.loads((FIXTURES / "ota-manifest.posix-sim.json").read_text())
    signed = (FIXTURES / "ota-manifest.posix-sim.signed.txt").read_bytes()
    info = parse_image(FIXTURE_IMAGE.read_bytes())
    ours = canonical_manifest(
        version=info.version,
        size=info.size,
        sha256=info.sha256,
        chip=info.chip,
        chip_id=info.chip_id,
        min_rev=info.min_rev,
        max_rev=info.max_rev,
        secure_version=info.secure_version,
        allow_downgrade=manifest["allow_downgrade"],
    )
    assert ours == signed
    # ECDSA signatures differ per run: verify ours (and the fixture's) with the public key.
    key = load_signing_key(TEST_KEY)
    signature = sign(key, ours)
    _verify(TEST_PUB.read_bytes(), signature, signed)
    _verify(TEST_PUB.read_bytes(), manifest["signature"], signed)
    with pytest.raises(InvalidSignature):
        _verify(TEST_PUB.read_bytes(), signature, signed.replace(b"\n0\n", b"\n1\n", 1))
    assert 70 <= len(base64.b64decode(signature)) <= 72


def test_signing_key_created_once_with_mode_600(tmp_path: Path) -> None:
    path = tmp_path / "ota" / "signing-key.pem"
    key = ensure_signing_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    pub = public_key_path(path)
    assert pub == tmp_path / "ota" / "signing-key.pub.pem"
    _verify(pub.read_bytes(), sign(key, b"x"), b"x")
    again = ensure_signing_key(path)  # a restart keeps the key dongles already trust
    assert again.private_numbers() == key.private_numbers()


def test_a_provisioned_key_whose_public_half_cannot_be_written_still_serves(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "signing-key.pem"
    path.write_bytes(TEST_KEY.read_bytes())
    public_key_path(path).mkdir()  # stands in for a read-only secret mount (tests run as root)
    key = ensure_signing_key(path)
    _verify(TEST_PUB.read_bytes(), sign(key, b"x"), b"x")
    assert "cannot write the OTA public key" in caplog.text and "fleet firmware pubkey" in caplog.text


def test_a_key_that_is_not_p256_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "p384.pem"
    path.write_bytes(
        ec.generate_private_key(ec.SECP384R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    with pytest.raises(ConfigError) as exc:
        ensure_signing_key(path)
    assert exc.value.problems == [
        f"ota_signing_key ({path}): is a secp384r1 key; dongles verify ECDSA P-256 "
        "(prime256v1/secp256r1) signatures only"
    ]
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key")
    with pytest.raises(ConfigError, match="not an unencrypted PEM private key"):
        load_signing_key(garbage)


def test_settings_defaults_for_ota(tmp_path: Path) -> None:
    s = load_settings(data_dir=str(tmp_path), api_host="0.0.0.0", api_port=9000)
    assert s.ota_signing_key == tmp_path / "ota" / "signing-key.pem"
    assert s.firmware_dir == tmp_path / "firmware"
    # a wildcard listen address is nothing a dongle can connect to: the machine's name stands in
    assert s.public_url == f"http://{socket.getfqdn()}:9000"
    assert load_settings(mqtt_embedded_listen="0.0.0.0:1883").dongle_mqtt_url == f"mqtt://{socket.getfqdn()}:1883"
    assert load_settings(data_dir=str(tmp_path), api_host="::1").public_url == "http://[::1]:8080"
    assert load_settings(public_url="https://fw.example/x/").public_url == "https://fw.example/x"
    with pytest.raises(ConfigError, match="public_url"):
        load_settings(public_url="ftp://fw.example")


# -- the service over HTTP -----------------------------------------------------------------
@pytest.fixture
def fw_settings(tmp_path: Path) -> FirmwareSettings:
    return FirmwareSettings(
        firmware_dir=tmp_path / "firmware",
        signing_key=load_signing_key(TEST_KEY),
        public_url=PUBLIC_URL,
        max_image_bytes=MAX_BYTES,
    )


@pytest.fixture
def fsvc(db: Db, publisher: RecordingPublisher, fw_settings: FirmwareSettings) -> Services:
    return build_services(db.sf, publisher, lease_default_s=600, lease_max_s=3600, firmware=fw_settings)


@pytest.fixture
def client(fsvc: Services) -> Iterator[TestClient]:
    with TestClient(create_api(fsvc)) as c:
        yield c


def online(
    svc: Services, dongle_id: str, *, chip: str = "posix-sim", version: str = "0.3.0", revision: int = 0
) -> None:
    st = state(dongle_id, [])
    st.payload["chip"] = {"model": chip, "revision": revision}
    st.payload["firmware"] = {"version": version, "idf": "v5.5.5"}
    svc.ingest.apply([status(dongle_id, "online"), st])


@pytest.fixture
def tokens(fsvc: Services) -> dict[str, str]:
    return {name: fsvc.users.add(name, role)[1] for name, role in (("root", "admin"), ("alice", "user"))}


def h(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def upload(client: TestClient, token: str, data: bytes, **params: str) -> Any:
    return client.post(
        "/api/v1/firmware",
        content=data,
        params=params,
        headers={**h(token), "Content-Type": "application/octet-stream"},
    )


def test_upload_is_idempotent_and_listed(
    client: TestClient, tokens: dict[str, str], fw_settings: FirmwareSettings
) -> None:
    root, alice = h(tokens["root"]), h(tokens["alice"])
    data = FIXTURE_IMAGE.read_bytes()
    r = upload(client, tokens["root"], data, filename="fw-posix-sim-0.4.0.bin", notes="first sim build")
    assert r.status_code == 201, r.text
    view = r.json()
    sha = "cee9c2f6bb9225be36cb1343dd0ef51bb39b8937fcdf5c9334e8f0fb7a3a7cc9"
    assert {k: view[k] for k in ("version", "chip", "chip_id", "secure_version", "size", "sha256")} == {
        "version": "0.4.0",
        "chip": "posix-sim",
        "chip_id": 32343,
        "secure_version": 1,
        "size": 1064,
        "sha256": sha,
    }
    assert view["uploaded_by"] == "root" and view["notes"] == "first sim build"
    assert view["url"] == f"{PUBLIC_URL}/fw/{sha}.bin"
    assert (fw_settings.firmware_dir / f"{sha}.bin").read_bytes() == data
    again = upload(client, tokens["root"], data)
    assert again.status_code == 200 and again.json()["id"] == view["id"]
    # Another build claiming the same chip and version is a conflict, not a second record.
    other = sim_image("0.4.0", payload=b"different")
    r = upload(client, tokens["root"], other)
    assert r.status_code == 409 and f"already registered as id {view['id']}" in r.json()["error"]["message"]
    assert not any(p.name.startswith(parse_image(other).sha256) for p in fw_settings.firmware_dir.iterdir())
    assert upload(client, tokens["root"], esp_image("1.0.0")).status_code == 201
    assert client.get("/api/v1/firmware", headers=alice).json()["total"] == 2
    listed = client.get("/api/v1/firmware?chip=posix-sim", headers=alice).json()
    assert [f["id"] for f in listed["items"]] == [view["id"]]
    assert client.get("/api/v1/firmware?version=1.0.0", headers=alice).json()["items"][0]["chip"] == "esp32s3"
    assert client.get(f"/api/v1/firmware?sha256={sha.upper()}", headers=alice).json()["total"] == 1
    assert (
        client.get("/api/v1/firmware?limit=1&offset=1", headers=alice).json()["items"][0]["id"] == view["id"]
    )
    assert client.get(f"/api/v1/firmware/{view['id']}", headers=alice).json() == view
    r = client.get("/api/v1/firmware/999", headers=alice)
    assert r.status_code == 404 and r.json()["error"]["message"] == "no firmware 999"
    # Reads are for everyone, writes for admins.
    assert upload(client, tokens["alice"], data).status_code == 403
    assert client.delete(f"/api/v1/firmware/{view['id']}", headers=alice).status_code == 403
    assert upload(client, "fleet_nope", data).status_code == 401
    r = client.delete(f"/api/v1/firmware/{view['id']}", headers=root)
    assert r.status_code == 200 and r.json()["sha256"] == sha
    assert not (fw_settings.firmware_dir / f"{sha}.bin").exists()
    assert client.get(f"/api/v1/firmware/{view['id']}", headers=alice).status_code == 404
    audit = client.get("/api/v1/audit?action=firmware", headers=alice).json()["items"]
    assert [(a["action"], a["target"], a["actor"]) for a in reversed(audit)] == [
        ("firmware.upload", f"firmware:{view['id']}", "root"),
        ("firmware.upload", f"firmware:{view['id'] + 1}", "root"),
        ("firmware.delete", f"firmware:{view['id']}", "root"),
    ]
    assert audit[-1]["detail"]["sha256"] == sha


def test_upload_refusals_name_what_is_wrong(client: TestClient, tokens: dict[str, str]) -> None:
    for data, message in [
        (b"", "image: the file is empty"),
        (b"hello world", "image: unknown format"),
        (esp_image("v2"), "image: app descriptor version 'v2' is not a SemVer"),
    ]:
        r = upload(client, tokens["root"], data)
        assert r.status_code == 422, r.text
        assert r.json()["error"]["field"] == "image" and r.json()["error"]["message"].startswith(message)
    r = upload(client, tokens["root"], sim_image("1.0.0"), filename="a/b.bin")
    assert r.status_code == 422 and r.json()["error"]["field"] == "filename"
    r = upload(client, tokens["root"], bytes(MAX_BYTES + 1))
    assert r.status_code == 413
    assert r.json()["error"] == {
        "code": "too_large",
        "message": f"body: the image is larger than the {MAX_BYTES}-byte limit (setting firmware_max_bytes)",
        "field": "body",
        "limit": MAX_BYTES,
    }

    # Without Content-Length (chunked), the limit is enforced while reading.
    def chunks() -> Iterator[bytes]:
        for _ in range(MAX_BYTES // 65536 + 2):
            yield bytes(65536)

    r = client.post(
        "/api/v1/firmware",
        content=chunks(),
        headers={**h(tokens["root"]), "Content-Type": "application/octet-stream"},
    )
    assert r.status_code == 413
    # The service keeps serving.
    assert upload(client, tokens["root"], sim_image("1.0.0")).status_code == 201


def test_download_honours_range(client: TestClient, tokens: dict[str, str]) -> None:
    data = FIXTURE_IMAGE.read_bytes()
    url = upload(client, tokens["root"], data).json()["url"].removeprefix(PUBLIC_URL)
    size = len(data)
    r = client.get(url)  # no token: the dongle has none
    assert r.status_code == 200 and r.content == data
    assert r.headers["accept-ranges"] == "bytes" and r.headers["content-length"] == str(size)
    r = client.get(url, headers={"Range": "bytes=1000-"})
    assert r.status_code == 206 and r.content == data[1000:]
    assert r.headers["content-range"] == f"bytes 1000-{size - 1}/{size}"
    r = client.get(url, headers={"Range": "bytes=10-19"})
    assert r.status_code == 206 and r.content == data[10:20]
    assert r.headers["content-range"] == f"bytes 10-19/{size}"
    r = client.get(url, headers={"Range": f"bytes={size}-"})
    assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{size}"
    r = client.head(url)
    assert r.status_code == 200 and r.headers["content-length"] == str(size) and r.content == b""
    assert client.get(url.replace("cee9", "dee9")).status_code == 404
    assert client.get("/fw/not-a-hash.bin").status_code == 404


def test_signing_key_endpoint(client: TestClient, tokens: dict[str, str]) -> None:
    r = client.get("/api/v1/firmware/signing-key", headers=h(tokens["alice"]))
    assert r.status_code == 200
    assert r.json() == {"algorithm": "ecdsa-p256-sha256", "public_key_pem": TEST_PUB.read_text()}


def test_ota_request_sends_a_signed_manifest(
    client: TestClient, tokens: dict[str, str], fsvc: Services, publisher: RecordingPublisher
) -> None:
    online(fsvc, DONGLE_A, version="0.3.0")
    fw = upload(client, tokens["root"], FIXTURE_IMAGE.read_bytes()).json()
    r = client.post(f"/api/v1/dongles/{DONGLE_A}/ota", json={"version": "0.4.0"}, headers=h(tokens["root"]))
    assert r.status_code == 202, r.text
    cmd = r.json()
    assert cmd["name"] == "ota" and cmd["dongle_id"] == DONGLE_A and cmd["state"] == "sent"
    [(dongle, name, payload)] = [s for s in publisher.sent if s[1] == "ota"]
    assert (dongle, name) == (DONGLE_A, "ota") and payload == cmd["payload"]
    contracts.validate("cmd-ota", payload)
    assert payload["url"] == fw["url"] and payload["request_id"] == cmd["request_id"]
    expected = (FIXTURES / "ota-manifest.posix-sim.signed.txt").read_bytes()
    fields = {k: payload[k] for k in ("version", "size", "sha256", "chip", "chip_id", "min_rev", "max_rev")}
    assert (
        canonical_manifest(
            **fields, secure_version=payload["secure_version"], allow_downgrade=payload["allow_downgrade"]
        )
        == expected
    )
    _verify(TEST_PUB.read_bytes(), payload["signature"], expected)
    audit = client.get("/api/v1/audit?action=firmware.ota", headers=h(tokens["alice"])).json()["items"]
    assert audit[0]["target"] == f"dongle:{DONGLE_A}" and audit[0]["detail"] == {
        "firmware_id": fw["id"],
        "version": "0.4.0",
        "from_version": "0.3.0",
        "request_id": cmd["request_id"],
        "allow_downgrade": False,
    }
    # By id as well; alice (not an admin) may not.
    r = client.post(
        f"/api/v1/dongles/{DONGLE_A}/ota", json={"firmware_id": fw["id"]}, headers=h(tokens["root"])
    )
    assert r.status_code == 202
    r = client.post(
        f"/api/v1/dongles/{DONGLE_A}/ota", json={"firmware_id": fw["id"]}, headers=h(tokens["alice"])
    )
    assert r.status_code == 403


def test_ota_request_refusals(
    client: TestClient, tokens: dict[str, str], fsvc: Services, publisher: RecordingPublisher
) -> None:
    root = h(tokens["root"])
    sim = upload(client, tokens["root"], FIXTURE_IMAGE.read_bytes()).json()
    esp = upload(client, tokens["root"], esp_image("1.0.0", min_rev=0, max_rev=1)).json()

    def ota(dongle: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        r = client.post(f"/api/v1/dongles/{dongle}/ota", json=body, headers=root)
        return r.status_code, r.json().get("error", {})

    code, err = ota("esp-000000000000", {"version": "0.4.0"})
    assert code == 404 and err["message"] == "no dongle 'esp-000000000000'"
    online(fsvc, DONGLE_B, version="0.3.0")
    fsvc.ingest.apply([status(DONGLE_B, "offline", "lwt")])
    code, err = ota(DONGLE_B, {"version": "0.4.0"})
    assert code == 409 and err["message"].startswith(f"dongle {DONGLE_B} is offline")
    online(fsvc, DONGLE_A, version="0.5.0")
    code, err = ota(DONGLE_A, {"firmware_id": esp["id"]})
    assert code == 422 and err["field"] == "firmware_id"
    assert err["message"] == (
        f"firmware_id: firmware {esp['id']} (1.0.0) is for esp32s3, dongle {DONGLE_A} is posix-sim"
    )
    code, err = ota(DONGLE_A, {"version": "1.0.0"})
    assert code == 404 and "no firmware 1.0.0 for posix-sim" in err["message"]
    code, err = ota(DONGLE_A, {"firmware_id": 999})
    assert code == 404 and err["message"] == "no firmware 999"
    code, err = ota(DONGLE_A, {})
    assert code == 422 and err["message"] == "firmware_id: give exactly one of firmware_id or version"
    code, err = ota(DONGLE_A, {"version": "0.4.0", "firmware_id": sim["id"]})
    assert code == 422
    code, err = ota(DONGLE_A, {"version": "latest"})
    assert code == 422 and err["field"] == "version"
    code, err = ota(DONGLE_A, {"version": "0.4.0", "allow_downgrade": "maybe"})
    assert code == 422 and err["details"][0]["field"] == "body.allow_downgrade"
    # The dongle runs 0.5.0: 0.4.0 is a downgrade, refused unless allowed (and signed as allowed).
    code, err = ota(DONGLE_A, {"version": "0.4.0"})
    assert code == 409
    assert err["message"] == (
        f"dongle {DONGLE_A} runs 0.5.0; 0.4.0 is a downgrade and the dongle refuses it; "
        "set allow_downgrade to install it anyway"
    )
    assert (err["running"], err["requested"]) == ("0.5.0", "0.4.0")
    assert not [s for s in publisher.sent if s[1] == "ota"]
    r = client.post(
        f"/api/v1/dongles/{DONGLE_A}/ota", json={"version": "0.4.0", "allow_downgrade": True}, headers=root
    )
    assert r.status_code == 202
    payload = r.json()["payload"]
    assert payload["allow_downgrade"] is True
    signed = (FIXTURES / "ota-manifest.posix-sim.signed.txt").read_bytes()
    _verify(TEST_PUB.read_bytes(), payload["signature"], signed[:-2] + b"1\n")
    # Same version as running: the dongle refuses that too.
    online(fsvc, DONGLE_A, version="0.4.0")
    code, err = ota(DONGLE_A, {"version": "0.4.0"})
    assert code == 409 and "0.4.0 is the same version" in err["message"]
    # An ESP dongle outside the image's revision range.
    online(fsvc, DONGLE_B, chip="esp32s3", version="0.9.0", revision=2)
    code, err = ota(DONGLE_B, {"version": "1.0.0"})
    assert code == 422 and "is chip revision 2; firmware 1.0.0 supports revisions 0 to 1" in err["message"]


def test_no_registry_configured_is_a_clear_404(db: Db, publisher: RecordingPublisher) -> None:
    svc = build_services(db.sf, publisher)
    token = svc.users.add("root", "admin")[1]
    with TestClient(create_api(svc)) as c:
        r = c.get("/api/v1/firmware", headers=h(token))
    assert r.status_code == 404 and "no firmware registry" in r.json()["error"]["message"]
