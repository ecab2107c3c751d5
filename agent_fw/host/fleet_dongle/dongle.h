/*
 * dongle.h - one simulated dongle: a virtual host controller with its
 * devices, the USB/IP server and its TCP listener, all on one epoll loop.
 * No globals, so a process could host several (main.c runs one).
 */
#ifndef FLEET_DONGLE_DONGLE_H
#define FLEET_DONGLE_DONGLE_H

#include <stdbool.h>
#include <stddef.h>

#include "usbip/usbip_server.h"
#include "usbip_posix/posix_port.h"
#include "vhc/vhc.h"

#define DONGLE_MAX_PLUGGED 64

typedef struct {
    bool used;
    char busid[32];
    char model[16];
    char serial[64];
} dongle_plugged_t;

typedef struct {
    char id[32];
    posix_loop_t *loop;
    vhc_t *vhc;
    posix_net_t *net;
    usbip_server_t *srv;
    posix_log_t log_cfg;
    dongle_plugged_t plugged[DONGLE_MAX_PLUGGED];
    bool quit;
} dongle_t;

/* Plug a device from a spec ("msc:size=8M,port=1-2"). Writes the busid. */
int dongle_plug(dongle_t *d, const char *spec, char *busid, size_t busid_len, char *err, size_t err_len);
int dongle_unplug(dongle_t *d, const char *busid, char *err, size_t err_len);

/* Control channel: one command line in, one reply line out (no newline). */
void dongle_command(dongle_t *d, const char *line, char *reply, size_t reply_len);

/* Control channel transport: a Unix stream socket at path, or stdin/stdout
 * with path "-". */
typedef struct control control_t;
int control_open(dongle_t *d, const char *path, control_t **out, char *err, size_t err_len);
void control_close(control_t *c);

#endif /* FLEET_DONGLE_DONGLE_H */
