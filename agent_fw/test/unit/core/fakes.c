/* fakes.c - see fakes.h. */
#include "fakes.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- fake USB host ------------------------------------------------------ */

struct fu_pending {
    fu_pending_t *next;
    uhp_xfer_t *x;
    int dev;
};

typedef struct {
    uhp_xfer_t x;
    uhp_iso_packet_t iso[64];
} fu_xfer_t;

static const uint8_t k_cfg[] = {
    9, 2, 101, 0, 3, 1, 0, 0x80, 50,
    /* intf 0 alt 0 */
    9, 4, 0, 0, 3, 0xff, 0, 0, 0,
    7, 5, 0x01, 2, 64, 0, 0,
    7, 5, 0x82, 2, 64, 0, 0,
    7, 5, 0x83, 3, 8, 0, 10,
    /* intf 0 alt 1 */
    9, 4, 0, 1, 2, 0xff, 0, 0, 0,
    7, 5, 0x01, 2, 64, 0, 0,
    7, 5, 0x82, 2, 64, 0, 0,
    /* intf 1 alt 0 */
    9, 4, 1, 0, 1, 0x0a, 0, 0, 0,
    7, 5, 0x84, 2, 64, 0, 0,
    /* intf 2 alt 0: isochronous IN 0x85 / OUT 0x06, mps 192 */
    9, 4, 2, 0, 2, 0x01, 2, 0, 0,
    7, 5, 0x85, 1, 192, 0, 1,
    7, 5, 0x06, 1, 192, 0, 1,
};

_Static_assert(sizeof(k_cfg) == 101, "wTotalLength");

static int epi(uint8_t ep_addr)
{
    return (ep_addr & 15) | ((ep_addr & 0x80) ? 16 : 0);
}

/* Endpoint of the claimed alt setting: returns mps or 0, intf in *intf. */
static int ep_lookup(const fu_dev_t *d, uint8_t ep_addr, int *intf_out)
{
    const uint8_t *c = d->cfg;
    int intf = -1, alt = -1;
    for (size_t off = 0; off + 2 <= d->cfg_len && c[off] >= 2; off += c[off]) {
        if (c[off + 1] == 4) {
            intf = c[off + 2];
            alt = c[off + 3];
        } else if (c[off + 1] == 5 && intf >= 0 && c[off + 2] == ep_addr && d->claimed_alt[intf] == alt) {
            if (intf_out)
                *intf_out = intf;
            return c[off + 4] | (c[off + 5] << 8);
        }
    }
    return 0;
}

static bool alt_exists(const fu_dev_t *d, int intf, int alt, int *neps)
{
    const uint8_t *c = d->cfg;
    for (size_t off = 0; off + 2 <= d->cfg_len && c[off] >= 2; off += c[off])
        if (c[off + 1] == 4 && c[off + 2] == intf && c[off + 3] == alt) {
            *neps = c[off + 4];
            return true;
        }
    return false;
}

static fake_usb_t *F(void *ctx) { return ctx; }

static int dev_of(fake_usb_t *f, uhp_dev_handle_t h)
{
    intptr_t i = (intptr_t)h - 1;
    if (i < 0 || i >= FU_MAX_DEV || !f->dev[i].present)
        return -1;
    return (int)i;
}

/* A device being removed refuses new transfers, like the real host. */
static bool dev_going(fake_usb_t *f, int i)
{
    return f->dev[i].info.dev_addr == 0xff;
}

static int op_install(void *ctx, const uhp_event_cbs_t *cbs, void *core)
{
    F(ctx)->cbs = cbs;
    F(ctx)->core = core;
    return UHP_OK;
}

static void op_uninstall(void *ctx) { F(ctx)->cbs = NULL; }

static int op_xfer_alloc(void *ctx, size_t size, int niso, uhp_xfer_t **out)
{
    fu_xfer_t *x = calloc(1, sizeof(*x));
    x->x.data = malloc(size);
    x->x.capacity = size;
    x->x.num_iso_packets = niso > 64 ? 64 : niso;
    x->x.iso = x->iso;
    F(ctx)->xfers_alive++;
    *out = &x->x;
    return UHP_OK;
}

static void op_xfer_free(void *ctx, uhp_xfer_t *x)
{
    F(ctx)->xfers_alive--;
    free(x->data);
    free(x);
}

