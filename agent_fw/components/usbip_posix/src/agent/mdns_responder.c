/*
 * mdns_responder.c - a small RFC 6762 / RFC 6763 responder for the simulated
 * dongles of one process: _usbip._tcp.local -> PTR <id>._usbip._tcp.local,
 * SRV (port, target <id>.local), TXT (v, id, fw, chip, rev, ndev), A.
 *
 * One socket on 0.0.0.0:5353 shared (SO_REUSEPORT) with any other responder
 * or browser on the machine, joined to 224.0.0.251 on the configured
 * interface. Answers always go to the multicast group, which RFC 6762 5.4
 * allows for QU questions too, because a unicast reply to port 5353 could
 * land in any of the sockets sharing it; only legacy (non-5353) queriers get
 * a unicast reply. Known-answer suppression is not implemented: answering
 * anyway costs bandwidth, not correctness.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "agent_runtime_posix.h"
#include "fleet_agent/err.h"
#include "mdns_wire.h"

#define SVC_TYPE "_usbip._tcp.local"
#define SVC_ENUM "_services._dns-sd._udp.local"
#define TTL_HOST 120u  /* RFC 6762 10: host records */
#define TTL_OTHER 4500u
#define PKT_MAX 1400   /* stays under an Ethernet MTU like a real responder */
#define PER_PACKET 6   /* services whose full record set fits one packet */
#define INSTANCE_MAX 64

typedef struct {
    char id[INSTANCE_MAX];
    char inst[96], host[64];
    struct in_addr ip;
    uint16_t port;
    char txt[256];
    size_t txt_len;
    int announce_left;      /* announcements still to send */
    uint64_t next_announce_ms;
} svc_t;

/* A simulated dongle whose network is cut: it neither answers nor announces,
 * published or not (the agent may publish while cut). */
typedef struct {
    char id[INSTANCE_MAX];
} cut_t;

struct fleet_mdns {
    fleet_fd_watch_t w;
    int fd;
    struct in_addr iface;
    struct sockaddr_in group;
    svc_t *svcs;
    int n, cap;
    cut_t *cuts;
    int ncuts, capcuts;
    uint64_t now_ms;
};

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int fleet_mdns_fd(const fleet_mdns_t *r) { return r->fd; }

int fleet_mdns_create(const fleet_fd_watch_t *w, const char *iface_addr, fleet_mdns_t **out, char *err,
                      size_t err_len)
{
    *out = NULL;
    fleet_mdns_t *r = calloc(1, sizeof(*r));
    if (!r)
        return FLEET_ERR_NO_MEM;
    r->fd = -1;
    if (w)
        r->w = *w;
    if (inet_pton(AF_INET, iface_addr ? iface_addr : "127.0.0.1", &r->iface) != 1) {
        snprintf(err, err_len, "mdns: interface address must be IPv4: %s", iface_addr);
        free(r);
        return FLEET_ERR_INVALID;
    }
    r->group.sin_family = AF_INET;
    r->group.sin_port = htons(5353);
    inet_pton(AF_INET, "224.0.0.251", &r->group.sin_addr);
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    unsigned char ttl = 255, loop = 1;
    struct sockaddr_in any = {.sin_family = AF_INET, .sin_port = htons(5353), .sin_addr.s_addr = htonl(INADDR_ANY)};
    struct ip_mreq mreq = {.imr_multiaddr = r->group.sin_addr, .imr_interface = r->iface};
    const char *step = NULL;
    if (fd < 0)
        step = "socket";
    else if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0)
        step = "SO_REUSEADDR";
    else if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0)
        step = "SO_REUSEPORT";
    else if (bind(fd, (struct sockaddr *)&any, sizeof(any)) != 0)
        step = "bind 0.0.0.0:5353";
    else if (setsockopt(fd, IPPROTO_IP, IP_ADD_MEMBERSHIP, &mreq, sizeof(mreq)) != 0)
        step = "join 224.0.0.251 (is multicast on for the interface? ip link set lo multicast on)";
    else if (setsockopt(fd, IPPROTO_IP, IP_MULTICAST_IF, &r->iface, sizeof(r->iface)) != 0)
        step = "IP_MULTICAST_IF";
    else if (setsockopt(fd, IPPROTO_IP, IP_MULTICAST_TTL, &ttl, sizeof(ttl)) != 0 ||
             setsockopt(fd, IPPROTO_IP, IP_MULTICAST_LOOP, &loop, sizeof(loop)) != 0)
        step = "IP_MULTICAST_TTL/LOOP";
    if (step) {
        snprintf(err, err_len, "mdns: %s: %s", step, strerror(errno));
        if (fd >= 0)
            close(fd);
        free(r);
        return FLEET_ERR_NET;
    }
    r->fd = fd;
    if (r->w.watch)
        r->w.watch(r->w.arg, fd, false);
    *out = r;
    return FLEET_OK;
}

