#define _GNU_SOURCE
/*
 * test_vhc_net_batch.c - the simulated dongle's whole data path in one
 * process: USB/IP core + posix net port (epoll loop, read-ahead, gathered
 * replies) + vhc + a loopback device, over real loopback TCP.
 *
 * A client writes many URBs in one send. The port reads them ahead in one
 * recv, so the kernel no longer reports them; the core takes at most 32 PDUs
 * per call and stops reading when its 64 URB slots are in use. Every URB
 * must still be answered, in order, with nothing lost: the port has to
 * dispatch what it holds by itself, and the replies it gathers per loop
 * round have to leave.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "testlib.h"
#include "tvdev.h"
#include "usbip_posix/posix_port.h"

#define NURBS 200
#define PAYLOAD 8

static posix_loop_t *loop;

static void vhc_cb(void *arg, int fd, unsigned ev)
{
    (void)fd;
    (void)ev;
    vhc_process(arg);
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Read exactly n bytes from the non-blocking client, running the loop. */
static int client_read(int fd, uint8_t *p, size_t n)
{
    size_t got = 0;
    for (int rounds = 0; got < n && rounds < 4000; rounds++) {
        ssize_t r = recv(fd, p + got, n - got, MSG_DONTWAIT);
        if (r > 0)
            got += (size_t)r;
        else if (r == 0)
            return -1;
        else
            posix_loop_run_once(loop, 1);
    }
    return got == n ? 0 : -1;
}

static void test_one_write_of_many_urbs_is_answered_whole(void)
{
    vhc_t *v;
    vhc_config_t vc = VHC_CONFIG_ESP32S3();
    TL_EQ_INT(vhc_create(&vc, &v), 0);
    tvdev_t *t = tv_simple(NULL);
    t->loopback = false;
    char err[128];
    TL_EQ_INT(vhc_plug(v, "1-1", &t->dev, err, sizeof err), 0);
    TL_EQ_INT(posix_loop_create(&loop), 0);
    posix_net_t *net;
    TL_EQ_INT(posix_net_listen(loop, "127.0.0.1:0", &net, err, sizeof err), 0);
    posix_log_t lc = {.max_level = USBIP_LOG_WARN};
    usbip_server_ports_t ports = {.usb = vhc_uhp_ops(), .usb_ctx = v, .net = posix_net_ops(), .net_ctx = net,
                                  .clock = posix_clock(), .log = posix_log(&lc)};
    usbip_server_config_t cfg = USBIP_SERVER_DEFAULT_CONFIG();
    usbip_server_t *srv;
    TL_EQ_INT(usbip_server_create(&cfg, &ports, &srv), USBIP_OK);
    posix_net_attach(net, srv);
    TL_EQ_INT(posix_loop_add(loop, vhc_fd(v), true, false, vhc_cb, v), 0);
    for (int i = 0; i < 200 && usbip_server_list_devices(srv, NULL, 0) < 1; i++)
        posix_loop_run_once(loop, 1);
    TL_EQ_INT(usbip_server_list_devices(srv, NULL, 0), 1);

    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)posix_net_bound_port(net))};
    a.sin_addr.s_addr = htonl(0x7f000001);
    TL_EQ_INT(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    uint8_t imp[40] = {0x01, 0x11, 0x80, 0x03};
    memcpy(imp + 8, "1-1", 3);
    TL_EQ_INT((int)send(fd, imp, sizeof imp, 0), 40);
    uint8_t rep[8 + 312];
    TL_EQ_INT(client_read(fd, rep, sizeof rep), 0);
    TL_EQ_INT((int)get32(rep + 4), 0);
    uint32_t devid = get32(rep + 8 + 0x120) << 16 | get32(rep + 8 + 0x124);

    /* NURBS bulk OUT URBs, each with its own payload, in one write */
    static uint8_t out[NURBS * (48 + PAYLOAD)];
    for (int i = 0; i < NURBS; i++) {
        uint8_t *h = out + (size_t)i * (48 + PAYLOAD);
        memset(h, 0, 48);
        put32(h, 1);
        put32(h + 4, (uint32_t)(i + 1));
        put32(h + 8, devid);
        put32(h + 16, 1);
        put32(h + 24, PAYLOAD);
        memset(h + 48, (uint8_t)i, PAYLOAD);
    }
    size_t sent = 0;
    for (int rounds = 0; sent < sizeof out && rounds < 1000; rounds++) {
        ssize_t w = send(fd, out + sent, sizeof out - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (w > 0)
            sent += (size_t)w;
        else
            posix_loop_run_once(loop, 1);
    }
    TL_EQ_INT((int)sent, (int)sizeof out);

    int ok = 0;
    for (int i = 0; i < NURBS; i++) {
        uint8_t h[48];
        if (client_read(fd, h, sizeof h) != 0)
            break;
        /* one endpoint: completions in submission order, each accepted whole */
        if (get32(h) == 3 && get32(h + 4) == (uint32_t)(i + 1) && get32(h + 20) == 0 &&
            get32(h + 24) == PAYLOAD)
            ok++;
    }
    TL_EQ_INT(ok, NURBS);
    /* the device saw every payload once, in order */
    TL_EQ_INT(t->out_count, NURBS);
    int in_order = 0;
    for (int i = 0; i < NURBS && i < t->out_count; i++)
        if (t->out_lens[i] == PAYLOAD && t->out_data[i * PAYLOAD] == (uint8_t)i)
            in_order++;
    TL_EQ_INT(in_order, NURBS);

    close(fd);
    for (int i = 0; i < 20; i++)
        posix_loop_run_once(loop, 1);
    usbip_server_destroy(srv);
    posix_net_destroy(net);
    posix_loop_del(loop, vhc_fd(v));
    vhc_destroy(v);
    posix_loop_destroy(loop);
}

int main(void)
{
    TL_RUN(test_one_write_of_many_urbs_is_answered_whole);
    return TL_RESULT();
}