static int op_get_dd(void *ctx, uhp_dev_handle_t h, const uint8_t **d)
{
    int i = dev_of(F(ctx), h);
    if (i < 0)
        return UHP_ERR_GONE;
    *d = F(ctx)->dev[i].desc;
    return UHP_OK;
}

static int op_get_cd(void *ctx, uhp_dev_handle_t h, const uint8_t **d, size_t *len)
{
    int i = dev_of(F(ctx), h);
    if (i < 0)
        return UHP_ERR_GONE;
    *d = F(ctx)->dev[i].cfg;
    *len = F(ctx)->dev[i].cfg_len;
    return UHP_OK;
}

static int count_in_flight_intf(fake_usb_t *f, int dev, int intf)
{
    int n = 0;
    for (fu_pending_t *p = f->pending; p; p = p->next) {
        int pi = -1;
        if (p->dev == dev && p->x->ep_addr != 0 && ep_lookup(&f->dev[dev], p->x->ep_addr, &pi) && pi == intf)
            n++;
    }
    return n;
}

static int op_claim(void *ctx, uhp_dev_handle_t h, uint8_t intf, uint8_t alt)
{
    fake_usb_t *f = F(ctx);
    int i = dev_of(f, h), neps = 0;
    if (i < 0)
        return UHP_ERR_GONE;
    if (intf >= 8 || !alt_exists(&f->dev[i], intf, alt, &neps))
        return UHP_ERR_NOT_FOUND;
    if (f->dev[i].claimed_alt[intf] >= 0)
        return UHP_ERR_INVALID_STATE;
    if (neps > f->channels_free)
        return UHP_ERR_NO_CHANNEL;
    f->channels_free -= neps;
    f->dev[i].claimed_alt[intf] = alt;
    return UHP_OK;
}

static int op_release(void *ctx, uhp_dev_handle_t h, uint8_t intf)
{
    fake_usb_t *f = F(ctx);
    int i = dev_of(f, h), neps = 0;
    if (i < 0)
        return UHP_ERR_GONE;
    if (intf >= 8 || f->dev[i].claimed_alt[intf] < 0)
        return UHP_ERR_NOT_FOUND;
    if (count_in_flight_intf(f, i, intf) > 0) {
        f->violations++;
        return UHP_ERR_NOT_FINISHED;
    }
    alt_exists(&f->dev[i], intf, f->dev[i].claimed_alt[intf], &neps);
    f->channels_free += neps;
    f->dev[i].claimed_alt[intf] = -1;
    return UHP_OK;
}

static bool xfer_busy(fake_usb_t *f, const uhp_xfer_t *x)
{
    for (fu_pending_t *p = f->pending; p; p = p->next)
        if (p->x == x)
            return true;
    for (fu_pending_t *p = f->done; p; p = p->next)
        if (p->x == x)
            return true;
    return false;
}

static void log_xfer(fake_usb_t *f, const uhp_xfer_t *x, bool control)
{
    if (f->nlog >= FU_MAX_LOG)
        return;
    fu_log_t *l = &f->log[f->nlog++];
    l->ep_addr = x->ep_addr;
    l->num_bytes = x->num_bytes;
    l->flags = x->flags;
    l->control = control;
    if (control)
        memcpy(l->setup, x->data, 8);
    bool out = control ? !(x->data[0] & 0x80) : !(x->ep_addr & 0x80);
    if (out && x->num_bytes > 0) {
        l->data = malloc((size_t)x->num_bytes);
        memcpy(l->data, x->data, (size_t)x->num_bytes);
    }
}

static void enqueue(fu_pending_t **list, uhp_xfer_t *x, int dev)
{
    fu_pending_t *p = calloc(1, sizeof(*p));
    p->x = x;
    p->dev = dev;
    fu_pending_t **pp = list;
    while (*pp)
        pp = &(*pp)->next;
    *pp = p;
}