/* ---- records ------------------------------------------------------------ */

static void rr_ptr(mdns_writer_t *w, const char *owner, const char *target, uint32_t ttl)
{
    size_t m = mdns_w_rr_begin(w, owner, MDNS_T_PTR, MDNS_CLASS_IN, ttl);
    mdns_w_name(w, target);
    mdns_w_rr_end(w, m);
}

static void rr_srv(mdns_writer_t *w, const svc_t *s, uint32_t ttl)
{
    size_t m = mdns_w_rr_begin(w, s->inst, MDNS_T_SRV, MDNS_CLASS_IN | MDNS_CACHE_FLUSH, ttl);
    mdns_w_u16(w, 0); /* priority */
    mdns_w_u16(w, 0); /* weight */
    mdns_w_u16(w, s->port);
    mdns_w_name(w, s->host);
    mdns_w_rr_end(w, m);
}

static void rr_txt(mdns_writer_t *w, const svc_t *s, uint32_t ttl)
{
    size_t m = mdns_w_rr_begin(w, s->inst, MDNS_T_TXT, MDNS_CLASS_IN | MDNS_CACHE_FLUSH, ttl);
    mdns_w_bytes(w, s->txt, s->txt_len);
    mdns_w_rr_end(w, m);
}

static void rr_a(mdns_writer_t *w, const svc_t *s, uint32_t ttl)
{
    size_t m = mdns_w_rr_begin(w, s->host, MDNS_T_A, MDNS_CLASS_IN | MDNS_CACHE_FLUSH, ttl);
    mdns_w_bytes(w, &s->ip, 4);
    mdns_w_rr_end(w, m);
}

static void send_pkt(fleet_mdns_t *r, const mdns_writer_t *w, const struct sockaddr_in *to)
{
    if (w->overflow)
        return; /* a bug in the packing, never a truncated answer */
    const struct sockaddr_in *dst = to ? to : &r->group;
    if (sendto(r->fd, w->buf, w->len, 0, (const struct sockaddr *)dst, sizeof(*dst)) < 0 && errno != EAGAIN)
        fprintf(stderr, "WARN mdns: sendto: %s\n", strerror(errno));
}

static bool is_cut(const fleet_mdns_t *r, const char *id)
{
    for (int i = 0; i < r->ncuts; i++)
        if (strcmp(r->cuts[i].id, id) == 0)
            return true;
    return false;
}

/* Unsolicited announcement of one service, or its goodbye (TTL 0). */
static void announce(fleet_mdns_t *r, const svc_t *s, bool goodbye)
{
    if (is_cut(r, s->id))
        return;
    uint8_t buf[PKT_MAX];
    mdns_writer_t w;
    mdns_w_init(&w, buf, sizeof(buf), 0, 0x8400); /* response, authoritative */
    uint32_t host = goodbye ? 0 : TTL_HOST, other = goodbye ? 0 : TTL_OTHER;
    rr_ptr(&w, SVC_TYPE, s->inst, other);
    rr_srv(&w, s, host);
    rr_txt(&w, s, other);
    rr_a(&w, s, host);
    if (!goodbye) /* the enumeration PTR is shared by all services: never say goodbye to it */
        rr_ptr(&w, SVC_ENUM, SVC_TYPE, other);
    mdns_w_counts(&w, 0, goodbye ? 4 : 5, 0, 0);
    send_pkt(r, &w, NULL);
}

static svc_t *find_svc(fleet_mdns_t *r, const char *id)
{
    for (int i = 0; i < r->n; i++)
        if (strcmp(r->svcs[i].id, id) == 0)
            return &r->svcs[i];
    return NULL;
}

static int txt_add(svc_t *s, const char *k, const char *v)
{
    char item[128];
    int n = snprintf(item, sizeof(item), "%s=%s", k, v);
    if (n < 0 || n > 127 || s->txt_len + 1 + (size_t)n > sizeof(s->txt))
        return -1;
    s->txt[s->txt_len++] = (char)n;
    memcpy(s->txt + s->txt_len, item, (size_t)n);
    s->txt_len += (size_t)n;
    return 0;
}

