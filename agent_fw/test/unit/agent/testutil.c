/* testutil.c - see testutil.h. */
#include "testutil.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fleet_agent/image.h"
#include "fleet_agent/text.h"
#include "sha256_shim.h"

static void die(const char *what)
{
    fprintf(stderr, "test setup failed: %s (%s)\n", what, strerror(errno));
    exit(2);
}

void tu_tmpdir(char *out, size_t cap)
{
    snprintf(out, cap, "/tmp/fleet-agent-test-XXXXXX");
    if (!mkdtemp(out)) die("mkdtemp");
}

void tu_rmrf(const char *dir)
{
    char cmd[1024];
    if (strncmp(dir, "/tmp/fleet-agent-test-", 22) != 0) return; /* never anything else */
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", dir);
}

static void run(const char *cmd)
{
    if (system(cmd) != 0) {
        fprintf(stderr, "command failed: %s\n", cmd);
        exit(2);
    }
}

void tu_key_gen(tu_key_t *k)
{
    char cmd[1024], pub_path[192];
    tu_tmpdir(k->dir, sizeof k->dir);
    snprintf(k->priv_path, sizeof k->priv_path, "%s/test-only-key.pem", k->dir);
    snprintf(pub_path, sizeof pub_path, "%s/pub.pem", k->dir);
    snprintf(cmd, sizeof cmd,
             "openssl ecparam -name prime256v1 -genkey -noout -out '%s' 2>/dev/null && "
             "openssl ec -in '%s' -pubout -out '%s' 2>/dev/null",
             k->priv_path, k->priv_path, pub_path);
    run(cmd);
    FILE *f = fopen(pub_path, "rb");
    if (!f) die("open pub.pem");
    k->pub_len = fread(k->pub, 1, sizeof k->pub - 1, f);
    fclose(f);
    k->pub[k->pub_len++] = 0;
}

void tu_key_free(tu_key_t *k) { tu_rmrf(k->dir); }

size_t tu_sign(const tu_key_t *k, const void *msg, size_t len, uint8_t *sig, size_t cap)
{
    char cmd[1024], msg_path[192], sig_path[192];
    snprintf(msg_path, sizeof msg_path, "%s/msg", k->dir);
    snprintf(sig_path, sizeof sig_path, "%s/sig", k->dir);
    FILE *f = fopen(msg_path, "wb");
    if (!f || fwrite(msg, 1, len, f) != len) die("write msg");
    fclose(f);
    snprintf(cmd, sizeof cmd, "openssl dgst -sha256 -sign '%s' -out '%s' '%s'", k->priv_path,
             sig_path, msg_path);
    run(cmd);
    f = fopen(sig_path, "rb");
    if (!f) die("read sig");
    size_t n = fread(sig, 1, cap, f);
    fclose(f);
    return n;
}

void tu_sha256(const void *data, size_t len, uint8_t out[32])
{
    mbedtls_sha256_context c;
    mbedtls_sha256_init(&c);
    fleet_sha256_starts(&c);
    fleet_sha256_update(&c, data, len);
    fleet_sha256_finish(&c, out);
    mbedtls_sha256_free(&c);
}

void tu_manifest_init(fleet_manifest_t *m, const char *version, const char *url,
                      const uint8_t *image, size_t image_len)
{
    memset(m, 0, sizeof *m);
    snprintf(m->request_id, sizeof m->request_id, "0b7e6d2a-1111-4c3e-9a55-%012d", 42);
    snprintf(m->version, sizeof m->version, "%s", version);
    snprintf(m->url, sizeof m->url, "%s", url);
    m->size = image_len;
    tu_sha256(image, image_len, m->sha256);
    strcpy(m->chip, "posix-sim");
    m->chip_id = FLEET_CHIP_ID_POSIX_SIM;
    m->min_rev = 0;
    m->max_rev = 99;
}

void tu_manifest_sign(fleet_manifest_t *m, const tu_key_t *k)
{
    char s[256];
    size_t n = fleet_manifest_signed_string(m, s, sizeof s);
    m->signature_len = tu_sign(k, s, n, m->signature, sizeof m->signature);
}

void tu_manifest_json(const fleet_manifest_t *m, char *out, size_t cap)
{
    char hex[65], b64[128];
    fleet_hex_encode(m->sha256, 32, hex);
    fleet_base64_encode(m->signature, m->signature_len, b64);
    snprintf(out, cap,
             "{\"v\":1,\"request_id\":\"%s\",\"issued_at\":1764000000,\"version\":\"%s\","
             "\"url\":\"%s\",\"size\":%" PRIu64 ",\"sha256\":\"%s\",\"chip\":\"%s\",\"chip_id\":%u,"
             "\"min_rev\":%u,\"max_rev\":%u,\"secure_version\":%" PRIu32 ",\"allow_downgrade\":%s,"
             "\"signature\":\"%s\"}",
             m->request_id, m->version, m->url, m->size, hex, m->chip, (unsigned)m->chip_id,
             (unsigned)m->min_rev, (unsigned)m->max_rev, m->secure_version,
             m->allow_downgrade ? "true" : "false", b64);
}

size_t tu_sim_image(uint8_t *out, size_t cap, const char *version, uint32_t secure_version,
                    size_t payload_len, uint32_t seed)
{
    if (cap < FLEET_SIM_HEADER_LEN + payload_len) die("image buffer too small");
    fleet_image_sim_header(out, version, secure_version, 0, 99);
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < payload_len; i++) {
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        out[FLEET_SIM_HEADER_LEN + i] = (uint8_t)x;
    }
    return FLEET_SIM_HEADER_LEN + payload_len;
}

void tu_write_file(const char *dir, const char *name, const void *data, size_t len)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, len, f) != len) die("write file");
    fclose(f);
}

bool tu_server_start(tu_server_t *s, const char *dir)
{
    int pipefd[2];
    snprintf(s->log_path, sizeof s->log_path, "%s/requests.log", dir);
    if (pipe(pipefd)) die("pipe");
    s->pid = fork();
    if (s->pid < 0) die("fork");
    if (s->pid == 0) {
        dup2(pipefd[1], 1);
        close(pipefd[0]);
        close(pipefd[1]);
        execlp("python3", "python3", AGENT_TEST_DIR "/range_server.py", "--dir", dir, "--log",
               s->log_path, (char *)NULL);
        _exit(127);
    }
    close(pipefd[1]);
    FILE *f = fdopen(pipefd[0], "r");
    char line[128] = "";
    s->port = 0;
    if (f && fgets(line, sizeof line, f)) sscanf(line, "port %d", &s->port);
    if (f) fclose(f);
    return s->port > 0;
}

void tu_server_stop(tu_server_t *s)
{
    if (s->pid > 0) {
        kill(s->pid, SIGTERM);
        waitpid(s->pid, NULL, 0);
        s->pid = 0;
    }
}

int tu_server_count(const tu_server_t *s, const char *needle)
{
    FILE *f = fopen(s->log_path, "r");
    if (!f) return 0;
    char line[512];
    int n = 0;
    while (fgets(line, sizeof line, f))
        if (strstr(line, needle)) n++;
    fclose(f);
    return n;
}
