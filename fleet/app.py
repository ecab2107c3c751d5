"""Composition root: settings -> engine -> services -> adapters -> FastAPI app.

This is the one module that knows every concrete class. The MQTT and mDNS
adapters are imported here lazily so the API can run without them
(``fleet serve --no-mqtt --no-mdns``, tests, API-only replicas).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI
from sqlalchemy import Engine

from fleet import metrics
from fleet.api import create_api
from fleet.config import Settings
from fleet.db import migrate
from fleet.db.engine import make_engine, make_session_factory
from fleet.domain.errors import ConfigError, TransportError
from fleet.ports import CommandPublisher
from fleet.scheduler import Scheduler
from fleet.services.container import Services, build_services
from fleet.services.firmware import FirmwareSettings, ensure_signing_key

log = logging.getLogger(__name__)


class SwitchablePublisher:
    """The lease service needs a publisher before the MQTT client exists;
    this forwards to whichever transport is current (none = refuse)."""

    def __init__(self) -> None:
        self.target: CommandPublisher | None = None

    def publish(self, dongle_id: str, name: str, payload: dict[str, Any]) -> None:
        if self.target is None:
            raise TransportError("MQTT is not connected (disabled or not started)")
        self.target.publish(dongle_id, name, payload)


def _adapter(module: str, name: str, flag: str) -> Any:
    """Import a transport adapter late, turning its absence into a clear start-up error."""
    import importlib

    try:
        return getattr(importlib.import_module(module), name)
    except ImportError as exc:
        raise ConfigError(
            [f"{module}.{name} is not available ({exc}); start with {flag} to run without it"]
        ) from None


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    services: Services
    scheduler: Scheduler
    publisher: SwitchablePublisher
    use_mqtt: bool
    use_mdns: bool
    adapters: list[Any] = field(default_factory=list)

    def start(self) -> None:
        """Start the broker, ingestion, discovery and scheduler (in that order)."""
        s = self.settings
        try:
            if self.use_mqtt:
                MqttIngestor = _adapter("fleet.mqtt.ingest", "MqttIngestor", "--no-mqtt")  # noqa: N806

                url = s.mqtt_url
                if url is None:
                    EmbeddedBroker = _adapter("fleet.mqtt.broker", "EmbeddedBroker", "--no-mqtt")  # noqa: N806

                    host, port = s.embedded_listen
                    broker = EmbeddedBroker(host, port)
                    try:
                        broker.start()
                    except OSError as exc:
                        raise ConfigError(
                            [
                                f"mqtt_embedded_listen: cannot listen on {host}:{port} "
                                f"({exc.strerror or exc}); choose another address with "
                                "FLEET_MQTT_EMBEDDED_LISTEN or use an external broker with FLEET_MQTT_URL"
                            ]
                        ) from None
                    self.adapters.append(broker)
                    url = f"mqtt://{host}:{broker.port}"
                ingestor = MqttIngestor(
                    url, s.mqtt_client_id, self.services.ingest, shared_group=s.mqtt_shared_group
                )
                ingestor.start()
                self.adapters.append(ingestor)
                self.publisher.target = ingestor
            if self.use_mdns:
                MdnsBrowser = _adapter("fleet.discovery.mdns", "MdnsBrowser", "--no-mdns")  # noqa: N806

                browser = MdnsBrowser(self.services.ingest, s.mdns_interfaces)
                browser.start()
                self.adapters.append(browser)
            self.scheduler.start()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        self.scheduler.stop()
        self.publisher.target = None
        while self.adapters:
            adapter = self.adapters.pop()
            try:
                adapter.stop()
            except Exception:
                log.exception("stopping %s failed", type(adapter).__name__)
        self.engine.dispose()


def build_runtime(
    settings: Settings, *, mqtt: bool = True, mdns: bool = True, upgrade_db: bool = True
) -> Runtime:
    engine = make_engine(settings.database_url, pool_size=settings.db_pool_size)
    if upgrade_db:
        migrate.upgrade(engine)
    sf = make_session_factory(engine)
    publisher = SwitchablePublisher()
    assert settings.ota_signing_key is not None and settings.firmware_dir is not None  # set by Settings
    firmware = FirmwareSettings(
        firmware_dir=settings.firmware_dir,
        # Created on the first start, so a fresh install can sign manifests right away.
        signing_key=ensure_signing_key(settings.ota_signing_key),
        public_url=settings.public_url,
        max_image_bytes=settings.firmware_max_bytes,
    )
    services = build_services(
        sf,
        publisher,
        lease_default_s=settings.lease_default_seconds,
        lease_max_s=settings.lease_max_seconds,
        firmware=firmware,
        dongle_mqtt_url=settings.dongle_mqtt_url,
    )
    scheduler = Scheduler(
        sf,
        services.leases,
        services.commands,
        interval_s=settings.scheduler_interval_seconds,
        telemetry_retention_hours=settings.telemetry_retention_hours,
    )
    return Runtime(settings, engine, services, scheduler, publisher, mqtt, mdns and settings.mdns_enabled)


def create_app(runtime: Runtime, *, manage_lifecycle: bool = True) -> FastAPI:
    """The ASGI app; with ``manage_lifecycle`` its lifespan starts and stops
    the runtime (``fleet serve`` starts it itself first, so that start-up
    errors are reported before the server binds)."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if not manage_lifecycle:
            yield
            return
        runtime.start()
        try:
            yield
        finally:
            runtime.stop()

    inventory = metrics.InventoryMetrics(
        runtime.services.session_factory, per_dongle=runtime.settings.metrics_per_dongle
    )
    app = create_api(runtime.services, inventory_metrics=inventory, lifespan=lifespan)
    app.state.runtime = runtime
    return app
