"""MQTT transport of the fleet service.

    ingest.py      MqttIngestor: subscribes, validates, batches into the IngestSink, acks after commit;
                   also the CommandPublisher (cmd/<name> to dongles)
    inbound.py     one received message -> InboundMessage or a reject reason (no paho here)
    fastclient.py  paho Client with buffered reads, batched PUBLISH decoding and batched PUBACKs
    url.py         mqtt:// and mqtts:// broker URLs
    metrics.py     Prometheus series of this package
    broker.py      EmbeddedBroker: in-process MQTT 3.1.1 broker for the one-machine setup
    packets.py     MQTT 3.1.1 wire format used by the broker
    topics.py      topic filter validation and matching
"""
