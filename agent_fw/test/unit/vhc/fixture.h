/*
 * fixture.h - the set-up most vhc tests share: one controller, a test device
 * plugged at 1-1, interface 0 claimed; the tear-down checks that no callback
 * ran inside an op. Header-only so the checks count in the including test.
 */
#ifndef VHC_TEST_FIXTURE_H
#define VHC_TEST_FIXTURE_H

#include <string.h>

#include "testlib.h"
#include "tvdev.h"

typedef struct {
    vhc_t *v;
    tcore_t c;
    tvdev_t *t;
    uhp_dev_handle_t h;
} fx_t;

static inline void fx_up_dev(fx_t *f, vhc_config_t cfg, tvdev_t *t)
{
    memset(f, 0, sizeof *f);
    TL_EQ_INT(vhc_create(&cfg, &f->v), 0);
    tc_init(&f->c, f->v);
    f->t = t;
    f->h = tc_plug(&f->c, "1-1", f->t);
    TL_CHECK(f->h != NULL);
    TL_EQ_INT(OP(f->c.ops->interface_claim(f->v, f->h, 0, 0)), UHP_OK);
}

static inline void fx_up(fx_t *f)
{
    fx_up_dev(f, VHC_CONFIG_ESP32S3(), tv_simple(NULL));
}

static inline void fx_down(fx_t *f)
{
    TL_EQ_INT(f->c.cb_inside_op, 0);
    TL_EQ_INT(f->c.harness_errors, 0);
    vhc_destroy(f->v);
}

#endif /* VHC_TEST_FIXTURE_H */
