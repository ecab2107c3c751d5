/*
 * dongle.h - one simulated dongle: a virtual host controller with its
 * devices, the USB/IP server and its TCP listener, and (with --mqtt) the
 * fleet agent, all on one epoll loop. No globals: one process hosts one
 * dongle, or many (--dongles N), each with its own address, port 3240,
 * devices, core and agent. The only other thread is an OTA download (one
 * per downloading dongle), serialised with the loop by the big lock.
 */
#ifndef FLEET_DONGLE_DONGLE_H
#define FLEET_DONGLE_DONGLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agent_posix.h"
#include "fleet_agent/agent.h"
#include "fleet_agent/boot.h"
#include "usbip/usbip_server.h"
#include "usbip_posix/posix_port.h"
#include "vhc/vhc.h"

#define DONGLE_MAX_PLUGGED 64
#define DONGLE_SPEC_MAX 256
#define DONGLE_FW_VERSION "0.3.1" /* factory image of the simulated dongle */

typedef struct {
    bool used;
    char busid[32];
    char model[16];
    char serial[64];
    char spec[DONGLE_SPEC_MAX];   /* as plugged, for a port-power "on" or a reboot */
    bool have_desc;
    fleet_agent_dev_desc_t desc;  /* descriptor summary for the agent's state */
    uint16_t vid, pid;            /* listed while the dongle is powered off */
    int speed;
} dongle_plugged_t;

/* What every dongle of the process is started with. */
typedef struct {
    const char *chip;             /* "s3" | "p4" */
    bool enforce, bus_timing;
    long long budget;
    int keepalive_s;
    const char *log_level;
    /* agent (NULL mqtt_url: no agent) */
    const char *mqtt_url;
    const char *state_dir;        /* each dongle gets <state_dir>/<id>/ (config, OTA slots) */
    uint32_t telemetry_s;
    uint16_t mqtt_keepalive_s;    /* the broker publishes the Last Will after 1.5x this of silence */
    int64_t ota_rate;             /* OTA download cap in bytes/s (the simulated Wi-Fi); 0 = none */
    const char *ota_pubkey_file;  /* enables OTA (needs state_dir) */
    uint8_t *ota_pubkey;
    size_t ota_pubkey_len;
    struct fleet_mdns *mdns;      /* the process's responder, or NULL */
    int ndongles;
    /* The process's one lock: the main loop holds it except while it waits
     * for events, an OTA thread while it runs agent code. */
    fleet_lock_hooks_t big_lock;
} dongle_opts_t;

typedef struct dongle_agent dongle_agent_t;

typedef struct dongle {
    char id[32];
    char ip[46];                  /* listen address (also the dongle's reported IP) */
    char listen[64];              /* "IP:PORT" */
    uint8_t mac[6];
    const dongle_opts_t *opts;
    posix_loop_t *loop;           /* shared by all dongles of the process */
    vhc_t *vhc;
    posix_net_t *net;
    usbip_server_t *srv;
    posix_log_t log_cfg;
    dongle_plugged_t *plugged;    /* plugged_cap slots: 64 alone, fewer per dongle in multi mode */
    int plugged_cap;
    int port;                     /* bound USB/IP port; kept across boots */
    dongle_agent_t *agent;        /* NULL without --mqtt */
    struct fleet_files_store *store; /* OTA slots, open while powered (with --ota-pubkey) */
    fleet_boot_t boot;            /* the simulated bootloader's last choice */
    bool no_listener;             /* the booted image's fault directive: no USB/IP listener */
    struct dongle **group;        /* every dongle of the process (the control channel's @id) */
    int ngroup;
    bool quit;
    bool off;                     /* powered off ("crash"): nothing but the plugged devices exists */
    bool start_requested;         /* "start": the main loop powers it on at its next tick */
    bool link_down;               /* "net off": no socket of this dongle is served */
} dongle_t;

/* instance.c: bring one dongle up (vhc, listener, core, devices) and down. */
int dongle_start(dongle_t *d, const char *const *specs, int nspecs, char *err, size_t err_len);
void dongle_stop(dongle_t *d);
/* A reset: everything goes and comes back, with the devices plugged now. */
int dongle_restart(dongle_t *d, char *err, size_t err_len);
/* Power cut ("crash"): agent, core, listener and sessions go at once, no
 * goodbye anywhere; the plugged devices are remembered for "start". */
void dongle_crash(dongle_t *d);
/* Power on after a crash: a boot with boot_reason; on failure the dongle
 * stays off. */
int dongle_power_on(dongle_t *d, const char *boot_reason, char *err, size_t err_len);

/* Plug a device from a spec ("msc:size=8M,port=1-2"). Writes the busid. */
int dongle_plug(dongle_t *d, const char *spec, char *busid, size_t busid_len, char *err, size_t err_len);
int dongle_unplug(dongle_t *d, const char *busid, char *err, size_t err_len);

/* Control channel: one command line in, one reply line out (no newline).
 * "@<id> <command>" addresses one dongle of a multi-dongle process. */
void dongle_command(dongle_t *d, const char *line, char *reply, size_t reply_len);

/* Control channel transport: a Unix stream socket at path, or stdin/stdout
 * with path "-". */
typedef struct control control_t;
int control_open(dongle_t *d, const char *path, control_t **out, char *err, size_t err_len);
void control_close(control_t *c);

/* agent_glue.c: the simulated bootloader (with --ota-pubkey): open the OTA
 * slots, pick the one to start and read its image's fault directive into
 * d->no_listener. dongle_start calls it, dongle_stop closes the slots. */
int dongle_boot(dongle_t *d, char *err, size_t err_len);
void dongle_unboot(dongle_t *d);
/* Cut or restore the dongle's network: USB/IP listener and sessions, MQTT, mDNS. */
void dongle_set_link(dongle_t *d, bool up);

/* agent_glue.c: the fleet agent of one dongle. */
int dongle_agent_start(dongle_t *d, const char *boot_reason, char *err, size_t err_len);
void dongle_agent_stop(dongle_t *d, const char *reason);
/* Power cut: the agent vanishes without a word (the broker's Last Will and
 * no mDNS goodbye tell the world). */
void dongle_agent_power_cut(dongle_t *d);
/* Every ~100 ms. Returns true when the dongle asked for a reboot. */
bool dongle_agent_tick(dongle_t *d, char *reboot_reason, size_t len);
void dongle_agent_second(dongle_t *d); /* MQTT keepalive */
void dongle_agent_devices_changed(dongle_t *d);
/* The USB/IP core's observer (attach, detach, refused import); arg = the dongle_t. */
void dongle_agent_usbip_event(void *arg, const usbip_event_t *ev);
size_t dongle_agent_footprint(const dongle_t *d);
/* The process's mDNS responder on the loop (one for all dongles). */
int dongle_mdns_start(posix_loop_t *loop, struct fleet_mdns **out, char *err, size_t err_len);
void dongle_mdns_stop(posix_loop_t *loop, struct fleet_mdns *m);
void dongle_mdns_tick(struct fleet_mdns *m, uint64_t now_ms);

#endif /* FLEET_DONGLE_DONGLE_H */
