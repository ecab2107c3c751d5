"""Firmware registry and OTA requests: images on disk, records in the database,
manifests signed with the service's ECDSA P-256 key (docs/firmware.md, docs/ota.md).
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from fleet import contracts
from fleet.db.models import Command, Dongle, Firmware
from fleet.domain.errors import ConfigError, Conflict, InvalidInput, NotFound
from fleet.domain.firmware import (
    DEFAULT_MAX_IMAGE_BYTES,
    canonical_manifest,
    check_version,
    compare_versions,
    parse_image,
    version_problem,
)
from fleet.domain.model import SYSTEM, Principal
from fleet.services.commands import CommandService
from fleet.services.common import Clock, audit, clamp_page, utcnow
from fleet.services.views import command_view, iso

log = logging.getLogger(__name__)

ALGORITHM = "ecdsa-p256-sha256"


# -- the signing key ------------------------------------------------------------------------
def public_key_path(key_path: Path) -> Path:
    """``signing-key.pem`` -> ``signing-key.pub.pem`` beside it."""
    return key_path.with_name(key_path.name.removesuffix(".pem") + ".pub.pem")


def _write_new(path: Path, data: bytes, mode: int) -> bool:
    """Create ``path`` with ``data`` unless it exists; False if it did. A temp
    file linked into place, so a reader (or a second worker process racing us)
    sees no file or a complete one, and the first writer wins."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
        os.close(fd)
        fd = -1
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        _fsync_dir(path.parent)
        return True
    finally:
        if fd >= 0:
            os.close(fd)
        os.unlink(tmp)


def _fsync_dir(folder: Path) -> None:
    dfd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _public_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_signing_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """The OTA signing key, or ``ConfigError`` naming the setting and what is wrong."""
    where = f"ota_signing_key ({path})"
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError([f"{where}: cannot read it ({exc.strerror or exc})"]) from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ConfigError([f"{where}: not an unencrypted PEM private key ({exc})"]) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        kind = key.curve.name if isinstance(key, ec.EllipticCurvePrivateKey) else type(key).__name__
        raise ConfigError(
            [f"{where}: is a {kind} key; dongles verify ECDSA P-256 (prime256v1/secp256r1) signatures only"]
        )
    return key


