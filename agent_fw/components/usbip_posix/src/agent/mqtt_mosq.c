/*
 * mqtt_mosq.c - the agent's MQTT port on libmosquitto, driven by the owner's
 * loop (mosquitto_loop_read/write/misc), never by libmosquitto's thread.
 *
 * One mosquitto handle per connection attempt: after a failure the handle is
 * destroyed and the next attempt starts clean, which is simpler to get right
 * than libmosquitto's reconnect paths without its own loop. Upcalls that end
 * a session, and incoming messages, are delivered after libmosquitto has
 * returned, so the agent may do anything in them: inside a libmosquitto
 * callback a publish is only queued, so the progress events of an OTA
 * download run in the message upcall (an agent without a worker port:
 * minutes on a slow link) would all leave at its end. With the worker port
 * the download's publishes come from its thread, under the owner's big
 * lock, so no two threads are ever inside libmosquitto at once.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mosquitto.h>

#include "agent_runtime_posix.h"
#include "fleet_agent/err.h"

typedef struct inbox_msg {
    struct inbox_msg *next;
    char *topic;
    size_t len;
    char payload[]; /* len bytes */
} inbox_msg_t;

struct fleet_mosq {
    fleet_fd_watch_t w;
    char bind_addr[48];
    struct mosquitto *mosq;
    int fd;                 /* watched descriptor, -1 none */
    bool want_write;        /* as last told to the loop */
    bool connected;
    bool dead;              /* session ended inside a libmosquitto call */
    int unacked;            /* QoS 1 publishes without PUBACK yet */
    bool link_down;         /* simulated network cut: the socket is left alone */
    char why[96];
    inbox_msg_t *inbox, **inbox_tail; /* received, not yet handed to the agent */
    const fleet_mqtt_upcalls_t *up;
    void *up_arg;
};

static bool g_lib_ready; /* mosquitto_lib_init once per process (not per dongle) */

bool fleet_mqtt_url_split(const char *url, char *host, size_t host_len, int *port, char *reason, size_t rl)
{
    const char *p = NULL;
    if (url && strncmp(url, "mqtt://", 7) == 0)
        p = url + 7;
    else if (url && strncmp(url, "tcp://", 6) == 0)
        p = url + 6;
    if (!p) {
        snprintf(reason, rl, "mqtt url: must start with mqtt:// (TLS is not supported on the simulated dongle)");
        return false;
    }
    const char *colon = strrchr(p, ':');
    size_t hl = colon ? (size_t)(colon - p) : strlen(p);
    if (hl > 0 && p[hl - 1] == '/')
        hl--;
    if (hl == 0 || hl >= host_len) {
        snprintf(reason, rl, "mqtt url: missing or too long host");
        return false;
    }
    memcpy(host, p, hl);
    host[hl] = 0;
    *port = 1883;
    if (colon) {
        char *end = NULL;
        long v = strtol(colon + 1, &end, 10);
        if (end == colon + 1 || (*end && strcmp(end, "/") != 0) || v < 1 || v > 65535) {
            snprintf(reason, rl, "mqtt url: port must be 1..65535");
            return false;
        }
        *port = (int)v;
    }
    return true;
}

static void update_watch(fleet_mosq_t *m)
{
    if (m->link_down)
        return; /* unwatched until the link is back */
    int fd = m->mosq ? mosquitto_socket(m->mosq) : -1;
    bool ww = m->mosq && mosquitto_want_write(m->mosq);
    if (fd != m->fd) {
        if (m->fd >= 0)
            m->w.unwatch(m->w.arg, m->fd);
        m->fd = fd;
        if (fd >= 0)
            m->w.watch(m->w.arg, fd, ww);
        m->want_write = ww;
    } else if (fd >= 0 && ww != m->want_write) {
        m->w.watch(m->w.arg, fd, ww);
        m->want_write = ww;
    }
}

static void inbox_clear(fleet_mosq_t *m)
{
    while (m->inbox) {
        inbox_msg_t *next = m->inbox->next;
        free(m->inbox->topic);
        free(m->inbox);
        m->inbox = next;
    }
    m->inbox_tail = &m->inbox;
}

