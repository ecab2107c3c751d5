#define _GNU_SOURCE
/*
 * test_posix_tcp.c - the core on the posix net port over real loopback TCP:
 * a slow reader (tiny receive buffer) forces partial gather sends and the
 * EPOLLOUT path; replies must arrive whole, in order, byte-exact. A cut
 * link (the simulated dongle's "net off") holds everything until restored.
 * The USB side is the scripted fake host.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fakes.h"
#include "testlib.h"
#include "usbip_posix/posix_port.h"

static fake_usb_t usb;
static posix_loop_t *loop;
static posix_net_t *net;
static usbip_server_t *srv;

static void spin(int rounds)
{
    for (int i = 0; i < rounds; i++) {
        fake_usb_process(&usb);
        posix_loop_run_once(loop, 1);
    }
}

/* Read exactly n bytes from the non-blocking client, running the loop. */
static int client_read(int fd, uint8_t *p, size_t n)
{
    size_t got = 0;
    for (int tries = 0; got < n && tries < 20000; tries++) {
        ssize_t r = recv(fd, p + got, n - got, 0);
        if (r > 0)
            got += (size_t)r;
        else if (r == 0)
            return -1;
        else
            spin(1);
    }
    return got == n ? 0 : -1;
}

static void client_write(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n > 0) {
        ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
        if (w > 0) {
            b += w;
            n -= (size_t)w;
        } else {
            spin(1);
        }
    }
}

/* The core with one fake device (1-1, pid 0x0042) on a listener at 127.0.0.1:any. */
static void server_up(void)
{
    fake_usb_init(&usb);
    fake_usb_add_test_device(&usb, "1-1", 0x1209, 0x0042);
    TL_EQ_INT(posix_loop_create(&loop), 0);
    char err[128];
    TL_EQ_INT(posix_net_listen(loop, "127.0.0.1:0", &net, err, sizeof(err)), 0);
    static posix_log_t lc = {.max_level = USBIP_LOG_WARN}; /* the server keeps a pointer */
    usbip_server_ports_t ports = {.usb = fake_usb_ops(), .usb_ctx = &usb, .net = posix_net_ops(), .net_ctx = net,
                                  .clock = posix_clock(), .log = posix_log(&lc)};
    usbip_server_config_t cfg = USBIP_SERVER_DEFAULT_CONFIG();
    TL_EQ_INT(usbip_server_create(&cfg, &ports, &srv), USBIP_OK);
    posix_net_attach(net, srv);
    spin(3);
}

static void server_down(void)
{
    usbip_server_destroy(srv);
    posix_net_destroy(net);
    posix_loop_destroy(loop);
    fake_usb_process(&usb);
    fake_usb_fini(&usb);
    TL_EQ_INT(usb.xfers_alive, 0);
}

/* A non-blocking client connected to the listener (rcvbuf 0: the default). */
static int client_connect(int rcvbuf)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (rcvbuf)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)posix_net_bound_port(net))};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    TL_EQ_INT(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    TL_EQ_INT(fcntl(fd, F_SETFL, O_NONBLOCK), 0);
    return fd;
}

/* OP_REQ_IMPORT 1-1; returns the devid of the session. */
static uint32_t import_1_1(int fd)
{
    uint8_t req[40] = {0x01, 0x11, 0x80, 0x03, 0, 0, 0, 0};
    strcpy((char *)req + 8, "1-1");
    client_write(fd, req, sizeof(req));
    uint8_t rep[320];
    TL_EQ_INT(client_read(fd, rep, 320), 0);
    TL_EQ_INT(usbip_get_be32(rep + 4), 0);
    TL_EQ_INT(usbip_get_be16(rep + 8 + 0x12E), 0x0042);
    return (usbip_get_be32(rep + 8 + 0x120) << 16) | usbip_get_be32(rep + 8 + 0x124);
}

static void submit_in(int fd, uint32_t devid, uint32_t seqnum, uint32_t len)
{
    usbip_urb_hdr_t h = {.command = USBIP_CMD_SUBMIT, .seqnum = seqnum, .devid = devid, .direction = 1, .ep = 2};
    h.u.submit.transfer_buffer_length = len;
    uint8_t b[48];
    usbip_pack_urb_hdr(b, &h);
    client_write(fd, b, 48);
}

static void test_slow_reader_gets_every_byte(void)
{
    server_up();
    int fd = client_connect(4096);
    uint32_t devid = import_1_1(fd);

    fake_usb_auto(&usb, 0, 0x82);
    enum { N = 8, LEN = 3 * 8128 };
    for (uint32_t i = 0; i < N; i++)
        submit_in(fd, devid, 100 + i, LEN);
    spin(200); /* the client reads nothing meanwhile: the socket fills up */
    TL_CHECK(usbip_server_session_count(srv) == 1);
    static uint8_t data[LEN];
    for (uint32_t i = 0; i < N; i++) {
        uint8_t b[48];
        if (client_read(fd, b, 48) != 0) {
            TL_CHECK(!"reply header missing");
            break;
        }
        usbip_urb_hdr_t h;
        TL_EQ_INT(usbip_unpack_urb_hdr(b, 48, &h), USBIP_PROTO_OK);
        TL_EQ_INT(h.command, USBIP_RET_SUBMIT);
        TL_EQ_INT(h.seqnum, 100 + i);
        TL_EQ_INT(h.u.ret_submit.actual_length, LEN);
        TL_EQ_INT(client_read(fd, data, LEN), 0);
        /* the fake fills each transfer with k & 0xff from its start */
        TL_EQ_INT(data[8128 + 300], (uint8_t)300);
        TL_EQ_INT(data[LEN - 1], (uint8_t)(8128 - 1));
    }
    usbip_buffer_stats_t bs;
    usbip_server_buffer_stats(srv, &bs);
    TL_EQ_INT(bs.used, 0);
    TL_EQ_INT(usbip_server_copies(srv), 0);

    /* the client goes away: the session is freed */
    close(fd);
    spin(20);
    TL_EQ_INT(usbip_server_session_count(srv), 0);
    TL_EQ_INT(usb.violations, 0);
    server_down();
}

