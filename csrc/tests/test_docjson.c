/* test_docjson.c -- task documents as JSON (fc_docjson.h): the text of known
 * rows and payloads in both styles, projections, payloads left to Python,
 * payload columns, lineage keys, a buffer too small, bad arguments, and the
 * same rows written from several threads at once (for ThreadSanitizer).
 * Prints "N passed, M failed". */
#include "fc_docjson.h"
#include "harness.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Literals: 0 "train", 1 "FINISHED", 2 "node\"1", 3 (empty: Python only) */
static const char LITS[] = "\"train\"\"FINISHED\"\"node\\\"1\"";
static const uint64_t LIT_OFF[] = {0, 7, 17, 26, 26};

#define NROWS 4
static uint64_t wf[NROWS] = {0xabc, 0xabc, 0xffffffffffffffffull, 1};
static uint64_t tid[NROWS] = {1, 2, 3, 4};
static uint64_t pid[NROWS] = {0, 1, 2, 0};
static int64_t t0[NROWS] = {1700000000000000000ll, 1500000000, -1, 0};
static int64_t t1[NROWS] = {1700000000000000001ll, 2500000000, 0, 10};
static uint32_t rank_[NROWS] = {0, 7, 4294967295u, 1};
static uint32_t thr[NROWS] = {0, 1, 2, 3};
static uint32_t act[NROWS] = {0, 0, 0, 3};
static uint32_t st[NROWS] = {1, 1, 1, 1};
static uint32_t host[NROWS] = {2, 2, 2, 2};
static uint16_t flags[NROWS];
static uint64_t pay[NROWS];
static uint32_t plen[NROWS];

/* {"used": {"x": 1, "s": "a\"\n"}, "tags": ["t"], "other": nil, "generated": {"v": 0.5}} */
static const uint8_t P0[] = {0x84, 0xa4, 'u', 's', 'e', 'd', 0x82, 0xa1, 'x', 0x01, 0xa1, 's', 0xa3, 'a', '"', '\n',
                             0xa4, 't', 'a', 'g', 's', 0x91, 0xa1, 't', 0xa5, 'o', 't', 'h', 'e', 'r', 0xc0,
                             0xa9, 'g', 'e', 'n', 'e', 'r', 'a', 't', 'e', 'd', 0x81, 0xa1, 'v',
                             0xcb, 0x3f, 0xe0, 0, 0, 0, 0, 0, 0};
/* opaque C bytes */
static const uint8_t P1[] = {0x00, 0xff, 0x10};
/* [1e-5 as float64, -1] : not a map */
static const uint8_t P2[] = {0x92, 0xcb, 0x3e, 0xe4, 0xf8, 0xb5, 0x88, 0xe3, 0x68, 0xf1, 0xff};

static fc_doc_rows make_rows(void)
{
    fc_doc_rows r;
    memset(&r, 0, sizeof r);
    flags[0] = 1;
    flags[1] = 0;
    flags[2] = 1;
    flags[3] = 1;
    pay[0] = (uint64_t)(uintptr_t)P0;
    plen[0] = sizeof P0;
    pay[1] = (uint64_t)(uintptr_t)P1;
    plen[1] = sizeof P1;
    pay[2] = (uint64_t)(uintptr_t)P2;
    plen[2] = sizeof P2;
    pay[3] = 0;
    plen[3] = 0;
    r.n = 3;   /* row 3 (empty literal) only where a test asks for it */
    r.workflow_id = wf;
    r.task_id = tid;
    r.parent_id = pid;
    r.start_ns = t0;
    r.end_ns = t1;
    r.rank = rank_;
    r.thread_id = thr;
    r.activity = act;
    r.status = st;
    r.hostname = host;
    r.flags = flags;
    r.payload = pay;
    r.payload_len = plen;
    r.lit_text = LITS;
    r.lit_off = LIT_OFF;
    r.nlits = 4;
    r.msgpack_flag = 1;
    return r;
}