/* Hand what arrived to the agent, now that libmosquitto has returned. */
static void inbox_deliver(fleet_mosq_t *m)
{
    while (m->inbox) {
        inbox_msg_t *msg = m->inbox;
        m->inbox = msg->next;
        if (!m->inbox)
            m->inbox_tail = &m->inbox;
        if (m->up)
            m->up->on_message(m->up_arg, msg->topic, msg->payload, msg->len);
        free(msg->topic);
        free(msg);
    }
}

static void teardown(fleet_mosq_t *m)
{
    inbox_clear(m);
    if (m->fd >= 0)
        m->w.unwatch(m->w.arg, m->fd);
    m->fd = -1;
    m->want_write = false;
    if (m->mosq)
        mosquitto_destroy(m->mosq);
    m->mosq = NULL;
    m->connected = false;
    m->dead = false;
}

/* The session is over: tell the agent, now that libmosquitto has returned. */
static void finish_dead(fleet_mosq_t *m)
{
    bool was = m->connected;
    char why[sizeof(m->why)];
    snprintf(why, sizeof(why), "%s", m->why[0] ? m->why : "connection lost");
    teardown(m);
    if (!m->up)
        return;
    if (was)
        m->up->on_disconnect(m->up_arg, why);
    else
        m->up->on_connect(m->up_arg, false, why);
}

static void cb_connect(struct mosquitto *mosq, void *obj, int rc)
{
    (void)mosq;
    fleet_mosq_t *m = obj;
    if (rc != 0) {
        snprintf(m->why, sizeof(m->why), "broker refused: %s", mosquitto_connack_string(rc));
        m->dead = true;
        return;
    }
    m->connected = true;
    if (m->up)
        m->up->on_connect(m->up_arg, true, NULL);
}

static void cb_disconnect(struct mosquitto *mosq, void *obj, int rc)
{
    (void)mosq;
    fleet_mosq_t *m = obj;
    snprintf(m->why, sizeof(m->why), "%s", rc == 0 ? "disconnected" : mosquitto_strerror(rc));
    m->dead = true;
}

static void cb_publish(struct mosquitto *mosq, void *obj, int mid)
{
    (void)mosq;
    (void)mid;
    fleet_mosq_t *m = obj;
    if (m->unacked > 0)
        m->unacked--;
}

static void cb_message(struct mosquitto *mosq, void *obj, const struct mosquitto_message *msg)
{
    (void)mosq;
    fleet_mosq_t *m = obj;
    if (!m->up || !msg || !msg->topic || msg->payloadlen < 0)
        return;
    size_t len = (size_t)msg->payloadlen;
    inbox_msg_t *in = malloc(sizeof(*in) + len + 1);
    char *topic = strdup(msg->topic);
    if (!in || !topic) {
        free(in);
        free(topic);
        return; /* QoS 1 without memory: as lost as on the chip */
    }
    in->next = NULL;
    in->topic = topic;
    in->len = len;
    if (len)
        memcpy(in->payload, msg->payload, len);
    in->payload[len] = '\0';
    *m->inbox_tail = in;
    m->inbox_tail = &in->next;
}

static void after_call(fleet_mosq_t *m, int rc)
{
    if (rc != MOSQ_ERR_SUCCESS && !m->dead && m->mosq) {
        snprintf(m->why, sizeof(m->why), "%s",
                 rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc));
        m->dead = true;
    }
    if (m->mosq && !m->dead && mosquitto_socket(m->mosq) < 0) {
        snprintf(m->why, sizeof(m->why), "socket closed");
        m->dead = true;
    }
    if (!m->dead)
        update_watch(m);
    inbox_deliver(m); /* before a session end: they arrived before it */
    if (m->dead)
        finish_dead(m);
}