static int op_submit(void *ctx, uhp_xfer_t *x)
{
    fake_usb_t *f = F(ctx);
    int i = dev_of(f, x->dev);
    if (i < 0)
        return UHP_ERR_GONE;
    if (dev_going(f, i))
        return UHP_ERR_GONE;
    int mps = ep_lookup(&f->dev[i], x->ep_addr, NULL);
    if (!x->callback || x->num_bytes < 0 || (size_t)x->num_bytes > x->capacity) {
        f->violations++;
        return UHP_ERR_INVALID_ARG;
    }
    if (!mps) {
        f->violations++;
        return UHP_ERR_NOT_FOUND;
    }
    if (x->iso_count > 0) {
        int sum = 0;
        for (int k = 0; k < x->iso_count; k++) {
            sum += x->iso[k].num_bytes;
            if ((x->ep_addr & 0x80) && x->iso[k].num_bytes % mps != 0) {
                f->violations++;
                return UHP_ERR_INVALID_ARG;
            }
        }
        if (sum != x->num_bytes || x->iso_count > x->num_iso_packets) {
            f->violations++;
            return UHP_ERR_INVALID_ARG;
        }
    } else if ((x->ep_addr & 0x80) && x->num_bytes % mps != 0) {
        f->violations++;
        return UHP_ERR_INVALID_ARG;
    }
    int maxx = 127 * mps < 65535 ? 127 * mps : 65535;
    if (x->num_bytes > maxx) {
        f->violations++;
        return UHP_ERR_TOO_BIG;
    }
    if (xfer_busy(f, x)) {
        f->violations++;
        return UHP_ERR_NOT_FINISHED;
    }
    log_xfer(f, x, false);
    enqueue(&f->pending, x, i);
    return UHP_OK;
}

static int op_submit_control(void *ctx, uhp_xfer_t *x)
{
    fake_usb_t *f = F(ctx);
    int i = dev_of(f, x->dev);
    if (i < 0)
        return UHP_ERR_GONE;
    if (dev_going(f, i))
        return UHP_ERR_GONE;
    int wlen = x->data[6] | (x->data[7] << 8);
    bool in = x->data[0] & 0x80;
    if (!x->callback || x->ep_addr != 0 || (size_t)x->num_bytes > x->capacity ||
        (in ? x->num_bytes < 8 + wlen : x->num_bytes != 8 + wlen) || xfer_busy(f, x)) {
        f->violations++;
        return UHP_ERR_INVALID_ARG;
    }
    log_xfer(f, x, true);
    enqueue(&f->pending, x, i);
    return UHP_OK;
}

static int op_halt(void *ctx, uhp_dev_handle_t h, uint8_t ep)
{
    fake_usb_t *f = F(ctx);
    int i = dev_of(f, h);
    if (i < 0)
        return UHP_ERR_GONE;
    if ((ep & 15) == 0)
        return UHP_ERR_NOT_SUPPORTED;
    if (!ep_lookup(&f->dev[i], ep, NULL))
        return UHP_ERR_NOT_FOUND;
    f->dev[i].halted[epi(ep)] = true;
    return UHP_OK;
}

static int op_flush(void *ctx, uhp_dev_handle_t h, uint8_t ep)
{
    fake_usb_t *f = F(ctx);
    int i = dev_of(f, h);
    if (i < 0)
        return UHP_ERR_GONE;
    if ((ep & 15) == 0)
        return UHP_ERR_NOT_SUPPORTED;
    if (!f->dev[i].halted[epi(ep)]) {
        f->violations++;
        return UHP_ERR_INVALID_STATE;
    }
    fu_pending_t **pp = &f->pending;
    while (*pp) {
        fu_pending_t *p = *pp;
        if (p->dev == i && p->x->ep_addr == ep) {
            *pp = p->next;
            p->next = NULL;
            p->x->status = UHP_STATUS_CANCELED;
            p->x->actual_num_bytes = 0;
            fu_pending_t **dd = &f->done;
            while (*dd)
                dd = &(*dd)->next;
            *dd = p;
        } else {
            pp = &p->next;
        }
    }
    return UHP_OK;
}

static int op_clear(void *ctx, uhp_dev_handle_t h, uint8_t ep)
{
    fake_usb_t *f = F(ctx);
    int i = dev_of(f, h);
    if (i < 0)
        return UHP_ERR_GONE;
    if ((ep & 15) == 0)
        return UHP_ERR_NOT_SUPPORTED;
    if (!f->dev[i].halted[epi(ep)]) {
        f->violations++;
        return UHP_ERR_INVALID_STATE;
    }
    f->dev[i].halted[epi(ep)] = false;
    f->dev[i].toggle_resets[epi(ep)]++;
    return UHP_OK;
}