static const char *DOC0 =
    "{\"task_id\":\"0000000000000abc-0000000000000001\",\"workflow_id\":\"0000000000000abc\","
    "\"parent_task_id\":null,\"activity_id\":\"train\",\"status\":\"FINISHED\","
    "\"started_at\":1700000000.0,\"ended_at\":1700000000.0,\"start_ns\":1700000000000000000,"
    "\"end_ns\":1700000000000000001,\"rank\":0,\"thread_id\":0,\"hostname\":\"node\\\"1\","
    "\"used\":{\"x\":1,\"s\":\"a\\\"\\n\"},\"generated\":{\"v\":0.5},\"tags\":[\"t\"]}\n";
static const char *DOC1 =
    "{\"task_id\":\"0000000000000abc-0000000000000002\",\"workflow_id\":\"0000000000000abc\","
    "\"parent_task_id\":\"0000000000000abc-0000000000000001\",\"activity_id\":\"train\","
    "\"status\":\"FINISHED\",\"started_at\":1.5,\"ended_at\":2.5,\"start_ns\":1500000000,"
    "\"end_ns\":2500000000,\"rank\":7,\"thread_id\":1,\"hostname\":\"node\\\"1\","
    "\"payload\":\"00ff10\"}\n";

static void test_whole_documents(void)
{
    fc_doc_rows r = make_rows();
    char out[4096];
    uint64_t ends[NROWS];
    uint8_t state[NROWS];
    int64_t n = fc_docs_json(&r, 0, NULL, 0, FC_JSON_ORJSON, '\n', out, sizeof out, ends, state);
    CHECK(n == 3);
    CHECK(state[0] == FC_ROW_DONE && state[1] == FC_ROW_DONE && state[2] == FC_ROW_DONE);
    CHECK(ends[0] == strlen(DOC0) && !memcmp(out, DOC0, ends[0]));
    CHECK(ends[1] - ends[0] == strlen(DOC1) && !memcmp(out + ends[0], DOC1, strlen(DOC1)));
    const char *tail = "\"hostname\":\"node\\\"1\",\"payload\":[0.00001,-1]}\n";
    CHECK(!memcmp(out + ends[2] - strlen(tail), tail, strlen(tail)));
    const char *neg = "\"started_at\":-1e-9,\"ended_at\":0.0,\"start_ns\":-1,\"end_ns\":0,\"rank\":4294967295";
    CHECK(memmem(out + ends[1], ends[2] - ends[1], neg, strlen(neg)) != NULL);
    /* python style: repr floats */
    n = fc_docs_json(&r, 2, NULL, 0, FC_JSON_PYTHON, -1, out, sizeof out, ends, state);
    CHECK(n == 1);
    const char *ptail = "\"payload\":[1e-05,-1]}";
    CHECK(!memcmp(out + ends[2] - strlen(ptail), ptail, strlen(ptail)));
}

static void test_projection(void)
{
    fc_doc_rows r = make_rows();
    char out[4096];
    uint64_t ends[NROWS];
    uint8_t state[NROWS];
    uint8_t fields[] = {FC_DOC_TAGS, FC_DOC_RANK, FC_DOC_ERROR, FC_DOC_PAYLOAD};
    int64_t n = fc_docs_json(&r, 0, fields, 4, FC_JSON_ORJSON, ',', out, sizeof out, ends, state);
    CHECK(n == 3);
    const char *want = "{\"tags\":[\"t\"],\"rank\":0},{\"rank\":7,\"payload\":\"00ff10\"},"
                       "{\"rank\":4294967295,\"payload\":[0.00001,-1]},";
    CHECK(ends[2] == strlen(want) && !memcmp(out, want, ends[2]));
    uint8_t bad[] = {FC_DOC_NFIELDS};
    CHECK(fc_docs_json(&r, 0, bad, 1, FC_JSON_ORJSON, -1, out, sizeof out, ends, state) == -EINVAL);
    CHECK(fc_docs_json(&r, 0, NULL, 0, 9, -1, out, sizeof out, ends, state) == -EINVAL);
    r.nlits = 2;   /* the hostname literal out of range */
    CHECK(fc_docs_json(&r, 0, NULL, 0, FC_JSON_ORJSON, -1, out, sizeof out, ends, state) == -EINVAL);
}

