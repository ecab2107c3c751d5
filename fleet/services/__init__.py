"""Application services: the use cases, one transaction each.

They take a SQLAlchemy ``sessionmaker`` and the ports they need
(``fleet.ports.CommandPublisher``), raise ``fleet.domain.errors`` and return
plain JSON-ready dicts (``fleet.services.views``), so the REST API, the CLI
and the MQTT/mDNS adapters are thin wrappers around them.
"""
