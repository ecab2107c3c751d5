/*
 * agent_desc.c - the descriptor summary the state and device_added payloads
 * carry, from raw USB descriptors (the esp32 port reads them from
 * usb_host_get_device_descriptor / _get_active_config_descriptor, the posix
 * port from the virtual device). Every length is checked: descriptors come
 * from the device, which may be broken or hostile.
 */
#include <string.h>

#include "fleet_agent/agent.h"
#include "fleet_agent/err.h"

int fleet_agent_desc_parse(const uint8_t *dev, const uint8_t *cfg, size_t cfg_len, fleet_agent_dev_desc_t *out)
{
    memset(out, 0, sizeof(*out));
    if (!dev || dev[0] < 18 || dev[1] != 1)
        return FLEET_ERR_INVALID;
    out->bcd_device = (uint16_t)(dev[12] | dev[13] << 8);
    out->cls = dev[4];
    out->subclass = dev[5];
    out->protocol = dev[6];
    if (!cfg || cfg_len < 9 || cfg[1] != 2)
        return FLEET_OK; /* no configuration: no interfaces */
    size_t total = (size_t)(cfg[2] | cfg[3] << 8);
    if (total > cfg_len)
        total = cfg_len;
    for (size_t off = 0; off + 2 <= total;) {
        uint8_t len = cfg[off], type = cfg[off + 1];
        if (len < 2 || off + len > total)
            break; /* malformed tail: keep what was read */
        if (type == 4 && len >= 9 && cfg[off + 3] == 0 && out->n_ifaces < FLEET_AGENT_MAX_IFACES) {
            out->ifaces[out->n_ifaces].cls = cfg[off + 5];
            out->ifaces[out->n_ifaces].subclass = cfg[off + 6];
            out->ifaces[out->n_ifaces].protocol = cfg[off + 7];
            out->n_ifaces++;
        }
        off += len;
    }
    return FLEET_OK;
}

void fleet_agent_desc_string(const uint8_t *desc, size_t len, char *out, size_t cap)
{
    if (!cap)
        return;
    out[0] = 0;
    if (!desc || len < 2 || desc[0] < 2 || desc[1] != 3)
        return;
    size_t blen = desc[0] < len ? desc[0] : len; /* bLength may lie */
    size_t n = 0, units = (blen - 2) / 2;
    for (size_t i = 0; i < units; i++) {
        unsigned c = (unsigned)(desc[2 + 2 * i] | desc[3 + 2 * i] << 8);
        if (c >= 0xD800 && c <= 0xDFFF)
            c = '?'; /* surrogates: not worth pairing for a product name */
        uint8_t b[3];
        size_t bl;
        if (c < 0x80) {
            if (c < 0x20)
                continue; /* control characters do not belong in a name */
            b[0] = (uint8_t)c;
            bl = 1;
        } else if (c < 0x800) {
            b[0] = (uint8_t)(0xC0 | c >> 6);
            b[1] = (uint8_t)(0x80 | (c & 0x3F));
            bl = 2;
        } else {
            b[0] = (uint8_t)(0xE0 | c >> 12);
            b[1] = (uint8_t)(0x80 | ((c >> 6) & 0x3F));
            b[2] = (uint8_t)(0x80 | (c & 0x3F));
            bl = 3;
        }
        if (n + bl + 1 > cap)
            break;
        memcpy(out + n, b, bl);
        n += bl;
    }
    out[n] = 0;
}