static size_t op_maxx(void *ctx, uhp_dev_handle_t h, uint16_t mps)
{
    (void)ctx;
    (void)h;
    return 127u * mps < 65535u ? 127u * mps : 65535u;
}

static void gone(fake_usb_t *f, int i)
{
    fu_pending_t **pp = &f->pending;
    while (*pp) {
        fu_pending_t *p = *pp;
        if (p->dev == i) {
            *pp = p->next;
            p->next = NULL;
            p->x->status = UHP_STATUS_NO_DEVICE;
            p->x->actual_num_bytes = p->x->ep_addr == 0 ? 8 : 0;
            fu_pending_t **dd = &f->done;
            while (*dd)
                dd = &(*dd)->next;
            *dd = p;
        } else {
            pp = &p->next;
        }
    }
    f->dev[i].gone_reported = false;
    f->dev[i].announced = true;
    f->dev[i].present = true; /* until dev_gone delivered + dev_close */
    f->dev[i].info.dev_addr = 0xff; /* marker: going */
}

static int op_port_reset(void *ctx, uhp_dev_handle_t h)
{
    fake_usb_t *f = F(ctx);
    int i = dev_of(f, h);
    if (i < 0)
        return UHP_ERR_GONE;
    f->port_resets++;
    gone(f, i);
    return UHP_OK;
}

static int op_dev_close(void *ctx, uhp_dev_handle_t h)
{
    fake_usb_t *f = F(ctx);
    int i = dev_of(f, h);
    if (i < 0)
        return UHP_ERR_GONE;
    for (int k = 0; k < 8; k++)
        if (f->dev[i].claimed_alt[k] >= 0) {
            f->violations++;
            return UHP_ERR_INVALID_STATE;
        }
    f->dev[i].present = false;
    return UHP_OK;
}


static const uhp_ops_t k_ops = {
    .install = op_install,
    .uninstall = op_uninstall,
    .xfer_alloc = op_xfer_alloc,
    .xfer_free = op_xfer_free,
    .get_device_desc = op_get_dd,
    .get_config_desc = op_get_cd,
    .interface_claim = op_claim,
    .interface_release = op_release,
    .submit = op_submit,
    .submit_control = op_submit_control,
    .ep_halt = op_halt,
    .ep_flush = op_flush,
    .ep_clear = op_clear,
    .max_transfer_bytes = op_maxx,
    .port_reset = op_port_reset,
    .dev_close = op_dev_close,
};

const uhp_ops_t *fake_usb_ops(void) { return &k_ops; }

void fake_usb_init(fake_usb_t *f)
{
    memset(f, 0, sizeof(*f));
    f->channels_free = 8;
}

void fake_usb_fini(fake_usb_t *f)
{
    for (fu_pending_t *p = f->pending, *n; p; p = n) {
        n = p->next;
        free(p);
    }
    for (fu_pending_t *p = f->done, *n; p; p = n) {
        n = p->next;
        free(p);
    }
    for (int i = 0; i < f->nlog; i++)
        free(f->log[i].data);
}

int fake_usb_add_test_device(fake_usb_t *f, const char *port_path, uint16_t vid, uint16_t pid)
{
    for (int i = 0; i < FU_MAX_DEV; i++) {
        fu_dev_t *d = &f->dev[i];
        if (d->present)
            continue;
        memset(d, 0, sizeof(*d));
        d->present = true;
        d->ctrl_stall_req = -1;
        for (int k = 0; k < 8; k++)
            d->claimed_alt[k] = -1;
        uint8_t dd[18] = {18, 1, 0x00, 0x02, 0, 0, 0, 64, (uint8_t)vid, (uint8_t)(vid >> 8),
                          (uint8_t)pid, (uint8_t)(pid >> 8), 0x00, 0x01, 0, 0, 0, 1};
        memcpy(d->desc, dd, 18);
        d->cfg = k_cfg;
        d->cfg_len = sizeof(k_cfg);
        d->info.handle = (uhp_dev_handle_t)(intptr_t)(i + 1);
        snprintf(d->info.port_path, sizeof(d->info.port_path), "%s", port_path);
        d->info.speed = UHP_SPEED_FULL;
        d->info.dev_addr = (uint8_t)(i + 2);
        d->info.bMaxPacketSize0 = 64;
        d->info.bConfigurationValue = 1;
        d->announced = false;
        f->channels_free -= 1; /* EP0 */
        return i;
    }
    return -1;
}

