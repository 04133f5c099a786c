/* test_batch.c -- crc32c vectors (hardware and software paths) and
 * fc_batch_validate against truncation, bit flips, bad fields, garbage.
 * Prints "N passed, M failed". */
#include "flowcept.h"
#include "harness.h"
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>


static uint32_t crc_ref(uint32_t crc, const uint8_t *p, size_t n)
{
    crc = ~crc;
    while (n--) {
        crc ^= *p++;
        for (int k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
    }
    return ~crc;
}

static int crc_checks(void)
{
    if (fc_crc32c(0, "123456789", 9) != 0xE3069283u)
        return 0;
    if (fc_crc32c(0, "", 0) != 0 || fc_crc32c(0x1234, NULL, 0) != 0x1234)
        return 0;
    uint8_t buf[1100];
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (uint8_t)(i * 131u + 7u);
    for (size_t off = 0; off < 9; off++)
        for (size_t n = 0; n + off <= sizeof buf; n += 1 + n / 7) {
            uint32_t a = fc_crc32c(0, buf + off, n);
            if (a != crc_ref(0, buf + off, n))
                return 0;
            /* continuation */
            size_t h = n / 3;
            if (fc_crc32c(fc_crc32c(0, buf + off, h), buf + off + h, n - h) != a)
                return 0;
        }
    /* long buffers (the hardware path's 3-stream loop) */
    static uint8_t big[40000];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (uint8_t)(i * 2654435761u >> 13);
    size_t lens[] = { 6143, 6144, 6145, 12288 + 5, 18432, 20000, 39990 };
    for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++)
        for (size_t off = 0; off < 4; off++)
            if (fc_crc32c(7, big + off, lens[k]) != crc_ref(7, big + off, lens[k]))
                return 0;
    return 1;
}

/* both paths: the software tables and (where the CPU has it) crc32 */
static void t_crc(void)
{
    fc_crc32c_force_soft(1);
    int soft = crc_checks();
    fc_crc32c_force_soft(0);
    CHECK(soft);
    CHECK(crc_checks());
}

/* builds a valid frame from a ring */
static uint8_t *make_frame(int64_t *len, int nrec)
{
    char path[128];
    snprintf(path, sizeof path, "/tmp/fc_test_batch_%d.ring", (int)getpid());
    unlink(path);
    fc_ring *r;
    if (fc_ring_create(path, NULL, &r) != 0)
        return NULL;
    unlink(path);
    fc_ring_intern(r, "one", 3);
    fc_ring_intern(r, "two22", 5);
    for (int i = 0; i < nrec; i++) {
        char pl[32];
        memset(pl, 'a' + i, sizeof pl);
        fc_ring_push_task(r, (uint64_t)i + 1, 0, 9, i, i + 1, 3, 0,
                          (uint32_t)(i & 1), 0, 0, pl, (uint32_t)(i * 5 % 32));
    }
    uint8_t *buf = malloc(1 << 16);
    uint64_t consumed;
    *len = fc_ring_pack(r, buf, 1 << 16, 1000, &consumed);
    fc_ring_close(r);
    return buf;
}

static void refresh_crc(uint8_t *buf, uint64_t len)
{
    memset(buf + offsetof(fc_batch_header, crc32c), 0, 4);
    uint32_t c = fc_crc32c(0, buf + 96, len - 96);
    c = fc_crc32c(c, buf, 96);
    memcpy(buf + offsetof(fc_batch_header, crc32c), &c, 4);
}