int fleet_mosq_create(const fleet_fd_watch_t *w, const char *bind_addr, fleet_mosq_t **out)
{
    *out = NULL;
    if (!w || !w->watch || !w->unwatch)
        return FLEET_ERR_INVALID;
    if (!g_lib_ready) {
        mosquitto_lib_init();
        g_lib_ready = true;
    }
    fleet_mosq_t *m = calloc(1, sizeof(*m));
    if (!m)
        return FLEET_ERR_NO_MEM;
    m->w = *w;
    m->fd = -1;
    m->inbox_tail = &m->inbox;
    if (bind_addr)
        snprintf(m->bind_addr, sizeof(m->bind_addr), "%s", bind_addr);
    *out = m;
    return FLEET_OK;
}

void fleet_mosq_on_events(fleet_mosq_t *m, bool readable, bool writable)
{
    if (!m->mosq || m->link_down)
        return;
    int rc = MOSQ_ERR_SUCCESS;
    if (readable)
        rc = mosquitto_loop_read(m->mosq, 16);
    if (rc == MOSQ_ERR_SUCCESS && writable && m->mosq && !m->dead)
        rc = mosquitto_loop_write(m->mosq, 16);
    after_call(m, rc);
}

void fleet_mosq_tick(fleet_mosq_t *m)
{
    /* no PINGREQ and no keepalive timeout of our own while cut: the broker
     * is the one that gives up, and libmosquitto finds the closed socket
     * when the link is back */
    if (!m->mosq || m->link_down)
        return;
    after_call(m, mosquitto_loop_misc(m->mosq));
}

/* ---- ops ---------------------------------------------------------------- */

static void op_set_upcalls(void *ctx, const fleet_mqtt_upcalls_t *up, void *arg)
{
    fleet_mosq_t *m = ctx;
    m->up = up;
    m->up_arg = arg;
}

static int op_connect(void *ctx, const fleet_mqtt_connect_t *c)
{
    fleet_mosq_t *m = ctx;
    teardown(m);
    if (m->link_down)
        return FLEET_ERR_NET; /* no route to the broker */
    char host[128], reason[128];
    int port;
    if (!fleet_mqtt_url_split(c->url, host, sizeof(host), &port, reason, sizeof(reason)))
        return FLEET_ERR_INVALID;
    m->mosq = mosquitto_new(c->client_id, true, m);
    if (!m->mosq)
        return FLEET_ERR_NO_MEM;
    mosquitto_int_option(m->mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311);
    mosquitto_connect_callback_set(m->mosq, cb_connect);
    mosquitto_disconnect_callback_set(m->mosq, cb_disconnect);
    mosquitto_message_callback_set(m->mosq, cb_message);
    mosquitto_publish_callback_set(m->mosq, cb_publish);
    m->unacked = 0;
    if (c->will_topic &&
        mosquitto_will_set(m->mosq, c->will_topic, (int)c->will_len, c->will_payload, c->will_qos, c->will_retain) !=
            MOSQ_ERR_SUCCESS) {
        teardown(m);
        return FLEET_ERR_INVALID;
    }
    if (c->username && c->username[0])
        mosquitto_username_pw_set(m->mosq, c->username, c->password && c->password[0] ? c->password : NULL);
    m->why[0] = 0;
    int rc = mosquitto_connect_bind_async(m->mosq, host, port, c->keepalive_s ? c->keepalive_s : 30,
                                          m->bind_addr[0] ? m->bind_addr : NULL);
    if (rc != MOSQ_ERR_SUCCESS) {
        teardown(m);
        return FLEET_ERR_NET;
    }
    update_watch(m);
    return FLEET_OK;
}