void fake_usb_unplug(fake_usb_t *f, int dev)
{
    f->channels_free += 1;
    gone(f, dev);
}

void fake_usb_script(fake_usb_t *f, int dev, uint8_t ep_addr, uhp_status_t st, int len)
{
    fu_dev_t *d = &f->dev[dev];
    int e = epi(ep_addr);
    d->mode[e] = FU_SCRIPT;
    d->script[e][d->script_n[e]++ % FU_MAX_SCRIPT] = (fu_resp_t){.status = st, .len = len, .fill = (uint8_t)d->script_n[e]};
}

void fake_usb_auto(fake_usb_t *f, int dev, uint8_t ep_addr)
{
    f->dev[dev].mode[epi(ep_addr)] = FU_AUTO;
}

int fake_usb_in_flight(const fake_usb_t *f, uint8_t ep_addr)
{
    int n = 0;
    for (fu_pending_t *p = f->pending; p; p = p->next)
        if (p->x->ep_addr == ep_addr)
            n++;
    return n;
}

/* Complete transfers that have an answer. Per endpoint strictly in order. */
static void run_bus(fake_usb_t *f)
{
    bool blocked[FU_MAX_DEV][32] = {{0}};
    fu_pending_t **pp = &f->pending;
    while (*pp) {
        fu_pending_t *p = *pp;
        uhp_xfer_t *x = p->x;
        fu_dev_t *d = &f->dev[p->dev];
        int e = epi(x->ep_addr);
        bool done = false;
        if (blocked[p->dev][e] || (e && d->halted[e])) {
            blocked[p->dev][e] = true;
        } else if (x->ep_addr == 0) {
            if (!d->ctrl_hold) {
                int wlen = x->data[6] | (x->data[7] << 8);
                bool in = x->data[0] & 0x80;
                x->status = UHP_STATUS_COMPLETED;
                x->actual_num_bytes = 8;
                if (d->ctrl_stall_req == x->data[1]) {
                    x->status = UHP_STATUS_STALL;
                } else if (in) {
                    int n = wlen < 18 ? wlen : 18;
                    memcpy(x->data + 8, d->desc, (size_t)n);
                    x->actual_num_bytes = 8 + n;
                } else {
                    x->actual_num_bytes = 8 + wlen;
                }
                done = true;
            }
        } else if (d->mode[e] == FU_AUTO && x->iso_count > 0) {
            /* isochronous: odd packets come back half full */
            x->status = UHP_STATUS_COMPLETED;
            int off = 0, total = 0;
            for (int k = 0; k < x->iso_count; k++) {
                uhp_iso_packet_t *ip = &x->iso[k];
                ip->status = UHP_STATUS_COMPLETED;
                ip->actual_num_bytes = (x->ep_addr & 0x80) && (k & 1) ? ip->num_bytes / 2 : ip->num_bytes;
                if (x->ep_addr & 0x80)
                    for (int b = 0; b < ip->actual_num_bytes; b++)
                        x->data[off + b] = (uint8_t)(k * 16 + b);
                off += ip->num_bytes;
                total += ip->actual_num_bytes;
            }
            x->actual_num_bytes = total;
            done = true;
        } else if (d->mode[e] == FU_AUTO) {
            x->status = UHP_STATUS_COMPLETED;
            x->actual_num_bytes = x->num_bytes;
            if (x->ep_addr & 0x80)
                for (int k = 0; k < x->num_bytes; k++)
                    x->data[k] = (uint8_t)k;
            done = true;
        } else if (d->script_pos[e] < d->script_n[e]) {
            fu_resp_t r = d->script[e][d->script_pos[e]++ % FU_MAX_SCRIPT];
            x->status = r.status;
            int len = r.len < 0 ? x->num_bytes : r.len;
            if (len > x->num_bytes) {
                /* the controller stops at num_bytes: babble */
                len = x->num_bytes;
                x->status = UHP_STATUS_OVERFLOW;
            }
            x->actual_num_bytes = len;
            if (x->ep_addr & 0x80)
                for (int k = 0; k < len; k++)
                    x->data[k] = (uint8_t)(r.fill * 16 + k);
            done = true;
        } else {
            blocked[p->dev][e] = true;
        }
        if (done) {
            *pp = p->next;
            p->next = NULL;
            fu_pending_t **dd = &f->done;
            while (*dd)
                dd = &(*dd)->next;
            *dd = p;
        } else {
            pp = &p->next;
        }
    }
}

