/*
 * fuzz_usbip_stream.c - arbitrary bytes as a USB/IP client stream through
 * the real server (management and URB phase) on the scripted fake ports.
 *
 * Input: [mode][chunk][stream...]
 *   mode bit0: import busid 1-1 first (the stream starts in the URB phase,
 *              devid 0x00010002), bit1: enforce grants (nothing granted),
 *              bit2: unplug the device at the end, bit3: the socket refuses
 *              sends until the end (replies pile up), bit4: device endpoints
 *              never answer (URBs stay in the host).
 *   chunk:     the stream is delivered in pieces of 1 + chunk % 97 bytes.
 * The server must never crash, leak, break a host rule or lose a block.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fakes.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void drain(world_t *w, int s)
{
    w->net.s[s].s2c_len = w->net.s[s].s2c_pos = 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    uint8_t mode = data[0];
    size_t chunk = 1 + data[1] % 97;
    data += 2;
    size -= 2;

    static world_t w; /* large: keep it off the stack */
    usbip_server_config_t cfg = USBIP_SERVER_DEFAULT_CONFIG();
    cfg.buffer_budget = 8 * 8192; /* small: exercises back-pressure */
    cfg.max_urbs_per_session = 16;
    cfg.enforce_grants = (mode & 2) != 0;
    world_init(&w, &cfg);
    fake_usb_add_test_device(&w.usb, "1-1", 0x1209, 0x0001);
    if (!(mode & 16)) {
        fake_usb_auto(&w.usb, 0, 0x01);
        fake_usb_auto(&w.usb, 0, 0x82);
        fake_usb_auto(&w.usb, 0, 0x83);
        fake_usb_auto(&w.usb, 0, 0x84);
    } else {
        w.usb.dev[0].ctrl_hold = true;
    }
    world_pump(&w);
    int s = world_connect(&w, "127.0.0.1");
    if (mode & 1)
        cli_import(&w, s, "1-1");
    drain(&w, s);
    w.net.s[s].send_blocked = (mode & 8) != 0;
    for (size_t off = 0; off < size; off += chunk) {
        size_t n = size - off < chunk ? size - off : chunk;
        fake_net_write(&w.net, s, data + off, n);
        world_pump(&w);
        drain(&w, s);
        if (!w.net.s[s].open)
            break;
    }
    w.net.s[s].send_blocked = false;
    w.usb.dev[0].ctrl_hold = false;
    if (mode & 4)
        fake_usb_unplug(&w.usb, 0);
    w.now_us += 10ull * 1000000ull; /* watchdog and timeouts */
    usbip_server_tick(w.srv);
    world_pump(&w);
    drain(&w, s);
    w.net.s[s].peer_closed = true;
    world_pump(&w);

    usbip_buffer_stats_t b;
    usbip_server_buffer_stats(w.srv, &b);
    if (b.used != 0 || w.usb.violations != 0 || w.usb.cb_in_op || usbip_server_copies(w.srv) != 0 ||
        usbip_server_session_count(w.srv) != 0) {
        fprintf(stderr, "invariant broken: used=%zu violations=%d cb_in_op=%d copies=%llu sessions=%d\n", b.used,
                w.usb.violations, (int)w.usb.cb_in_op, (unsigned long long)usbip_server_copies(w.srv),
                usbip_server_session_count(w.srv));
        abort();
    }
    world_fini(&w);
    if (w.usb.xfers_alive != 0) {
        fprintf(stderr, "transfer buffers leaked: %d\n", w.usb.xfers_alive);
        abort();
    }
    return 0;
}
