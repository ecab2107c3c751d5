/*
 * agent_runtime_posix.h - the Linux ports of the agent runtime.
 *
 *   mosq      the MQTT port on libmosquitto, without its thread: the owner's
 *             loop watches the client's socket and calls fleet_mosq_on_events,
 *             so a thousand simulated dongles cost no thread at all
 *   mdns      one RFC 6762 responder per process answering for every
 *             simulated dongle it hosts (_usbip._tcp.local)
 *   sim sys   a simulated base MAC, the dongle's loopback address and the
 *             process's memory shared out per dongle
 */
#ifndef FLEET_AGENT_RUNTIME_POSIX_H
#define FLEET_AGENT_RUNTIME_POSIX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fleet_agent/port/mdns.h"
#include "fleet_agent/port/mqtt.h"
#include "fleet_agent/port/sysinfo.h"

/* How a port asks the owner's loop to watch a descriptor. */
typedef struct {
    void (*watch)(void *arg, int fd, bool want_write); /* add, or change interest */
    void (*unwatch)(void *arg, int fd);
    void *arg;
} fleet_fd_watch_t;

/* ---- MQTT on libmosquitto ---------------------------------------------- */
typedef struct fleet_mosq fleet_mosq_t;
extern const fleet_mqtt_ops_t fleet_mosq_ops; /* ctx = fleet_mosq_t * */
/* bind_addr: local address of the client socket (the dongle's 127.x), or NULL. */
int fleet_mosq_create(const fleet_fd_watch_t *w, const char *bind_addr, fleet_mosq_t **out);
void fleet_mosq_destroy(fleet_mosq_t *m);
void fleet_mosq_on_events(fleet_mosq_t *m, bool readable, bool writable);
/* Keepalive pings and timeouts; call about once a second. */
void fleet_mosq_tick(fleet_mosq_t *m);
/* Simulated network cut: while down the socket is neither watched, read nor
 * written, no ping is sent, publishes vanish and connects fail. Back up, the
 * session carries on, or ends through the normal path if the broker closed it. */
void fleet_mosq_set_link(fleet_mosq_t *m, bool up);
/* Simulated power cut: the connection goes without DISCONNECT (the broker
 * publishes the Last Will) and without telling the agent. */
void fleet_mosq_power_cut(fleet_mosq_t *m);
/* Split "mqtt://host[:port]" (also tcp://). false + reason when malformed. */
bool fleet_mqtt_url_split(const char *url, char *host, size_t host_len, int *port, char *reason, size_t rl);

/* ---- mDNS responder ---------------------------------------------------- */
typedef struct fleet_mdns fleet_mdns_t;
extern const fleet_mdns_ops_t fleet_mdns_ops; /* ctx = fleet_mdns_t * */
/* iface_addr: IPv4 of the interface to serve on (127.0.0.1 for lo, which
 * needs `ip link set lo multicast on`). */
int fleet_mdns_create(const fleet_fd_watch_t *w, const char *iface_addr, fleet_mdns_t **out, char *err,
                      size_t err_len);
/* Goodbye for every service still published, then close. */
void fleet_mdns_destroy(fleet_mdns_t *r);
void fleet_mdns_on_readable(fleet_mdns_t *r);
int fleet_mdns_fd(const fleet_mdns_t *r);
/* Repeat announcements (RFC 6762 8.3: at least twice, a second apart). */
void fleet_mdns_tick(fleet_mdns_t *r, uint64_t now_ms);
/* Simulated power cut: stop answering for instance, without a goodbye. */
void fleet_mdns_forget(fleet_mdns_t *r, const char *instance);
/* Simulated network cut of one dongle: while down nothing is sent for
 * instance (no answer, announcement or goodbye), published now or later;
 * back up, it is announced again. */
void fleet_mdns_set_link(fleet_mdns_t *r, const char *instance, bool up);

/* ---- simulated system info --------------------------------------------- */
typedef struct {
    uint8_t mac[6];
    char ip[46];
    const int *dongles;     /* how many dongles share this process (for heap) */
    uint64_t heap_total;    /* simulated heap; 0 = 8 MiB (an S3 with PSRAM) */
    uint64_t min_free;      /* kept by the port */
    uint64_t rss_base;      /* process RSS at the first heap query (kept by the port) */
} fleet_sim_sys_t;
extern const fleet_sysinfo_ops_t fleet_sim_sys_ops; /* ctx = fleet_sim_sys_t * */
/* Resident memory of the whole process in bytes (0 if unknown). */
uint64_t fleet_process_rss(void);

#endif /* FLEET_AGENT_RUNTIME_POSIX_H */