void fake_usb_run_bus(fake_usb_t *f)
{
    run_bus(f);
}

int fake_usb_process(fake_usb_t *f)
{
    int n = 0;
    if (!f->cbs)
        return 0;
    for (int i = 0; i < FU_MAX_DEV; i++) {
        fu_dev_t *d = &f->dev[i];
        if (d->present && !d->announced) {
            d->announced = true;
            f->cbs->dev_added(f->core, &d->info);
            n++;
        }
    }
    run_bus(f);
    while (f->done) {
        fu_pending_t *p = f->done;
        f->done = p->next;
        uhp_xfer_t *x = p->x;
        free(p);
        if (f->in_op)
            f->cb_in_op = true;
        x->callback(x);
        n++;
    }
    for (int i = 0; i < FU_MAX_DEV; i++) {
        fu_dev_t *d = &f->dev[i];
        if (d->present && d->info.dev_addr == 0xff && !d->gone_reported) {
            bool busy = false;
            for (fu_pending_t *p = f->pending; p; p = p->next)
                busy |= p->dev == i;
            if (busy)
                continue;
            d->gone_reported = true;
            f->cbs->dev_gone(f->core, d->info.handle);
            for (int k = 0; k < 8; k++)
                if (d->claimed_alt[k] >= 0)
                    f->violations++; /* released before close? */
            n++;
        }
    }
    return n;
}

/* ---- fake net ----------------------------------------------------------- */

static fn_sock_t *S(void *ctx, usbip_sock_t s)
{
    fake_net_t *n = ctx;
    return (s >= 0 && s < FN_MAX_SOCK) ? &n->s[s] : NULL;
}

static long n_recv(void *ctx, usbip_sock_t sock, void *buf, size_t len)
{
    fn_sock_t *s = S(ctx, sock);
    if (!s || !s->open)
        return USBIP_NET_ERROR;
    size_t avail = s->c2s_len - s->c2s_pos;
    if (avail == 0)
        return s->peer_closed ? 0 : USBIP_NET_WOULD_BLOCK;
    size_t n = avail < len ? avail : len;
    memcpy(buf, s->c2s + s->c2s_pos, n);
    s->c2s_pos += n;
    return (long)n;
}

static void grow(uint8_t **p, size_t *cap, size_t need)
{
    if (need <= *cap)
        return;
    size_t c = *cap ? *cap : 4096;
    while (c < need)
        c *= 2;
    *p = realloc(*p, c);
    *cap = c;
}

static long n_sendv(void *ctx, usbip_sock_t sock, const usbip_iovec_t *iov, int n)
{
    fn_sock_t *s = S(ctx, sock);
    if (!s || !s->open)
        return USBIP_NET_ERROR;
    if (s->peer_closed)
        return USBIP_NET_ERROR;
    if (s->send_blocked)
        return USBIP_NET_WOULD_BLOCK;
    s->sendv_calls++;
    size_t limit = s->max_send ? s->max_send : (size_t)-1, sent = 0;
    for (int i = 0; i < n && sent < limit; i++) {
        size_t l = iov[i].len < limit - sent ? iov[i].len : limit - sent;
        grow(&s->s2c, &s->s2c_cap, s->s2c_len + l);
        memcpy(s->s2c + s->s2c_len, iov[i].base, l);
        s->s2c_len += l;
        sent += l;
    }
    return (long)sent;
}

static int n_opts(void *ctx, usbip_sock_t sock, const usbip_sock_opts_t *o)
{
    fn_sock_t *s = S(ctx, sock);
    s->nodelay = o->nodelay;
    s->keepalive = o->keepalive;
    return 0;
}

static void n_interest(void *ctx, usbip_sock_t sock, bool r, bool w)
{
    fn_sock_t *s = S(ctx, sock);
    s->want_read = r;
    s->want_write = w;
}

static int n_peer(void *ctx, usbip_sock_t sock, char *buf, size_t len, uint16_t *port)
{
    snprintf(buf, len, "%s", S(ctx, sock)->peer);
    *port = (uint16_t)(40000 + (int)sock); /* an ephemeral port per connection */
    return 0;
}