/* Payloads the C writer leaves to Python: nothing written, state PYTHON. */
static void test_left_to_python(void)
{
    static const uint8_t cases[][12] = {
        {0x81, 0xa4, 'u', 's', 'e', 'd', 0x81, 0xa1, 's', 0xa1, 0xff},          /* not UTF-8 */
        {0x82, 0xa1, 'a', 0x01, 0xa1, 'a', 0x02},                              /* duplicate key */
        {0x81, 0x01, 0x02},                                                     /* int key */
        {0x81, 0xa1, 'e', 0xd4, 0x01, 0x02},                                    /* ext */
        {0x81, 0xa1, 'x', 0xc1},                                                /* 0xc1 */
        {0x81, 0xa1, 'x'},                                                      /* truncated */
        {0x81, 0xa1, 'x', 0x01, 0x00},                                          /* trailing byte */
        {0x81, 0xa1, 'x', 0xa3, 0xed, 0xa0, 0x80},                              /* surrogate */
    };
    static const uint32_t lens[] = {11, 7, 3, 6, 4, 3, 5, 7};
    fc_doc_rows r = make_rows();
    r.n = 1;
    for (unsigned k = 0; k < sizeof lens / sizeof lens[0]; k++) {
        pay[0] = (uint64_t)(uintptr_t)cases[k];
        plen[0] = lens[k];
        flags[0] = 1;
        char out[2048];
        uint64_t ends[1];
        uint8_t state[1];
        CHECK(fc_docs_json(&r, 0, NULL, 0, FC_JSON_ORJSON, '\n', out, sizeof out, ends, state) == 1);
        CHECK(state[0] == FC_ROW_PYTHON && ends[0] == 0);
        /* without payload fields the payload is not looked at */
        uint8_t fields[] = {FC_DOC_TASK_ID};
        CHECK(fc_docs_json(&r, 0, fields, 1, FC_JSON_ORJSON, '\n', out, sizeof out, ends, state) == 1);
        CHECK(state[0] == FC_ROW_DONE);
    }
    /* nesting past FC_JSON_MAX_DEPTH */
    uint8_t deep[200];
    deep[0] = 0x81;
    deep[1] = 0xa1;
    deep[2] = 'x';
    for (int i = 3; i < 3 + FC_JSON_MAX_DEPTH + 2; i++)
        deep[i] = 0x91;
    deep[3 + FC_JSON_MAX_DEPTH + 2] = 0x01;
    pay[0] = (uint64_t)(uintptr_t)deep;
    plen[0] = 3 + FC_JSON_MAX_DEPTH + 3;
    char out[4096];
    uint64_t ends[1];
    uint8_t state[1];
    CHECK(fc_docs_json(&r, 0, NULL, 0, FC_JSON_ORJSON, '\n', out, sizeof out, ends, state) == 1);
    CHECK(state[0] == FC_ROW_PYTHON);
    /* an empty literal (a name only Python writes) */
    fc_doc_rows r2 = make_rows();
    r2.n = 4;
    uint64_t e4[NROWS];
    uint8_t s4[NROWS];
    CHECK(fc_docs_json(&r2, 3, NULL, 0, FC_JSON_ORJSON, '\n', out, sizeof out, e4, s4) == 1);
    CHECK(s4[3] == FC_ROW_PYTHON);
}

static void test_value_columns(void)
{
    fc_doc_rows r = make_rows();
    char out[1024];
    uint64_t ends[NROWS];
    uint8_t state[NROWS];
    CHECK(fc_docs_value_json(&r, 0, FC_DOC_USED, FC_JSON_ORJSON, out, sizeof out, ends, state) == 3);
    CHECK(state[0] == FC_ROW_DONE && state[1] == FC_ROW_ABSENT && state[2] == FC_ROW_ABSENT);
    const char *used = "{\"x\":1,\"s\":\"a\\\"\\n\"}";
    CHECK(ends[0] == strlen(used) && !memcmp(out, used, ends[0]) && ends[2] == ends[0]);
    CHECK(fc_docs_value_json(&r, 0, FC_DOC_ERROR, FC_JSON_ORJSON, out, sizeof out, ends, state) == 3);
    CHECK(state[0] == FC_ROW_ABSENT && ends[2] == 0);
    CHECK(fc_docs_value_json(&r, 0, FC_DOC_TASK_ID, FC_JSON_ORJSON, out, sizeof out, ends, state) == -EINVAL);
}