def ensure_signing_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """Load the key, creating it (mode 0600) on first start; (re)write the public
    key beside it so it can be handed to dongles (``fleet-dongle --ota-pubkey``)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError([f"ota_signing_key ({path}): cannot create its folder ({exc.strerror})"]) from None
    if not path.exists():
        pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        if _write_new(path, pem, 0o600):
            log.info("created the OTA signing key %s", path)
    key = load_signing_key(path)
    pub = public_key_path(path)
    pem_pub = _public_pem(key)
    try:
        if not pub.exists() or pub.read_bytes() != pem_pub:
            with contextlib.suppress(FileNotFoundError):
                pub.unlink()
            _write_new(pub, pem_pub, 0o644)
    except OSError as exc:
        # A key provisioned read-only (a Kubernetes secret) is fine: the public
        # half is only a convenience for simulated dongles next to the service.
        log.warning("cannot write the OTA public key to %s (%s); `fleet firmware pubkey` prints it", pub,
                    exc.strerror or exc)
    return key


def sign(key: ec.EllipticCurvePrivateKey, message: bytes) -> str:
    """base64 of the DER ECDSA P-256/SHA-256 signature, as the manifest carries it."""
    return base64.b64encode(key.sign(message, ec.ECDSA(hashes.SHA256()))).decode("ascii")


# -- the registry -----------------------------------------------------------------------------
@dataclass(frozen=True)
class FirmwareSettings:
    firmware_dir: Path
    signing_key: ec.EllipticCurvePrivateKey
    public_url: str
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES


def firmware_view(f: Firmware, public_url: str) -> dict[str, Any]:
    return {
        "id": f.id,
        "version": f.version,
        "chip": f.chip,
        "chip_id": f.chip_id,
        "min_rev": f.min_rev,
        "max_rev": f.max_rev,
        "secure_version": f.secure_version,
        "size": f.size,
        "sha256": f.sha256,
        "filename": f.filename,
        "notes": f.notes,
        "uploaded_at": iso(f.uploaded_at),
        "uploaded_by": f.uploaded_by,
        "url": f"{public_url}/fw/{f.sha256}.bin",
    }


class FirmwareService:
    def __init__(
        self,
        session_factory: sessionmaker[Session],
        commands: CommandService,
        settings: FirmwareSettings,
        clock: Clock = utcnow,
    ):
        self._sf = session_factory
        self._commands = commands
        self._clock = clock
        self.settings = settings
        self.dir = settings.firmware_dir
        self.max_image_bytes = settings.max_image_bytes
        self._key = settings.signing_key
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError([f"firmware_dir ({self.dir}): cannot create it ({exc.strerror})"]) from None

    # -- files -------------------------------------------------------------------------
    def path_of(self, sha256: str) -> Path | None:
        """The stored image with this SHA-256, or None."""
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256.lower()):
            return None
        path = self.dir / f"{sha256.lower()}.bin"
        return path if path.is_file() else None

    def _store(self, sha256: str, data: bytes) -> None:
        path = self.dir / f"{sha256}.bin"
        if path.is_file() and path.stat().st_size == len(data):
            return  # named by its hash: same name, same bytes
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=f".{sha256}.")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        _fsync_dir(self.dir)

    # -- registry ----------------------------------------------------------------------
    def public_key(self) -> dict[str, str]:
        return {"algorithm": ALGORITHM, "public_key_pem": _public_pem(self._key).decode("ascii")}

    def _view(self, f: Firmware) -> dict[str, Any]:
        return firmware_view(f, self.settings.public_url)

    def upload(
        self,
        data: bytes,
        *,
        filename: str | None = None,
        notes: str | None = None,
        actor: Principal = SYSTEM,
    ) -> tuple[dict[str, Any], bool]:
        """Register an image; ``(view, created)``. The same bytes again return the existing record."""
        if filename is not None and (len(filename) > 255 or "/" in filename or "\0" in filename):
            raise InvalidInput("filename", "must be a file name (no '/'), at most 255 characters")
        if notes is not None and len(notes) > 2000:
            raise InvalidInput("notes", f"is {len(notes)} characters; at most 2000")
        info = parse_image(data, max_size=self.max_image_bytes)
        with self._sf() as s:
            existing = s.scalar(select(Firmware).where(Firmware.sha256 == info.sha256))
            if existing is not None:
                return self._view(existing), False
        # The file first: a record never names bytes that are not there.
        self._store(info.sha256, data)
        now = self._clock()
        try:
            with self._sf.begin() as s:
                other = s.scalar(
                    select(Firmware).where(Firmware.chip == info.chip, Firmware.version == info.version)
                )
                if other is not None:
                    raise Conflict(
                        f"firmware {info.version} for {info.chip} is already registered as id {other.id} "
                        f"with other bytes (sha256 {other.sha256}); delete it first or bump the version",
                        firmware_id=other.id,
                    )
                row = Firmware(
                    version=info.version,
                    chip=info.chip,
                    chip_id=info.chip_id,
                    min_rev=info.min_rev,
                    max_rev=info.max_rev,
                    secure_version=info.secure_version,
                    size=info.size,
                    sha256=info.sha256,
                    filename=filename,
                    notes=notes,
                    uploaded_at=now,
                    uploaded_by=actor.name,
                )
                s.add(row)
                s.flush()
                audit(
                    s,
                    at=now,
                    actor=actor.name,
                    action="firmware.upload",
                    target=f"firmware:{row.id}",
                    detail={
                        "version": info.version,
                        "chip": info.chip,
                        "sha256": info.sha256,
                        "size": info.size,
                    },
                )
                view = self._view(row)
        except IntegrityError:
            # A concurrent upload of the same bytes won the race; theirs is ours.
            with self._sf() as s:
                existing = s.scalar(select(Firmware).where(Firmware.sha256 == info.sha256))
                if existing is None:
                    raise
                return self._view(existing), False
        except Conflict:
            self._forget_file(info.sha256)
            raise
        return view, True

    def _forget_file(self, sha256: str) -> None:
        with self._sf() as s:
            if s.scalar(select(Firmware.id).where(Firmware.sha256 == sha256)) is not None:
                return
        with contextlib.suppress(FileNotFoundError):
            (self.dir / f"{sha256}.bin").unlink()

    def list(
        self,
        *,
        chip: str | None = None,
        version: str | None = None,
        sha256: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> dict[str, Any]:
        limit, offset = clamp_page(limit, offset)
        q = select(Firmware)
        if sha256:
            q = q.where(Firmware.sha256 == sha256.lower())
        if chip:
            q = q.where(Firmware.chip == chip)
        if version:
            q = q.where(Firmware.version == version)
        with self._sf() as s:
            total = s.scalar(select(func.count()).select_from(q.subquery())) or 0
            rows = s.scalars(q.order_by(Firmware.id.desc()).limit(limit).offset(offset)).all()
            return {"items": [self._view(f) for f in rows], "total": total, "limit": limit, "offset": offset}

    def get(self, firmware_id: int) -> dict[str, Any]:
        with self._sf() as s:
            return self._view(self._get(s, firmware_id))

    @staticmethod
    def _get(s: Session, firmware_id: int) -> Firmware:
        f = s.get(Firmware, firmware_id)
        if f is None:
            raise NotFound(f"no firmware {firmware_id}", field="firmware_id")
        return f

    def delete(self, firmware_id: int, *, actor: Principal = SYSTEM) -> dict[str, Any]:
        now = self._clock()
        with self._sf.begin() as s:
            f = self._get(s, firmware_id)
            view = self._view(f)
            s.execute(delete(Firmware).where(Firmware.id == firmware_id))
            audit(
                s,
                at=now,
                actor=actor.name,
                action="firmware.delete",
                target=f"firmware:{firmware_id}",
                detail={"version": f.version, "chip": f.chip, "sha256": f.sha256},
            )
        with contextlib.suppress(FileNotFoundError):
            (self.dir / f"{view['sha256']}.bin").unlink()
        return view

    # -- OTA -----------------------------------------------------------------------------
    def request_ota(
        self,
        dongle_id: str,
        *,
        firmware_id: int | None = None,
        version: str | None = None,
        allow_downgrade: bool = False,
        actor: Principal = SYSTEM,
    ) -> dict[str, Any]:
        """Sign a manifest for ``dongle_id`` and send it as an ``ota`` command; the command view."""
        if (firmware_id is None) == (version is None):
            raise InvalidInput("firmware_id", "give exactly one of firmware_id or version")
        if version is not None:
            check_version(version)
        with self._sf.begin() as s:
            d = s.get(Dongle, dongle_id)
            if d is None:
                raise NotFound(f"no dongle {dongle_id!r}")
            if d.status != "online":
                raise Conflict(f"dongle {dongle_id} is offline ({d.status}); an ota command is not queued")
            if not d.chip_model:
                raise Conflict(
                    f"dongle {dongle_id} has not reported its chip yet; wait for its state message"
                )
            if firmware_id is not None:
                fw = self._get(s, firmware_id)
                if fw.chip != d.chip_model:
                    raise InvalidInput(
                        "firmware_id",
                        f"firmware {fw.id} ({fw.version}) is for {fw.chip}, "
                        f"dongle {dongle_id} is {d.chip_model}",
                    )
            else:
                fw = s.scalar(
                    select(Firmware).where(Firmware.chip == d.chip_model, Firmware.version == version)
                )
                if fw is None:
                    raise NotFound(
                        f"no firmware {version} for {d.chip_model} (dongle {dongle_id}'s chip) is registered",
                        field="version",
                    )
            if d.chip_revision is not None and not fw.min_rev <= d.chip_revision <= fw.max_rev:
                raise InvalidInput(
                    "firmware_id",
                    f"dongle {dongle_id} is chip revision {d.chip_revision}; firmware {fw.version} "
                    f"supports revisions {fw.min_rev} to {fw.max_rev}",
                )
            running = d.firmware_version
            if (
                not allow_downgrade
                and running
                and version_problem(running) is None
                and compare_versions(fw.version, running) <= 0
            ):
                same = compare_versions(fw.version, running) == 0
                raise Conflict(
                    f"dongle {dongle_id} runs {running}; {fw.version} is "
                    f"{'the same version' if same else 'a downgrade'} and the dongle refuses it; "
                    "set allow_downgrade to install it anyway",
                    running=running,
                    requested=fw.version,
                )
            if self.path_of(fw.sha256) is None:
                raise Conflict(
                    f"firmware {fw.id}: its image file {self.dir / (fw.sha256 + '.bin')} is missing; "
                    "upload the image again"
                )
            fields = {
                "version": fw.version,
                "size": fw.size,
                "sha256": fw.sha256,
                "chip": fw.chip,
                "chip_id": fw.chip_id,
                "min_rev": fw.min_rev,
                "max_rev": fw.max_rev,
                "secure_version": fw.secure_version,
                "allow_downgrade": allow_downgrade,
            }
            args = {
                **fields,
                "url": f"{self.settings.public_url}/fw/{fw.sha256}.bin",
                "signature": sign(self._key, canonical_manifest(**fields)),
            }
            out = self._commands.record(s, dongle_id=dongle_id, name="ota", args=args)
            # Before commit: a manifest the dongle would refuse to parse is never recorded.
            try:
                contracts.validate("cmd-ota", out.payload)
            except contracts.ContractError as exc:
                raise InvalidInput("manifest", exc.message) from None
            audit(
                s,
                at=self._clock(),
                actor=actor.name,
                action="firmware.ota",
                target=f"dongle:{dongle_id}",
                detail={
                    "firmware_id": fw.id,
                    "version": fw.version,
                    "from_version": running,
                    "request_id": out.payload["request_id"],
                    "allow_downgrade": allow_downgrade,
                },
            )
        self._commands.dispatch([out])
        with self._sf() as s:
            return command_view(s.get_one(Command, out.id))