static void n_close(void *ctx, usbip_sock_t sock)
{
    fn_sock_t *s = S(ctx, sock);
    s->open = false;
    s->want_read = s->want_write = false;
}

static const usbip_net_ops_t k_net = {
    .recv = n_recv, .sendv = n_sendv, .set_options = n_opts, .set_interest = n_interest,
    .peer_addr = n_peer, .close = n_close,
};

const usbip_net_ops_t *fake_net_ops(void) { return &k_net; }

int fake_net_connect(fake_net_t *n, const char *peer)
{
    for (int i = 0; i < FN_MAX_SOCK; i++) {
        fn_sock_t *s = &n->s[i];
        if (s->open || s->c2s)
            continue;
        memset(s, 0, sizeof(*s));
        s->open = true;
        snprintf(s->peer, sizeof(s->peer), "%s", peer);
        return i;
    }
    return -1;
}

void fake_net_write(fake_net_t *n, int sock, const void *p, size_t len)
{
    fn_sock_t *s = &n->s[sock];
    grow(&s->c2s, &s->c2s_cap, s->c2s_len + len);
    memcpy(s->c2s + s->c2s_len, p, len);
    s->c2s_len += len;
}

size_t fake_net_avail(fake_net_t *n, int sock)
{
    return n->s[sock].s2c_len - n->s[sock].s2c_pos;
}

size_t fake_net_read(fake_net_t *n, int sock, void *p, size_t len)
{
    fn_sock_t *s = &n->s[sock];
    size_t a = s->s2c_len - s->s2c_pos;
    if (len > a)
        len = a;
    memcpy(p, s->s2c + s->s2c_pos, len);
    s->s2c_pos += len;
    return len;
}

void fake_net_fini(fake_net_t *n)
{
    for (int i = 0; i < FN_MAX_SOCK; i++) {
        free(n->s[i].c2s);
        free(n->s[i].s2c);
    }
}

/* ---- world -------------------------------------------------------------- */

static uint64_t w_now(void *ctx) { return ((world_t *)ctx)->now_us; }
static int64_t w_unix(void *ctx) { return ((world_t *)ctx)->unix_now; }

__attribute__((format(printf, 4, 0)))
static void w_log(void *ctx, usbip_log_level_t lvl, const char *tag, const char *fmt, va_list ap)
{
    world_t *w = ctx;
    (void)tag;
    vsnprintf(w->last_log, sizeof(w->last_log), fmt, ap);
    if (lvl <= USBIP_LOG_WARN)
        w->warn_logs++;
    if (getenv("CORE_TEST_LOG"))
        fprintf(stderr, "  [log] %s\n", w->last_log);
}

static void w_event(void *ctx, const usbip_event_t *ev)
{
    world_t *w = ctx;
    if (w->nev < (int)(sizeof(w->ev) / sizeof(w->ev[0]))) {
        w->ev[w->nev].kind = ev->kind;
        snprintf(w->ev[w->nev].busid, sizeof(w->ev[0].busid), "%s", ev->busid);
        snprintf(w->ev[w->nev].peer, sizeof(w->ev[0].peer), "%s", ev->peer);
        w->ev[w->nev].port = ev->peer_port;
        w->ev[w->nev].status = ev->status;
        w->nev++;
    }
    if (w->forward.on_event)
        w->forward.on_event(w->forward.arg, ev);
}

void world_init(world_t *w, const usbip_server_config_t *cfg)
{
    memset(w, 0, sizeof(*w));
    fake_usb_init(&w->usb);
    w->now_us = 1000000;
    w->unix_now = 1700000000;
    usbip_server_ports_t p = {
        .usb = fake_usb_ops(),
        .usb_ctx = &w->usb,
        .net = fake_net_ops(),
        .net_ctx = &w->net,
        .clock = {.now_us = w_now, .unix_time = w_unix, .ctx = w},
        .log = {.vlog = w_log, .ctx = w},
        .observer = {w_event, w},
    };
    if (usbip_server_create(cfg, &p, &w->srv) != USBIP_OK) {
        fprintf(stderr, "usbip_server_create failed\n");
        exit(2);
    }
}

void world_fini(world_t *w)
{
    usbip_server_destroy(w->srv);
    fake_usb_process(&w->usb);
    fake_usb_fini(&w->usb);
    fake_net_fini(&w->net);
}

