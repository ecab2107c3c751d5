/*
 * test_hub.c - hub model: descriptors, hub descriptor, port requests.
 */
#include <string.h>

#include "test_host.h"
#include "testlib.h"

static void test_hub(void)
{
    vdev_t *d = th_create("hub:ports=7");
    TL_CHECK(d->is_hub);
    TL_EQ_INT(d->hub_ports, 7);
    TL_EQ_INT(d->device_desc[4], 0x09);
    TL_EQ_INT(d->device_desc[6], 0x00);
    th_config_t c;
    TL_CHECK(th_check_config(d->config_desc, VDEV_SPEED_FULL, 2, &c) == NULL);
    TL_EQ_MEM(c.intf_class[0], ((uint8_t[]){0x09, 0x00, 0x00}), 3);
    TL_EQ_INT(c.num_endpoints, 1);
    TL_EQ_INT(c.ep[0].address, 0x81);
    TL_EQ_INT(c.ep[0].attributes, 3);
    TL_EQ_INT(c.ep[0].mps, 1);
    uint8_t b[16];
    TL_EQ_INT(th_control(d, 0xa0, 0x06, 0x2900, 0, 16, b), 9);
    TL_EQ_INT(b[0], 9);
    TL_EQ_INT(b[1], 0x29);
    TL_EQ_INT(b[2], 7);
    TL_EQ_INT(th_control(d, 0xa0, 0x00, 0, 0, 4, b), 4);
    /* port power on port 3, read back */
    TL_EQ_INT(th_control(d, 0x23, 0x03, 8, 3, 0, NULL), 0);
    TL_EQ_INT(th_control(d, 0xa3, 0x00, 0, 3, 4, b), 4);
    TL_EQ_INT(b[1] & 0x01, 0x01);
    TL_EQ_INT(th_control(d, 0xa3, 0x00, 0, 2, 4, b), 4);
    TL_EQ_INT(b[1] & 0x01, 0x00);
    TL_EQ_INT(th_control(d, 0x23, 0x01, 8, 3, 0, NULL), 0);
    TL_EQ_INT(th_control(d, 0xa3, 0x00, 0, 3, 4, b), 4);
    TL_EQ_INT(b[1] & 0x01, 0x00);
    /* ports outside 1..7 */
    TL_EQ_INT(th_control(d, 0xa3, 0x00, 0, 8, 4, b), VDEV_STALL);
    TL_EQ_INT(th_control(d, 0x23, 0x03, 8, 0, 0, NULL), VDEV_STALL);
    TL_EQ_INT(th_control(d, 0x23, 0x03, 99, 1, 0, NULL), VDEV_STALL);
    TL_EQ_INT(d->ops->in_packet(d, 0x81, b, 1), VDEV_NAK);
    TL_EQ_INT(d->ops->out_packet(d, 0x01, b, 1), VDEV_STALL);
    th_destroy(d);

    d = th_create("hub:speed=high,ports=2");
    TL_EQ_INT(d->device_desc[6], 0x01);          /* single TT */
    TL_EQ_INT(d->hub_ports, 2);
    TL_CHECK(th_check_config(d->config_desc, VDEV_SPEED_HIGH, 2, &c) == NULL);
    TL_EQ_INT(c.ep[0].interval, 12);
    TL_EQ_INT(th_control(d, 0x80, 6, 0x0600, 0, 10, b), 10);
    TL_EQ_INT(b[6], 0x00);                        /* at Full-Speed: no TT */
    th_destroy(d);
}

int main(void)
{
    TL_RUN(test_hub);
    return TL_RESULT();
}