static void t_validate_basic(void)
{
    int64_t len;
    uint8_t *buf = make_frame(&len, 10);
    CHECK(buf && len > 0);
    CHECK(fc_batch_validate(buf, (uint64_t)len) == 0);
    CHECK(fc_batch_validate(NULL, 0) == -EMSGSIZE);
    CHECK(fc_batch_validate(buf, 0) == -EMSGSIZE);
    /* truncations */
    for (int64_t l = 0; l < len; l++)
        CHECK(fc_batch_validate(buf, (uint64_t)l) != 0);
    CHECK(fc_batch_validate(buf, (uint64_t)len - 1) == -EMSGSIZE);
    /* trailing bytes */
    uint8_t *big = calloc(1, (size_t)len + 16);
    memcpy(big, buf, (size_t)len);
    CHECK(fc_batch_validate(big, (uint64_t)len + 8) == -EMSGSIZE);
    free(big);
    /* every single bit flip is caught */
    for (int64_t i = 0; i < len; i++)
        for (int b = 0; b < 8; b++) {
            buf[i] ^= (uint8_t)(1u << b);
            int e = fc_batch_validate(buf, (uint64_t)len);
            buf[i] ^= (uint8_t)(1u << b);
            CHECK(e != 0);
        }
    CHECK(fc_batch_validate(buf, (uint64_t)len) == 0);
    /* bad magic / version */
    buf[0] ^= 0xff;
    CHECK(fc_batch_validate(buf, (uint64_t)len) == -EBADMSG);
    buf[0] ^= 0xff;
    buf[8] = 2;
    CHECK(fc_batch_validate(buf, (uint64_t)len) == -EPROTO);
    buf[8] = 1;
    /* crc mismatch */
    buf[len - 1] ^= 1;
    CHECK(fc_batch_validate(buf, (uint64_t)len) == -EILSEQ);
    buf[len - 1] ^= 1;
    free(buf);
}

static void t_validate_semantic(void)
{
    /* structurally wrong frames with a correct crc */
    int64_t len;
    uint8_t *orig = make_frame(&len, 6);
    CHECK(orig && len > 0);
    uint8_t *buf = malloc((size_t)len);
    fc_batch_header h;
    fc_task_record rc;
    size_t r0 = 96;

    memcpy(buf, orig, (size_t)len);
    memcpy(&rc, buf + r0 + 64, sizeof rc);
    rc.activity_id = 2; /* only 2 strings */
    memcpy(buf + r0 + 64, &rc, sizeof rc);
    refresh_crc(buf, (uint64_t)len);
    CHECK(fc_batch_validate(buf, (uint64_t)len) == -ERANGE);

    memcpy(buf, orig, (size_t)len);
    memcpy(&rc, buf + r0 + 128, sizeof rc);
    memcpy(&h, buf, sizeof h);
    rc.payload_off = (uint32_t)h.payload_bytes - 4; /* beyond the area */
    rc.payload_len = 8;
    memcpy(buf + r0 + 128, &rc, sizeof rc);
    refresh_crc(buf, (uint64_t)len);
    CHECK(fc_batch_validate(buf, (uint64_t)len) == -ERANGE);

    memcpy(buf, orig, (size_t)len);
    memcpy(&rc, buf + r0, sizeof rc);
    rc.payload_off = 0xFFFFFFF8u;
    rc.payload_len = 0xFFFFFFFFu;
    memcpy(buf + r0, &rc, sizeof rc);
    refresh_crc(buf, (uint64_t)len);
    CHECK(fc_batch_validate(buf, (uint64_t)len) == -ERANGE);

    uint64_t bad_vals[] = { 0, 8, 95, 97, (uint64_t)len, (uint64_t)len + 8,
                            UINT64_MAX, UINT64_MAX - 7, 1ull << 63 };
    size_t fields[] = { offsetof(fc_batch_header, records_off),
                        offsetof(fc_batch_header, payload_off),
                        offsetof(fc_batch_header, payload_bytes),
                        offsetof(fc_batch_header, strings_off) };
    for (size_t f = 0; f < 4; f++)
        for (size_t v = 0; v < sizeof bad_vals / sizeof bad_vals[0]; v++) {
            memcpy(buf, orig, (size_t)len);
            uint64_t old;
            memcpy(&old, buf + fields[f], 8);
            if (old == bad_vals[v])
                continue;
            memcpy(buf + fields[f], &bad_vals[v], 8);
            refresh_crc(buf, (uint64_t)len);
            CHECK(fc_batch_validate(buf, (uint64_t)len) == -EBADMSG);
        }
    uint32_t cnts[] = { 0, 1, 5, 7, 1000, 0x7FFFFFFF, 0xFFFFFFFF };
    for (size_t v = 0; v < 7; v++) {
        for (int which = 0; which < 2; which++) {
            memcpy(buf, orig, (size_t)len);
            size_t off = which ? offsetof(fc_batch_header, string_count)
                               : offsetof(fc_batch_header, record_count);
            uint32_t old;
            memcpy(&old, buf + off, 4);
            if (old == cnts[v])
                continue;
            memcpy(buf + off, &cnts[v], 4);
            refresh_crc(buf, (uint64_t)len);
            int e = fc_batch_validate(buf, (uint64_t)len);
            CHECK(e == -EBADMSG || e == -ERANGE);
        }
    }
    /* flag bits beyond bit 0 are not the validator's business */
    memcpy(buf, orig, (size_t)len);
    buf[12] = 0x80;
    refresh_crc(buf, (uint64_t)len);
    CHECK(fc_batch_validate(buf, (uint64_t)len) == 0);
    /* wrong header_size */
    memcpy(buf, orig, (size_t)len);
    buf[10] = 64;
    refresh_crc(buf, (uint64_t)len);
    CHECK(fc_batch_validate(buf, (uint64_t)len) == -EBADMSG);
    /* a string length running past the end */
    memcpy(buf, orig, (size_t)len);
    memcpy(&h, buf, sizeof h);
    uint32_t huge = 60000;
    memcpy(buf + h.strings_off, &huge, 4);
    refresh_crc(buf, (uint64_t)len);
    CHECK(fc_batch_validate(buf, (uint64_t)len) == -EBADMSG);
    free(buf);
    free(orig);
}

