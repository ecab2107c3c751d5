/* test_agent_runtime_ota.c - the agent's `ota` command with and without a
 * worker port: with one, the download is a job the owner does not wait for;
 * a second ota meanwhile is refused with "state:", a redelivery of the same
 * request is ignored, the job's events and result still arrive, and
 * destroying the agent cancels and joins the job before saying goodbye. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fakes.h"
#include "fleet_agent/err.h"
#include "test_agent_runtime_world.h"
#include "testlib.h"
#include "testutil.h"

#define RID1 "0b7e6d2a-1111-4c3e-9a55-000000000042"
#define RID2 "0b7e6d2a-1111-4c3e-9a55-000000000043"

/* Keeps the job instead of running it: the test decides when it runs (as
 * another task would, some time later), or join runs it. */
typedef struct {
    void (*fn)(void *arg);
    void *arg;
    bool pending;
    int starts, joins;
} fake_worker_t;

static int fw_start(void *ctx, void (*fn)(void *arg), void *arg)
{
    fake_worker_t *w = ctx;
    TL_CHECK(!w->pending); /* one job at a time */
    w->fn = fn;
    w->arg = arg;
    w->pending = true;
    w->starts++;
    return FLEET_OK;
}

static void fw_run(fake_worker_t *w)
{
    if (!w->pending)
        return;
    w->pending = false;
    w->fn(w->arg);
}

static void fw_join(void *ctx)
{
    fake_worker_t *w = ctx;
    w->joins++;
    fw_run(w);
}

static const fleet_worker_ops_t k_fake_worker = {fw_start, fw_join};

static tu_key_t key;
static uint8_t image[40064];
static size_t image_len;
static char json1[1024], json2[1024];

typedef struct {
    rt_t rt;
    mem_store_t store;
    mem_kv_t kv;
    script_http_t http;
    fleet_ota_t ota;
    fake_worker_t worker;
} fx_t;

static fx_t *fx_new(bool with_worker)
{
    fx_t *f = calloc(1, sizeof(*f));
    rt_init(&f->rt, false, false);
    mem_store_init(&f->store, "0.3.1");
    mem_kv_init(&f->kv);
    f->http.file = image;
    f->http.file_len = image_len;
    fleet_ota_config_t oc = {
        .store = &mem_store_ops, .store_ctx = &f->store,
        .http = &script_http_ops, .http_ctx = &f->http,
        .kv = &mem_kv_ops, .kv_ctx = &f->kv,
        .clock = &fake_clock_ops, .clock_ctx = &(fake_clock_t){0},
        .on_event = fleet_agent_ota_event, .event_arg = &f->rt.agent,
        .selftest = fleet_agent_selftest, .selftest_arg = &f->rt.agent,
        .chip = "posix-sim", .running_version = "0.3.1",
        .pubkey = key.pub, .pubkey_len = key.pub_len,
    };
    TL_EQ_INT(fleet_ota_init(&f->ota, &oc), FLEET_OK);
    f->rt.ota = &f->ota;
    if (with_worker) {
        f->rt.worker = &k_fake_worker;
        f->rt.worker_ctx = &f->worker;
    }
    rt_recreate(&f->rt, NULL);
    rt_online(&f->rt);
    return f;
}

static void fx_free(fx_t *f)
{
    rt_fini(&f->rt);
    free(f);
}

static bool ok_of(const cJSON *r) { return cJSON_IsTrue(cJSON_GetObjectItem(r, "ok")); }
static const char *error_of(const cJSON *r)
{
    const cJSON *e = cJSON_GetObjectItem(r, "error");
    return cJSON_IsString(e) ? e->valuestring : "";
}

static int count_results(rt_t *rt)
{
    char topic[128];
    snprintf(topic, sizeof(topic), "fleet/v1/%s/cmd-result", fleet_agent_id(rt->agent));
    int n = 0;
    for (int i = 0; i < rt->npub; i++)
        n += strcmp(rt->pubs[i].topic, topic) == 0;
    return n;
}

/* Index of the first publication on leaf whose payload contains needle, or -1. */
static int index_of(rt_t *rt, const char *leaf, const char *needle)
{
    char topic[128];
    snprintf(topic, sizeof(topic), "fleet/v1/%s/%s", fleet_agent_id(rt->agent), leaf);
    for (int i = 0; i < rt->npub; i++)
        if (strcmp(rt->pubs[i].topic, topic) == 0 && strstr(rt->pubs[i].payload, needle))
            return i;
    return -1;
}

