#define _GNU_SOURCE
/*
 * test_posix_tcp.c - the core on the posix net port over real loopback TCP:
 * a slow reader (tiny receive buffer) forces partial gather sends and the
 * EPOLLOUT path; replies must arrive whole, in order, byte-exact. The USB
 * side is the scripted fake host.
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

static void test_slow_reader_gets_every_byte(void)
{
    fake_usb_init(&usb);
    fake_usb_add_test_device(&usb, "1-1", 0x1209, 0x0042);
    TL_EQ_INT(posix_loop_create(&loop), 0);
    char err[128];
    TL_EQ_INT(posix_net_listen(loop, "127.0.0.1:0", &net, err, sizeof(err)), 0);
    posix_log_t lc = {.max_level = USBIP_LOG_WARN};
    usbip_server_ports_t ports = {.usb = fake_usb_ops(), .usb_ctx = &usb, .net = posix_net_ops(), .net_ctx = net,
                                  .clock = posix_clock(), .log = posix_log(&lc)};
    usbip_server_config_t cfg = USBIP_SERVER_DEFAULT_CONFIG();
    TL_EQ_INT(usbip_server_create(&cfg, &ports, &srv), USBIP_OK);
    posix_net_attach(net, srv);
    spin(3);

    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int small = 4096;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)posix_net_bound_port(net))};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    TL_EQ_INT(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    TL_EQ_INT(fcntl(fd, F_SETFL, O_NONBLOCK), 0);

    uint8_t req[40] = {0x01, 0x11, 0x80, 0x03, 0, 0, 0, 0};
    strcpy((char *)req + 8, "1-1");
    client_write(fd, req, sizeof(req));
    uint8_t rep[320];
    TL_EQ_INT(client_read(fd, rep, 320), 0);
    TL_EQ_INT(usbip_get_be32(rep + 4), 0);
    uint32_t devid = (usbip_get_be32(rep + 8 + 0x120) << 16) | usbip_get_be32(rep + 8 + 0x124);
    TL_EQ_INT(usbip_get_be16(rep + 8 + 0x12E), 0x0042);

    fake_usb_auto(&usb, 0, 0x82);
    enum { N = 8, LEN = 3 * 8128 };
    for (uint32_t i = 0; i < N; i++) {
        usbip_urb_hdr_t h = {.command = USBIP_CMD_SUBMIT, .seqnum = 100 + i, .devid = devid, .direction = 1, .ep = 2};
        h.u.submit.transfer_buffer_length = LEN;
        uint8_t b[48];
        usbip_pack_urb_hdr(b, &h);
        client_write(fd, b, 48);
    }
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

    usbip_server_destroy(srv);
    posix_net_destroy(net);
    posix_loop_destroy(loop);
    fake_usb_process(&usb);
    fake_usb_fini(&usb);
    TL_EQ_INT(usb.xfers_alive, 0);
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
    TL_RUN(test_listen_errors);
    return TL_RESULT();
}