static void test_buffer_too_small(void)
{
    fc_doc_rows r = make_rows();
    char out[2048];
    uint64_t ends[NROWS];
    uint8_t state[NROWS];
    CHECK(fc_docs_json(&r, 0, NULL, 0, FC_JSON_ORJSON, '\n', out, 100, ends, state) == 0);
    int64_t n = fc_docs_json(&r, 0, NULL, 0, FC_JSON_ORJSON, '\n', out, 1200, ends, state);
    CHECK(n >= 1 && n < 3);
    CHECK(!memcmp(out, DOC0, strlen(DOC0)));
}

static void test_lineage_keys(void)
{
    uint64_t a[2], b[2];
    static const uint8_t one[] = {0x01}, one_f[] = {0xcb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0};
    static const uint8_t one_u64[] = {0xcf, 0, 0, 0, 0, 0, 0, 0, 1};
    static const uint8_t s_a[] = {0xa1, 'a'}, b_a[] = {0xc4, 0x01, 'a'};
    static const uint8_t t[] = {0xc3}, nil[] = {0xc0}, arr[] = {0x91, 0x01};
    static const uint8_t nan[] = {0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0};
    static const uint8_t bad[] = {0xa2, 'a'};
    CHECK(fc_scalar_key(one, 1, a) == 1 && fc_scalar_key(one_f, 9, b) == 1);
    CHECK(a[0] == b[0] && a[1] == b[1]);
    CHECK(fc_scalar_key(one_u64, 9, b) == 1 && a[0] == b[0] && a[1] == b[1]);
    CHECK(fc_scalar_key(s_a, 2, a) == 1 && fc_scalar_key(b_a, 3, b) == 1);
    CHECK(a[0] != b[0] || a[1] != b[1]);
    CHECK(fc_scalar_key(t, 1, a) == 0 && fc_scalar_key(nil, 1, a) == 0);
    CHECK(fc_scalar_key(arr, 2, a) == 0 && fc_scalar_key(nan, 9, a) == 0);
    CHECK(fc_scalar_key(bad, 2, a) == -EBADMSG);
    /* the values of rows: used {x: 1, s: "a\"\n"} and generated {v: 0.5} of row 0 */
    fc_doc_rows r = make_rows();
    uint64_t keys[2 * 64], row_of[64], count;
    uint8_t kind[64], state[NROWS];
    CHECK(fc_doc_scalars(&r, 0, keys, row_of, kind, 64, &count, state) == 3);
    CHECK(count == 3 && kind[0] == 0 && kind[1] == 0 && kind[2] == 1 && row_of[2] == 0);
    CHECK(fc_scalar_key(one, 1, a) == 1 && keys[0] == a[0] && keys[1] == a[1]);
}

static void test_doubles(void)
{
    static const struct {
        double v;
        const char *oj, *py;
    } cases[] = {
        {1.0, "1.0", "1.0"}, {1e16, "1e+16", "1e+16"}, {1e15, "1000000000000000.0", "1000000000000000.0"},
        {1e-5, "0.00001", "1e-05"}, {1e-4, "0.0001", "0.0001"}, {1e-7, "1e-7", "1e-07"},
        {0.1, "0.1", "0.1"}, {-0.0, "-0.0", "-0.0"}, {5e-324, "5e-324", "5e-324"},
        {1.7976931348623157e308, "1.7976931348623157e+308", "1.7976931348623157e+308"},
        {123.456, "123.456", "123.456"}, {2.5e-5, "0.000025", "2.5e-05"},
    };
    char buf[40];
    for (unsigned i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int n = fc_json_double(cases[i].v, FC_JSON_ORJSON, buf);
        CHECK((size_t)n == strlen(cases[i].oj) && !memcmp(buf, cases[i].oj, (size_t)n));
        n = fc_json_double(cases[i].v, FC_JSON_PYTHON, buf);
        CHECK((size_t)n == strlen(cases[i].py) && !memcmp(buf, cases[i].py, (size_t)n));
    }
    CHECK(fc_json_double(NAN, FC_JSON_ORJSON, buf) == 4 && !memcmp(buf, "null", 4));
    CHECK(fc_json_double(-INFINITY, FC_JSON_PYTHON, buf) == 4 && !memcmp(buf, "null", 4));
}