static void op_disconnect(void *ctx)
{
    fleet_mosq_t *m = ctx;
    if (!m->mosq)
        return;
    if (m->connected && !m->dead && !m->link_down) {
        /* Send what is queued (cmd-result, offline status) and collect the
         * PUBACKs before DISCONNECT: libmosquitto closes the socket right
         * after writing DISCONNECT, and closing with unread PUBACKs in the
         * receive queue makes the kernel send RST, which can make the broker
         * drop our last packets and publish the Last Will instead. At most
         * 300 ms; loopback takes microseconds. */
        for (int i = 0; i < 30 && m->mosq && !m->dead; i++) {
            bool ww = mosquitto_want_write(m->mosq);
            if (!ww && m->unacked == 0)
                break;
            struct pollfd pfd = {.fd = mosquitto_socket(m->mosq), .events = (short)(POLLIN | (ww ? POLLOUT : 0))};
            if (pfd.fd < 0 || poll(&pfd, 1, 10) < 0)
                break;
            int rc = MOSQ_ERR_SUCCESS;
            if (pfd.revents & POLLOUT)
                rc = mosquitto_loop_write(m->mosq, 16);
            if (rc == MOSQ_ERR_SUCCESS && (pfd.revents & (POLLIN | POLLHUP | POLLERR)))
                rc = mosquitto_loop_read(m->mosq, 16);
            if (rc != MOSQ_ERR_SUCCESS)
                break;
        }
        if (m->mosq && !m->dead && mosquitto_socket(m->mosq) >= 0) {
            mosquitto_disconnect(m->mosq);
            for (int i = 0; i < 20 && mosquitto_socket(m->mosq) >= 0 && mosquitto_want_write(m->mosq); i++) {
                struct pollfd pfd = {.fd = mosquitto_socket(m->mosq), .events = POLLOUT};
                if (poll(&pfd, 1, 10) < 0 || mosquitto_loop_write(m->mosq, 16) != MOSQ_ERR_SUCCESS)
                    break;
            }
        }
    }
    teardown(m); /* no upcall: the owner asked for this */
}

static int op_publish(void *ctx, const char *topic, const void *payload, size_t len, int qos, bool retain)
{
    fleet_mosq_t *m = ctx;
    if (!m->mosq || !m->connected || m->dead)
        return FLEET_ERR_NET;
    if (m->link_down)
        return FLEET_OK; /* into a send buffer that never drains: the broker drops the session, and these with it */
    int rc = mosquitto_publish(m->mosq, NULL, topic, (int)len, payload, qos, retain);
    if (rc != MOSQ_ERR_SUCCESS)
        return FLEET_ERR_NET;
    if (qos > 0)
        m->unacked++;
    if (!m->dead)
        update_watch(m);
    return FLEET_OK;
}

static int op_subscribe(void *ctx, const char *filter, int qos)
{
    fleet_mosq_t *m = ctx;
    if (!m->mosq || m->dead || m->link_down)
        return FLEET_ERR_NET;
    int rc = mosquitto_subscribe(m->mosq, NULL, filter, qos);
    if (!m->dead)
        update_watch(m);
    return rc == MOSQ_ERR_SUCCESS ? FLEET_OK : FLEET_ERR_NET;
}

static bool op_url_usable(void *ctx, const char *url, char *reason, size_t rl)
{
    (void)ctx;
    char host[128];
    int port;
    return fleet_mqtt_url_split(url, host, sizeof(host), &port, reason, rl);
}

const fleet_mqtt_ops_t fleet_mosq_ops = {op_set_upcalls, op_connect,   op_disconnect,
                                         op_publish,     op_subscribe, op_url_usable};

void fleet_mosq_destroy(fleet_mosq_t *m)
{
    if (!m)
        return;
    op_disconnect(m);
    free(m);
}

void fleet_mosq_set_link(fleet_mosq_t *m, bool up)
{
    if (m->link_down == !up)
        return;
    if (!up && m->fd >= 0) {
        m->w.unwatch(m->w.arg, m->fd);
        m->fd = -1;
        m->want_write = false;
    }
    m->link_down = !up;
    if (up)
        update_watch(m); /* a socket the broker closed meanwhile reads EOF: the normal lost-connection path */
}

void fleet_mosq_power_cut(fleet_mosq_t *m)
{
    /* no DISCONNECT and no upcall: the broker sees the socket go and
     * publishes the Last Will */
    m->up = NULL;
    m->up_arg = NULL;
    teardown(m);
}
