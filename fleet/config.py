"""Service settings: defaults < TOML config file < ``FLEET_*`` environment < explicit overrides.

The config file is named by ``--config`` or ``FLEET_CONFIG``; its keys are
the field names below (``database_url = "..."``). Every problem is reported
at once, one line each, naming the setting and where it came from.
"""

from __future__ import annotations

import os
import socket
import tomllib
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from fleet.domain.errors import ConfigError


def _dongle_facing(host: str) -> str:
    """The host part of a URL a dongle can connect to, for a service listening on ``host``.

    A wildcard listen address is no address anyone can connect to: the machine's
    name stands in for it (set public_url / dongle_mqtt_url when the dongles
    cannot resolve that name)."""
    if host in ("0.0.0.0", "::", ""):
        host = socket.getfqdn()
    return f"[{host}]" if ":" in host else host


def _host_port(value: str, field: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{field} must look like host:port (port 0-65535), got {value!r}")
    return host.strip("[]"), int(port)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLEET_", extra="forbid", validate_default=True)

    data_dir: Path = Field(default_factory=lambda: Path("~/.local/share/fleet").expanduser())
    database_url: str = ""  # empty = SQLite in data_dir
    db_pool_size: int = Field(default=10, ge=1, le=200)
    mqtt_url: str | None = None  # None = run the embedded broker
    mqtt_embedded_listen: str = "127.0.0.1:1883"
    # The broker URL put into the config documents sent to dongles (cmd/config mqtt.url);
    # empty = mqtt_url, else the embedded broker's listen address (set in _defaults).
    dongle_mqtt_url: str = ""
    mqtt_client_id: str = Field(default="fleet-service", min_length=1, max_length=64)
    mqtt_shared_group: str | None = None
    mdns_enabled: bool = True
    # Addresses of the interfaces to browse on (comma-separated in the
    # environment); None or "all" = every interface.
    mdns_interfaces: Annotated[list[str] | None, NoDecode] = None
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8080, ge=0, le=65535)
    lease_default_seconds: int = Field(default=3600, ge=1)
    lease_max_seconds: int = Field(default=7 * 86400, ge=1)
    telemetry_retention_hours: float = Field(default=24.0, gt=0)
    scheduler_interval_seconds: float = Field(default=1.0, gt=0, le=60)
    # fleet_dongle_up{dongle}: off by default, it misses the 50 ms scrape
    # budget at 10,000 dongles on the reference machine (bench/metrics.py).
    metrics_per_dongle: bool = False
    log_level: str = "info"
    # OTA (docs/firmware.md). None/empty = derived in _defaults from data_dir or api_host/api_port.
    ota_signing_key: Path | None = None
    firmware_dir: Path | None = None
    # The slot size: larger uploads get 413 (ESP images are capped at 16 MiB whatever this says).
    firmware_max_bytes: int = Field(default=16 * 1024 * 1024, ge=64, le=256 * 1024 * 1024)
    # The base URL dongles download images from (it goes into the manifest's url).
    public_url: str = ""

    @field_validator("data_dir", mode="after")
    @classmethod
    def _expand(cls, v: Path) -> Path:
        return v.expanduser()

    @field_validator("database_url")
    @classmethod
    def _db_url(cls, v: str) -> str:
        if not v:
            return v
        if v.startswith("postgresql://") or v.startswith("postgres://"):
            v = "postgresql+psycopg://" + v.split("://", 1)[1]
        scheme = v.split("://", 1)[0] if "://" in v else ""
        if scheme not in ("sqlite", "postgresql+psycopg"):
            raise ValueError(
                f"must be sqlite:///PATH or postgresql+psycopg://USER@HOST/DB, got scheme {scheme or v!r}"
            )
        return v

    @field_validator("mqtt_url")
    @classmethod
    def _mqtt_url(cls, v: str | None) -> str | None:
        if v in (None, ""):
            return None
        parts = urlsplit(v)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError(f"must look like mqtt://HOST:PORT or mqtts://HOST:PORT, got {v!r}")
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise ValueError(f"has an invalid port: {v!r}") from None
        return v

    @field_validator("dongle_mqtt_url")
    @classmethod
    def _dongle_mqtt_url(cls, v: str) -> str:
        # The dongle's own limits (cmd-config schema: mqtt.url).
        if v and (not v.startswith(("mqtt://", "mqtts://")) or len(v) > 127 or not urlsplit(v).hostname):
            raise ValueError(
                f"must look like mqtt://HOST:PORT or mqtts://HOST:PORT (at most 127 characters), got {v!r}"
            )
        return v

    @field_validator("mqtt_embedded_listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        _host_port(v, "mqtt_embedded_listen")
        return v

    @field_validator("mdns_interfaces", mode="before")
    @classmethod
    def _ifaces(cls, v: Any) -> Any:
        if isinstance(v, str):
            items = [x.strip() for x in v.split(",") if x.strip()]
            return None if items in ([], ["all"]) else items
        return v

    @field_validator("log_level")
    @classmethod
    def _level(cls, v: str) -> str:
        if v.lower() not in ("debug", "info", "warning", "error"):
            raise ValueError(f"must be debug, info, warning or error, got {v!r}")
        return v.lower()

    @field_validator("ota_signing_key", "firmware_dir", mode="after")
    @classmethod
    def _expand_optional(cls, v: Path | None) -> Path | None:
        return None if v is None else v.expanduser()

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, v: str) -> str:
        if not v:
            return v
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise ValueError(f"must look like http://HOST:PORT or https://HOST[/PATH], got {v!r}")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _defaults(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'fleet.db'}"
        if self.ota_signing_key is None:
            self.ota_signing_key = self.data_dir / "ota" / "signing-key.pem"
        if self.firmware_dir is None:
            self.firmware_dir = self.data_dir / "firmware"
        if not self.public_url:
            self.public_url = f"http://{_dongle_facing(self.api_host)}:{self.api_port}"
        if not self.dongle_mqtt_url:
            if self.mqtt_url:
                self.dongle_mqtt_url = self.mqtt_url
            else:
                host, port = self.embedded_listen
                self.dongle_mqtt_url = f"mqtt://{_dongle_facing(host)}:{port}"
        if self.lease_default_seconds > self.lease_max_seconds:
            raise ValueError(
                f"lease_default_seconds ({self.lease_default_seconds}) exceeds lease_max_seconds "
                f"({self.lease_max_seconds})"
            )
        return self

    @property
    def embedded_listen(self) -> tuple[str, int]:
        return _host_port(self.mqtt_embedded_listen, "mqtt_embedded_listen")