static uint64_t rng_state = 0x2545F4914F6CDD1Dull;

static uint64_t rnd(void)
{
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}

/* Random bytes and mutated payloads, each in a buffer of its exact size (so
 * that AddressSanitizer sees any read past it): never a crash; a row is
 * written or left to Python. */
static void test_garbage(void)
{
    fc_doc_rows r = make_rows();
    r.n = 1;
    flags[0] = 1;
    static char out[1 << 16];
    for (int k = 0; k < 20000; k++) {
        uint32_t n = (uint32_t)(rnd() % 64);
        uint8_t *p = malloc(n ? n : 1);
        CHECK(p != NULL);
        if (k % 2 && n <= sizeof P0) {
            memcpy(p, P0, n);
            if (n)
                p[rnd() % n] ^= (uint8_t)(1u << (rnd() % 8));
        } else {
            for (uint32_t i = 0; i < n; i++)
                p[i] = (uint8_t)rnd();
        }
        pay[0] = (uint64_t)(uintptr_t)p;
        plen[0] = n;
        uint64_t ends[1], keys[2 * 64], row_of[64], count;
        uint8_t state[1], kind[64];
        CHECK(fc_docs_json(&r, 0, NULL, 0, FC_JSON_PYTHON, '\n', out, sizeof out, ends, state) == 1);
        CHECK(state[0] == FC_ROW_DONE || (state[0] == FC_ROW_PYTHON && ends[0] == 0));
        CHECK(fc_docs_value_json(&r, 0, FC_DOC_GENERATED, FC_JSON_ORJSON, out, sizeof out, ends, state) == 1);
        CHECK(fc_doc_scalars(&r, 0, keys, row_of, kind, 64, &count, state) == 1);
        CHECK(count <= n);
        uint64_t key[2];
        int rc = fc_scalar_key(p, n, key);
        CHECK(rc == 0 || rc == 1 || rc == -EBADMSG);
        free(p);
    }
}

static char g_ref[4096];
static uint64_t g_ref_len;

static void *writer(void *arg)
{
    const fc_doc_rows *r = arg;
    for (int k = 0; k < 200; k++) {
        char out[4096];
        uint64_t ends[NROWS];
        uint8_t state[NROWS];
        int64_t n = fc_docs_json(r, 0, NULL, 0, FC_JSON_ORJSON, '\n', out, sizeof out, ends, state);
        CHECKX(n == 3 && ends[2] == g_ref_len && !memcmp(out, g_ref, g_ref_len));
    }
    return NULL;
}

static void test_threads(void)
{
    fc_doc_rows r = make_rows();
    uint64_t ends[NROWS];
    uint8_t state[NROWS];
    CHECK(fc_docs_json(&r, 0, NULL, 0, FC_JSON_ORJSON, '\n', g_ref, sizeof g_ref, ends, state) == 3);
    g_ref_len = ends[2];
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        CHECK(pthread_create(&th[i], NULL, writer, &r) == 0);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
}

int main(void)
{
    static const fc_test tests[] = {
        {"whole_documents", test_whole_documents},
        {"projection", test_projection},
        {"left_to_python", test_left_to_python},
        {"value_columns", test_value_columns},
        {"buffer_too_small", test_buffer_too_small},
        {"lineage_keys", test_lineage_keys},
        {"doubles", test_doubles},
        {"garbage", test_garbage},
        {"threads", test_threads},
    };
    return FC_RUN_TESTS(tests);
}