void world_pump(world_t *w)
{
    for (int round = 0; round < 10000; round++) {
        bool moved = fake_usb_process(&w->usb) > 0;
        for (int i = 0; i < FN_MAX_SOCK; i++) {
            fn_sock_t *s = &w->net.s[i];
            if (!s->open)
                continue;
            if (s->want_read && (s->c2s_pos < s->c2s_len || s->peer_closed)) {
                size_t before = s->c2s_pos;
                bool was_open = s->open;
                usbip_server_on_readable(w->srv, i);
                moved |= s->c2s_pos != before || s->open != was_open;
            }
            if (s->open && s->want_write && !s->send_blocked) {
                size_t before = s->s2c_len;
                usbip_server_on_writable(w->srv, i);
                moved |= s->s2c_len != before;
            }
        }
        if (!moved)
            return;
    }
    fprintf(stderr, "world_pump: no quiescence\n");
}

int world_connect(world_t *w, const char *peer)
{
    int s = fake_net_connect(&w->net, peer);
    usbip_server_on_accept(w->srv, s);
    return s;
}

uint32_t cli_last_devid;

uint32_t cli_import(world_t *w, int sock, const char *busid)
{
    uint8_t req[40] = {0};
    usbip_pack_op_hdr(req, USBIP_OP_REQ_IMPORT, 0);
    usbip_put_be16(req, USBIP_VERSION);
    snprintf((char *)req + 8, 32, "%s", busid);
    fake_net_write(&w->net, sock, req, sizeof(req));
    world_pump(w);
    uint8_t rep[320];
    size_t n = fake_net_read(&w->net, sock, rep, 8);
    if (n != 8)
        return 0xffffffffu;
    uint32_t st = usbip_get_be32(rep + 4);
    if (st == 0) {
        fake_net_read(&w->net, sock, rep + 8, 312);
        usbip_dev_record_t r;
        usbip_unpack_dev_record(rep + 8, 312, &r);
        cli_last_devid = (r.busnum << 16) | r.devnum;
    }
    return st;
}

void cli_submit(world_t *w, int sock, uint32_t seq, uint32_t ep, uint32_t dir, int32_t tbl, uint32_t flags,
                const uint8_t setup[8], const uint8_t *data)
{
    usbip_urb_hdr_t h = {.command = USBIP_CMD_SUBMIT, .seqnum = seq, .devid = cli_last_devid,
                         .direction = dir, .ep = ep};
    h.u.submit.transfer_flags = flags | (dir ? USBIP_URB_DIR_IN : 0);
    h.u.submit.transfer_buffer_length = tbl;
    h.u.submit.raw_number_of_packets = 0;
    if (setup)
        memcpy(h.u.submit.setup, setup, 8);
    uint8_t b[48];
    usbip_pack_urb_hdr(b, &h);
    fake_net_write(&w->net, sock, b, 48);
    if (dir == USBIP_DIR_OUT && tbl > 0 && data)
        fake_net_write(&w->net, sock, data, (size_t)tbl);
}

void cli_unlink(world_t *w, int sock, uint32_t seq, uint32_t target)
{
    usbip_urb_hdr_t h = {.command = USBIP_CMD_UNLINK, .seqnum = seq, .devid = cli_last_devid};
    h.u.unlink.unlink_seqnum = target;
    uint8_t b[48];
    usbip_pack_urb_hdr(b, &h);
    fake_net_write(&w->net, sock, b, 48);
}

bool cli_reply(world_t *w, int sock, reply_t *r, bool in_data)
{
    uint8_t b[48];
    if (fake_net_avail(&w->net, sock) < 48)
        return false;
    fake_net_read(&w->net, sock, b, 48);
    if (usbip_unpack_urb_hdr(b, 48, &r->h) != USBIP_PROTO_OK)
        return false;
    r->data_len = 0;
    if (r->h.command == USBIP_RET_SUBMIT && in_data && r->h.u.ret_submit.actual_length > 0) {
        size_t n = (size_t)r->h.u.ret_submit.actual_length;
        if (n > sizeof(r->data) || fake_net_avail(&w->net, sock) < n)
            return false;
        r->data_len = fake_net_read(&w->net, sock, r->data, n);
    }
    return true;
}