static void t_validate_garbage(void)
{
    /* random garbage of many lengths, exact-size heap blocks so that ASan
     * catches any read outside [buf, buf+len) */
    uint64_t x = 88172645463325252ull;
    for (int it = 0; it < 20000; it++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        size_t n = (size_t)(x % 700);
        uint8_t *b = malloc(n ? n : 1);
        for (size_t i = 0; i < n; i++) {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            b[i] = (uint8_t)x;
        }
        if (n >= 96 && (it & 1)) { /* plausible header, random rest */
            fc_batch_header h;
            memcpy(&h, b, sizeof h);
            h.magic = FC_BATCH_MAGIC;
            h.version = 1;
            h.header_size = 96;
            h.total_len = n;
            memcpy(b, &h, sizeof h);
            if (it & 2)
                refresh_crc(b, n);
        }
        int e = fc_batch_validate(b, n);
        free(b);
        CHECK(e != 0);
    }
}

static void t_empty_frame_valid(void)
{
    /* a frame with zero records and zero strings is well-formed */
    uint8_t buf[96];
    fc_batch_header h;
    memset(&h, 0, sizeof h);
    h.magic = FC_BATCH_MAGIC;
    h.version = FC_FORMAT_VERSION;
    h.header_size = 96;
    h.total_len = 96;
    h.records_off = h.payload_off = h.strings_off = 96;
    memcpy(buf, &h, 96);
    refresh_crc(buf, 96);
    CHECK(fc_batch_validate(buf, 96) == 0);
}

static void t_summary(void)
{
    int64_t len;
    uint8_t *buf = make_frame(&len, 10);
    CHECK(buf && len > 0);
    fc_batch_summary s;
    uint32_t acts[16];
    uint64_t wfs[4];
    fc_batch_header h;
    memcpy(&h, buf, sizeof h);
    CHECK(h.string_count <= 16);
    int rc = fc_batch_summarize(buf, (uint64_t)len, &s, acts, wfs, 4);
    int ok = rc == 0 && s.tasks == 10 && s.workflows == 0 && s.errors == 0 && s.overflow == 0 &&
             s.t0 == 0 && s.t1 == 10 && s.s1 == 9 && s.e0 == 1 && s.id0 == 1 && s.id1 == 10 &&
             s.r0 == 3 && s.r1 == 3 && s.n_acts == 2 && acts[0] == 0 && acts[1] == 1 &&
             s.n_wfs == 1 && wfs[0] == 9;
    /* no room for the workflow ids: left to the caller */
    int big = fc_batch_summarize(buf, (uint64_t)len, &s, acts, wfs, 0) == -E2BIG;
    /* records beyond the buffer */
    h.record_count = 1u << 30;
    memcpy(buf, &h, sizeof h);
    int bad = fc_batch_summarize(buf, (uint64_t)len, &s, acts, wfs, 4) == -EBADMSG;
    free(buf);
    CHECK(ok);
    CHECK(big);
    CHECK(bad);
}

int main(void)
{
    static const fc_test tests[] = {
        { "crc", t_crc },
        { "validate_basic", t_validate_basic },
        { "validate_semantic", t_validate_semantic },
        { "validate_garbage", t_validate_garbage },
        { "empty_frame_valid", t_empty_frame_valid },
        { "summary", t_summary },
    };
    int rc = FC_RUN_TESTS(tests);
    return rc;
}