static int op_publish(void *ctx, const fleet_mdns_service_t *in)
{
    fleet_mdns_t *r = ctx;
    struct in_addr ip;
    if (!in->instance || strlen(in->instance) >= INSTANCE_MAX || !in->ip ||
        inet_pton(AF_INET, in->ip, &ip) != 1)
        return FLEET_ERR_INVALID;
    svc_t *s = find_svc(r, in->instance);
    if (!s) {
        if (r->n == r->cap) {
            int cap = r->cap ? r->cap * 2 : 8;
            svc_t *bigger = realloc(r->svcs, (size_t)cap * sizeof(*bigger));
            if (!bigger)
                return FLEET_ERR_NO_MEM;
            r->svcs = bigger;
            r->cap = cap;
        }
        s = &r->svcs[r->n++];
        memset(s, 0, sizeof(*s));
        snprintf(s->id, sizeof(s->id), "%s", in->instance);
        snprintf(s->inst, sizeof(s->inst), "%s." SVC_TYPE, in->instance);
        snprintf(s->host, sizeof(s->host), "%s.local", in->instance);
    }
    s->ip = ip;
    s->port = in->port;
    s->txt_len = 0;
    char rev[16], ndev[16];
    snprintf(rev, sizeof(rev), "%u", in->rev);
    snprintf(ndev, sizeof(ndev), "%u", in->ndev);
    if (txt_add(s, "v", "1") || txt_add(s, "id", in->instance) || txt_add(s, "fw", in->fw ? in->fw : "") ||
        txt_add(s, "chip", in->chip ? in->chip : "") || txt_add(s, "rev", rev) || txt_add(s, "ndev", ndev))
        return FLEET_ERR_INVALID;
    /* RFC 6762 8.3: announce, then again a second later */
    announce(r, s, false);
    s->announce_left = 1;
    s->next_announce_ms = mono_ms() + 1000;
    return FLEET_OK;
}

static void op_withdraw(void *ctx, const char *instance)
{
    fleet_mdns_t *r = ctx;
    svc_t *s = find_svc(r, instance);
    if (!s)
        return;
    announce(r, s, true);
    *s = r->svcs[--r->n];
}

void fleet_mdns_forget(fleet_mdns_t *r, const char *instance)
{
    svc_t *s = find_svc(r, instance);
    if (s)
        *s = r->svcs[--r->n];
}

void fleet_mdns_set_link(fleet_mdns_t *r, const char *instance, bool up)
{
    if (strlen(instance) >= INSTANCE_MAX || is_cut(r, instance) == !up)
        return;
    if (!up) {
        if (r->ncuts == r->capcuts) {
            int cap = r->capcuts ? r->capcuts * 2 : 4;
            cut_t *bigger = realloc(r->cuts, (size_t)cap * sizeof(*bigger));
            if (!bigger)
                return;
            r->cuts = bigger;
            r->capcuts = cap;
        }
        snprintf(r->cuts[r->ncuts++].id, INSTANCE_MAX, "%s", instance);
        return;
    }
    for (int i = 0; i < r->ncuts; i++)
        if (strcmp(r->cuts[i].id, instance) == 0) {
            r->cuts[i] = r->cuts[--r->ncuts];
            break;
        }
    svc_t *s = find_svc(r, instance);
    if (s) {
        /* back on the network: announce again, as on a link change (RFC 6762 8.3) */
        announce(r, s, false);
        s->announce_left = 1;
        s->next_announce_ms = mono_ms() + 1000;
    }
}

const fleet_mdns_ops_t fleet_mdns_ops = {op_publish, op_withdraw};

void fleet_mdns_tick(fleet_mdns_t *r, uint64_t now_ms)
{
    for (int i = 0; i < r->n; i++) {
        svc_t *s = &r->svcs[i];
        if (s->announce_left > 0 && now_ms >= s->next_announce_ms) {
            s->announce_left--;
            announce(r, s, false);
        }
    }
}

/* ---- queries ------------------------------------------------------------ */

enum { WANT_PTR = 1, WANT_SRV = 2, WANT_TXT = 4, WANT_A = 8 };

static bool qt(uint16_t have, uint16_t want) { return have == want || have == MDNS_T_ANY; }