static void test_second_ota_refused_while_the_job_runs(void)
{
    fx_t *f = fx_new(true);
    rt_t *rt = &f->rt;
    rt_cmd(rt, "ota", json1);
    TL_EQ_INT(f->worker.starts, 1);
    TL_CHECK(rt_result(rt, RID1) == NULL); /* answered by the job, not now */
    TL_EQ_INT(fleet_ota_state(&f->ota), FLEET_OTA_IDLE); /* nothing ran on the owner's task */

    rt_cmd(rt, "ota", json2);
    cJSON *r = rt_result(rt, RID2);
    TL_CHECK(r && !ok_of(r));
    TL_CHECK(strncmp(error_of(r), "state: an update is already downloading", 39) == 0);
    cJSON_Delete(r);
    int results = count_results(rt);
    rt_cmd(rt, "ota", json1); /* QoS 1 redelivery of the running request */
    TL_EQ_INT(count_results(rt), results);
    TL_EQ_INT(f->worker.starts, 1);

    /* the owner keeps reporting meanwhile */
    int from = rt->npub;
    rt_advance(rt, 10000);
    cJSON *t = rt_last(rt, "telemetry", from, NULL);
    TL_CHECK(t != NULL);
    cJSON_Delete(t);

    from = rt->npub;
    fw_run(&f->worker);
    r = rt_result(rt, RID1);
    TL_CHECK(r && ok_of(r));
    const cJSON *st = cJSON_GetObjectItem(cJSON_GetObjectItem(r, "detail"), "state");
    TL_CHECK(cJSON_IsString(st) && strcmp(st->valuestring, "pending_reboot") == 0);
    cJSON_Delete(r);
    TL_CHECK(rt_count_events(rt, "ota_progress", NULL, from) >= 5);
    TL_EQ_INT(f->http.requests, 1);
    TL_EQ_INT(f->store.od.boot_slot, 1);
    rt_advance(rt, 100);
    TL_EQ_INT(rt->reboots, 1);
    TL_CHECK(strcmp(rt->reboot_reason, "ota") == 0);
    fx_free(f);
}

static void test_a_finished_job_is_joined_before_the_next(void)
{
    fx_t *f = fx_new(true);
    rt_t *rt = &f->rt;
    f->http.script[0] = (http_step_t){HTTP_STATUS, 404};
    f->http.n_script = 1;
    rt_cmd(rt, "ota", json1);
    fw_run(&f->worker);
    cJSON *r = rt_result(rt, RID1);
    TL_CHECK(r && !ok_of(r) && strstr(error_of(r), "HTTP 404"));
    cJSON_Delete(r);
    TL_EQ_INT(f->worker.joins, 0);
    rt_cmd(rt, "ota", json2); /* the service retries: a new job, the old one reclaimed first */
    TL_EQ_INT(f->worker.joins, 1);
    TL_EQ_INT(f->worker.starts, 2);
    fw_run(&f->worker);
    r = rt_result(rt, RID2);
    TL_CHECK(r && ok_of(r));
    cJSON_Delete(r);
    fx_free(f);
}

static void test_destroy_cancels_and_joins_before_goodbye(void)
{
    fx_t *f = fx_new(true);
    rt_t *rt = &f->rt;
    rt_cmd(rt, "ota", json1);
    TL_EQ_INT(f->worker.joins, 0);
    rt_recreate(rt, "reboot"); /* the job runs inside join, already cancelled */
    TL_EQ_INT(f->worker.joins, 1);
    TL_CHECK(!f->worker.pending);
    int res = index_of(rt, "cmd-result", RID1);
    int bye = index_of(rt, "status", "\"reboot\"");
    TL_CHECK(res >= 0 && bye > res);
    TL_CHECK(strstr(rt->pubs[res].payload, "download: cancelled") != NULL);
    TL_EQ_INT(f->store.od.boot_slot, 0); /* nothing staged */
    fx_free(f);
}

static void test_without_worker_the_handler_blocks(void)
{
    fx_t *f = fx_new(false);
    rt_t *rt = &f->rt;
    rt_cmd(rt, "ota", json1);
    cJSON *r = rt_result(rt, RID1);
    TL_CHECK(r && ok_of(r));
    cJSON_Delete(r);
    TL_EQ_INT(fleet_ota_state(&f->ota), FLEET_OTA_PENDING_REBOOT);
    rt_cmd(rt, "ota", json1); /* redelivery of the staged update: ok again, nothing fetched */
    TL_EQ_INT(f->http.requests, 1);
    fx_free(f);
}

static void test_bad_manifest_answered_at_once(void)
{
    fx_t *f = fx_new(true);
    rt_t *rt = &f->rt;
    rt_cmd(rt, "ota", "{\"v\":1,\"request_id\":\"" RID2 "\",\"issued_at\":1,\"version\":\"x\"}");
    cJSON *r = rt_result(rt, RID2);
    TL_CHECK(r && !ok_of(r));
    cJSON_Delete(r);
    TL_EQ_INT(f->worker.starts, 0);
    fx_free(f);
}

int main(void)
{
    tu_key_gen(&key);
    image_len = tu_sim_image(image, sizeof image, "0.4.0", 0, 40000, 7);
    fleet_manifest_t m;
    tu_manifest_init(&m, "0.4.0", "http://127.0.0.1:1/fw/new.bin", image, image_len);
    tu_manifest_sign(&m, &key);
    tu_manifest_json(&m, json1, sizeof json1);
    snprintf(m.request_id, sizeof m.request_id, "%s", RID2);
    tu_manifest_json(&m, json2, sizeof json2);
    TL_RUN(test_second_ota_refused_while_the_job_runs);
    TL_RUN(test_a_finished_job_is_joined_before_the_next);
    TL_RUN(test_destroy_cancels_and_joins_before_goodbye);
    TL_RUN(test_without_worker_the_handler_blocks);
    TL_RUN(test_bad_manifest_answered_at_once);
    tu_key_free(&key);
    return TL_RESULT();
}
