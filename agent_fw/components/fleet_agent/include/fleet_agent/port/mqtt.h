/*
 * port/mqtt.h - the MQTT client the agent publishes and subscribes through.
 *
 * Non-blocking and loop-driven: the port owns no thread (1,000 simulated
 * dongles must not cost 1,000 threads). The owner's loop moves bytes (on the
 * posix port: mosquitto_loop_read/write/misc on the client's socket) and the
 * port reports back through the upcalls, always on the owner's thread.
 * esp32: esp-mqtt; posix: libmosquitto (mqtt_mosq.c).
 */
#ifndef FLEET_AGENT_PORT_MQTT_H
#define FLEET_AGENT_PORT_MQTT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    void (*on_connect)(void *arg, bool ok, const char *why);  /* CONNACK, or a failed attempt */
    void (*on_disconnect)(void *arg, const char *why);        /* the session ended */
    void (*on_message)(void *arg, const char *topic, const void *payload, size_t len);
} fleet_mqtt_upcalls_t;

typedef struct {
    const char *url;          /* mqtt://host[:port] */
    const char *client_id;
    const char *username;     /* NULL or "" = none */
    const char *password;
    uint16_t keepalive_s;
    /* Last Will: the broker publishes it when the session dies uncleanly. */
    const char *will_topic;
    const void *will_payload;
    size_t will_len;
    int will_qos;
    bool will_retain;
} fleet_mqtt_connect_t;

typedef struct {
    void (*set_upcalls)(void *ctx, const fleet_mqtt_upcalls_t *up, void *arg);
    /* Start a connection attempt; the result arrives as on_connect. FLEET_OK
     * or FLEET_ERR_INVALID (bad URL) / FLEET_ERR_NET (failed at once). */
    int (*connect)(void *ctx, const fleet_mqtt_connect_t *c);
    /* Graceful DISCONNECT: the broker does not publish the will. */
    void (*disconnect)(void *ctx);
    /* Queue a message; FLEET_OK or FLEET_ERR_NET when not connected. */
    int (*publish)(void *ctx, const char *topic, const void *payload, size_t len, int qos, bool retain);
    int (*subscribe)(void *ctx, const char *filter, int qos);
    /* Can this port connect to url at all (scheme, TLS support)? Optional.
     * The agent refuses a config document naming a broker it could never
     * reach, instead of applying it and going dark. */
    bool (*url_usable)(void *ctx, const char *url, char *reason, size_t reason_len);
} fleet_mqtt_ops_t;

#endif /* FLEET_AGENT_PORT_MQTT_H */