static void answer(fleet_mdns_t *r, const mdns_question_t *qs, int nq, uint16_t id, const struct sockaddr_in *from)
{
    bool legacy = ntohs(from->sin_port) != 5353;
    const struct sockaddr_in *to = legacy ? from : NULL;
    unsigned char *want = calloc((size_t)(r->n ? r->n : 1), 1);
    bool enum_q = false;
    if (!want)
        return;
    for (int q = 0; q < nq; q++) {
        if ((qs[q].qclass & 0x7FFFu) != MDNS_CLASS_IN && (qs[q].qclass & 0x7FFFu) != 255)
            continue;
        if (strcasecmp(qs[q].name, SVC_ENUM) == 0 && qt(qs[q].type, MDNS_T_PTR))
            enum_q = true;
        for (int i = 0; i < r->n; i++) {
            svc_t *s = &r->svcs[i];
            if (is_cut(r, s->id))
                continue;
            if (strcasecmp(qs[q].name, SVC_TYPE) == 0 && qt(qs[q].type, MDNS_T_PTR))
                want[i] |= WANT_PTR;
            if (strcasecmp(qs[q].name, s->inst) == 0) {
                if (qt(qs[q].type, MDNS_T_SRV))
                    want[i] |= WANT_SRV;
                if (qt(qs[q].type, MDNS_T_TXT))
                    want[i] |= WANT_TXT;
            }
            if (strcasecmp(qs[q].name, s->host) == 0 && qt(qs[q].type, MDNS_T_A))
                want[i] |= WANT_A;
        }
    }
    uint8_t buf[PKT_MAX];
    mdns_writer_t w;
    /* legacy unicast replies echo the id (RFC 6762 6.7) and carry TTLs <= 10 s */
    uint32_t cap_ttl = legacy ? 10u : 0xFFFFFFFFu;
    uint32_t th = TTL_HOST < cap_ttl ? TTL_HOST : cap_ttl, to_ = TTL_OTHER < cap_ttl ? TTL_OTHER : cap_ttl;
    if (enum_q && r->n > 0) {
        mdns_w_init(&w, buf, sizeof(buf), legacy ? id : 0, 0x8400);
        rr_ptr(&w, SVC_ENUM, SVC_TYPE, to_);
        mdns_w_counts(&w, 0, 1, 0, 0);
        send_pkt(r, &w, to);
    }
    int i = 0;
    while (i < r->n) {
        mdns_w_init(&w, buf, sizeof(buf), legacy ? id : 0, 0x8400);
        uint16_t an = 0, ar = 0;
        int batch[PER_PACKET], nb = 0;
        for (; i < r->n && nb < PER_PACKET; i++)
            if (want[i])
                batch[nb++] = i;
        if (nb == 0)
            break;
        /* answers first, then the records a resolver will want next */
        for (int b = 0; b < nb; b++) {
            svc_t *s = &r->svcs[batch[b]];
            unsigned m = want[batch[b]];
            if (m & WANT_PTR) { rr_ptr(&w, SVC_TYPE, s->inst, to_); an++; }
            if (m & WANT_SRV) { rr_srv(&w, s, th); an++; }
            if (m & WANT_TXT) { rr_txt(&w, s, to_); an++; }
            if (m & WANT_A) { rr_a(&w, s, th); an++; }
        }
        for (int b = 0; b < nb; b++) {
            svc_t *s = &r->svcs[batch[b]];
            unsigned m = want[batch[b]];
            if (!(m & WANT_SRV)) { rr_srv(&w, s, th); ar++; }
            if (!(m & WANT_TXT)) { rr_txt(&w, s, to_); ar++; }
            if (!(m & WANT_A)) { rr_a(&w, s, th); ar++; }
        }
        mdns_w_counts(&w, 0, an, 0, ar);
        send_pkt(r, &w, to);
    }
    free(want);
}

void fleet_mdns_on_readable(fleet_mdns_t *r)
{
    for (int burst = 0; burst < 64; burst++) {
        uint8_t pkt[9000];
        struct sockaddr_in from;
        socklen_t fl = sizeof(from);
        ssize_t n = recvfrom(r->fd, pkt, sizeof(pkt), 0, (struct sockaddr *)&from, &fl);
        if (n < 0)
            return; /* EAGAIN: drained */
        mdns_question_t qs[16];
        uint16_t id;
        int nq = mdns_parse_query(pkt, (size_t)n, &id, qs, 16);
        if (nq > 0)
            answer(r, qs, nq, id, &from);
    }
}

void fleet_mdns_destroy(fleet_mdns_t *r)
{
    if (!r)
        return;
    while (r->n > 0)
        op_withdraw(r, r->svcs[0].id);
    if (r->fd >= 0) {
        if (r->w.unwatch)
            r->w.unwatch(r->w.arg, r->fd);
        close(r->fd);
    }
    free(r->svcs);
    free(r->cuts);
    free(r);
}