class _TomlSource(PydanticBaseSettingsSource):
    def __init__(self, settings_cls: type[BaseSettings], data: dict[str, Any]):
        super().__init__(settings_cls)
        self._data = data

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError([f"config file {path}: not found"]) from None
    except OSError as exc:
        raise ConfigError([f"config file {path}: cannot read it ({exc.strerror})"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"config file {path}: not valid TOML ({exc})"]) from None
    # Allow the keys at top level or under a [fleet] table.
    if isinstance(data.get("fleet"), dict) and len(data) == 1:
        data = data["fleet"]
    return data


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build settings or raise ``ConfigError`` listing every problem."""
    path = config_file or os.environ.get("FLEET_CONFIG") or None
    file_data = _read_toml(Path(path)) if path else {}
    env_names = {f"FLEET_{n.upper()}" for n in Settings.model_fields}

    class _Loaded(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (init_settings, env_settings, _TomlSource(settings_cls, file_data))

    try:
        loaded = _Loaded(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "settings"
            env = f"FLEET_{loc.upper()}"
            if loc in overrides:
                origin = "command line"
            elif env in os.environ and env in env_names:
                origin = f"environment {env}"
            elif loc in file_data:
                origin = f"config file {path}"
            elif err["type"] == "extra_forbidden":
                origin = f"config file {path}: unknown setting"
            else:
                origin = "settings"
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = f"{loc!r} is not a fleet setting"
            problems.append(f"{loc} ({origin}): {msg}")
        raise ConfigError(problems) from None
    return loaded