static bool nothing_to_read(int fd)
{
    uint8_t b[8];
    return recv(fd, b, sizeof(b), MSG_PEEK) < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

/* A simulated network cut: the USB side keeps completing, but no socket is
 * accepted, read or written until the link is back; then everything that
 * waited is served, in order. */
static void test_link_down_serves_nothing_until_up(void)
{
    server_up();
    int a = client_connect(0);
    uint32_t devid = import_1_1(a);
    fake_usb_auto(&usb, 0, 0x82);
    TL_CHECK(posix_net_link_up(net));
    posix_net_set_link(net, false);
    TL_CHECK(!posix_net_link_up(net));

    submit_in(a, devid, 7, 64); /* a small reply: it would be gathered */
    submit_in(a, devid, 8, 8192); /* a large one: it would go straight out */
    int b = client_connect(0); /* the kernel completes the handshake... */
    uint8_t devlist[8] = {0x01, 0x11, 0x80, 0x05, 0, 0, 0, 0};
    client_write(b, devlist, sizeof(devlist));
    spin(100);
    TL_CHECK(nothing_to_read(a)); /* ...but nobody answers */
    TL_CHECK(nothing_to_read(b));
    TL_EQ_INT(usbip_server_session_count(srv), 1);

    posix_net_set_link(net, true);
    uint8_t h[48];
    usbip_urb_hdr_t u;
    static uint8_t data[8192];
    TL_EQ_INT(client_read(a, h, 48), 0);
    TL_EQ_INT(usbip_unpack_urb_hdr(h, 48, &u), USBIP_PROTO_OK);
    TL_EQ_INT(u.seqnum, 7);
    TL_EQ_INT(client_read(a, data, 64), 0);
    TL_EQ_INT(client_read(a, h, 48), 0);
    TL_EQ_INT(usbip_unpack_urb_hdr(h, 48, &u), USBIP_PROTO_OK);
    TL_EQ_INT(u.seqnum, 8);
    TL_EQ_INT(client_read(a, data, 8192), 0);
    TL_EQ_INT(data[300], (uint8_t)300); /* the fake's pattern: the bytes are the device's */
    uint8_t rep[12];
    TL_EQ_INT(client_read(b, rep, sizeof(rep)), 0);
    TL_EQ_INT(usbip_get_be16(rep + 2), 0x0005); /* OP_REP_DEVLIST */
    TL_EQ_INT(usbip_get_be32(rep + 8), 1);
    close(a);
    close(b);
    spin(20);
    TL_EQ_INT(usb.violations, 0);
    server_down();
}

static void test_net_without_listener(void)
{
    posix_loop_t *l;
    posix_net_t *n;
    char err[128];
    TL_EQ_INT(posix_loop_create(&l), 0);
    TL_EQ_INT(posix_net_create(l, &n, err, sizeof(err)), 0);
    TL_CHECK(!posix_net_listening(n));
    TL_EQ_INT(posix_net_bound_port(n), 0);
    posix_net_set_link(n, false);
    posix_net_set_link(n, true);
    posix_net_destroy(n);
    TL_EQ_INT(posix_net_listen(l, "127.0.0.1:0", &n, err, sizeof(err)), 0);
    TL_CHECK(posix_net_listening(n));
    posix_net_destroy(n);
    posix_loop_destroy(l);
}

static void test_listen_errors(void)
{
    posix_loop_t *l;
    posix_net_t *n;
    char err[128];
    TL_EQ_INT(posix_loop_create(&l), 0);
    TL_EQ_INT(posix_net_listen(l, "127.0.0.1", &n, err, sizeof(err)), -1);
    TL_CHECK(strstr(err, "HOST:PORT") != NULL);
    TL_EQ_INT(posix_net_listen(l, "127.0.0.1:99999", &n, err, sizeof(err)), -1);
    TL_CHECK(strstr(err, "bad port") != NULL);
    TL_EQ_INT(posix_net_listen(l, "localhost:0", &n, err, sizeof(err)), -1);
    TL_CHECK(strstr(err, "numeric") != NULL);
    posix_loop_destroy(l);
}

int main(void)
{
    TL_RUN(test_slow_reader_gets_every_byte);
    TL_RUN(test_link_down_serves_nothing_until_up);
    TL_RUN(test_net_without_listener);
    TL_RUN(test_listen_errors);
    return TL_RESULT();
}
