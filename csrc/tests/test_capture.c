/* test_capture.c -- the C capture API: nesting, parent ids, payloads,
 * thread ids, overflow, ids, attach/finalize, and the record clock's
 * accuracy.  Prints "N passed, M failed". */
#include "internal.h"
#include "harness.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>


static char g_path[256];

/* packs everything from the ring at g_path into buf; returns records */
static const fc_task_record *drain(uint8_t *buf, uint64_t cap, uint32_t *n,
                                   fc_ring **cons)
{
    if (fc_ring_open(g_path, cons) != 0)
        return NULL;
    uint64_t consumed;
    int64_t len = fc_ring_pack(*cons, buf, cap, 100000, &consumed);
    if (len <= 0 || fc_batch_validate(buf, (uint64_t)len) != 0)
        return NULL;
    const fc_batch_header *h = (const fc_batch_header *)buf;
    *n = h->record_count;
    fc_ring_release(*cons, h->seq + consumed);
    return (const fc_task_record *)(buf + h->records_off);
}

static const char *name_of(const uint8_t *buf, uint32_t id)
{
    static char out[256];
    const fc_batch_header *h = (const fc_batch_header *)buf;
    const uint8_t *p = buf + h->strings_off;
    const uint8_t *s = p + (uint64_t)h->string_count * 4;
    for (uint32_t i = 0; i < h->string_count; i++) {
        uint32_t l;
        memcpy(&l, p + i * 4, 4);
        if (i == id) {
            memcpy(out, s, l);
            out[l] = 0;
            return out;
        }
        s += l;
    }
    return "?";
}

static void t_not_initialised(void)
{
    CHECK(fc_task_begin("x") == 0);
    CHECK(fc_task_end(0, NULL, 0) == -ENOENT);
    CHECK(fc_capture_finalize() == 0);
}

static void t_nesting(void)
{
    unlink(g_path);
    CHECK(fc_capture_init(g_path, NULL, 0x77, 12) == 0);
    CHECK(fc_capture_init(g_path, NULL, 0x77, 12) == -EALREADY);
    uint64_t outer = fc_task_begin("outer");
    CHECK(outer != 0);
    CHECK((outer >> 40) == 12 && (outer & (1ull << 39)));
    uint64_t in1 = fc_task_begin("inner");
    CHECK(in1 != 0 && in1 != outer);
    CHECK(fc_task_end(FC_STATUS_FINISHED, "abc", 3) == 0);
    uint64_t in2 = fc_task_begin("inner");
    uint64_t in3 = fc_task_begin("deep");
    CHECK(fc_task_end(FC_STATUS_ERROR, NULL, 0) == 0);
    CHECK(fc_task_end(FC_STATUS_FINISHED, NULL, 0) == 0);
    CHECK(fc_task_end(FC_STATUS_FINISHED, "payload!", 8) == 0);
    CHECK(fc_task_end(0, NULL, 0) == -ENOENT);

    uint8_t *buf = malloc(1 << 20);
    uint32_t n = 0;
    fc_ring *c = NULL;
    const fc_task_record *r = drain(buf, 1 << 20, &n, &c);
    CHECK(r && n == 4);
    const fc_batch_header *h = (const fc_batch_header *)buf;
    /* records are in end order: inner, deep, inner, outer */
    CHECK(r[0].task_id == in1 && r[0].parent_id == outer);
    CHECK(strcmp(name_of(buf, r[0].activity_id), "inner") == 0);
    CHECK(r[0].payload_len == 3 &&
          memcmp(buf + h->payload_off + r[0].payload_off, "abc", 3) == 0);
    CHECK(r[1].task_id == in3 && r[1].parent_id == in2 &&
          r[1].status == FC_STATUS_ERROR);
    CHECK(strcmp(name_of(buf, r[1].activity_id), "deep") == 0);
    CHECK(r[2].task_id == in2 && r[2].parent_id == outer);
    CHECK(r[2].activity_id == r[0].activity_id);
    CHECK(r[3].task_id == outer && r[3].parent_id == 0);
    CHECK(strcmp(name_of(buf, r[3].activity_id), "outer") == 0);
    CHECK(r[3].payload_len == 8 &&
          memcmp(buf + h->payload_off + r[3].payload_off, "payload!", 8) == 0);
    for (uint32_t i = 0; i < 4; i++) {
        CHECK(r[i].flags == FC_FLAG_C_API && r[i].rank == 12);
        CHECK(r[i].workflow_id == 0x77);
        CHECK(r[i].end_ns >= r[i].start_ns && r[i].start_ns > 1600000000ll * 1000000000);
        CHECK(r[i].thread_id == r[0].thread_id);
    }
    CHECK(r[3].start_ns <= r[0].start_ns && r[3].end_ns >= r[2].end_ns);
    fc_ring_close(c);
    CHECK(fc_capture_finalize() == 0);
    CHECK(fc_task_begin("x") == 0);
    free(buf);
}

/* string table full: tasks are still recorded, with FC_ACTIVITY_OVERFLOW
 * and their name in front of the payload */
static void t_strtab_overflow(void)
{
    unlink(g_path);
    fc_ring_options o;
    fc_ring_options_init(&o);
    o.max_strings = 2; /* "host:..." and one name */
    CHECK(fc_capture_init(g_path, &o, 0x78, 1) == 0);
    CHECK(fc_task_begin("first") != 0);
    CHECK(fc_task_end(FC_STATUS_FINISHED, NULL, 0) == 0);
    uint64_t a = fc_task_begin("second");
    CHECK(a != 0);
    uint64_t b = fc_task_begin("third"); /* nested, overflows too */
    CHECK(b != 0);
    CHECK(fc_task_end(FC_STATUS_FINISHED, NULL, 0) == 0);
    CHECK(fc_task_end(FC_STATUS_ERROR, "PP", 2) == 0);
    CHECK(fc_task_begin("second") != 0); /* cached overflow */
    CHECK(fc_task_end(FC_STATUS_FINISHED, NULL, 0) == 0);

    uint8_t *buf = malloc(1 << 20);
    uint32_t n = 0;
    fc_ring *c = NULL;
    const fc_task_record *r = drain(buf, 1 << 20, &n, &c);
    int ok = r && n == 4;
    const fc_batch_header *h = (const fc_batch_header *)buf;
    const uint8_t *pay = buf + h->payload_off;
    ok = ok && strcmp(name_of(buf, r[0].activity_id), "first") == 0 &&
         r[0].flags == FC_FLAG_C_API;
    /* third (ended first): [u16 5]["third"] */
    ok = ok && r[1].activity_id == FC_ACTIVITY_OVERFLOW && r[1].task_id == b &&
         r[1].parent_id == a &&
         r[1].flags == (FC_FLAG_C_API | FC_FLAG_NAME_IN_PAYLOAD) &&
         r[1].payload_len == 7 &&
         memcmp(pay + r[1].payload_off, "\x05\x00third", 7) == 0;
    ok = ok && r[2].activity_id == FC_ACTIVITY_OVERFLOW && r[2].task_id == a &&
         r[2].status == FC_STATUS_ERROR && r[2].payload_len == 10 &&
         memcmp(pay + r[2].payload_off, "\x06\x00secondPP", 10) == 0;
    ok = ok && r[3].activity_id == FC_ACTIVITY_OVERFLOW &&
         r[3].payload_len == 8 &&
         memcmp(pay + r[3].payload_off, "\x06\x00second", 8) == 0;
    if (c)
        fc_ring_close(c);
    fc_capture_finalize();
    free(buf);
    CHECK(ok);
}

static void t_overflow(void)
{
    unlink(g_path);
    CHECK(fc_capture_init(g_path, NULL, 1, 3) == 0);
    uint64_t ids[70];
    for (int i = 0; i < 70; i++)
        ids[i] = fc_task_begin("lvl");
    for (int i = 0; i < 64; i++)
        CHECK(ids[i] != 0);
    for (int i = 64; i < 70; i++)
        CHECK(ids[i] == 0);
    for (int i = 0; i < 70; i++)
        CHECK(fc_task_end(0, NULL, 0) == 0);
    CHECK(fc_task_end(0, NULL, 0) == -ENOENT);
    uint8_t *buf = malloc(1 << 20);
    uint32_t n = 0;
    fc_ring *c = NULL;
    const fc_task_record *r = drain(buf, 1 << 20, &n, &c);
    CHECK(r && n == 64);
    for (uint32_t i = 0; i < 64; i++) {
        CHECK(r[i].task_id == ids[63 - i]);
        CHECK(r[i].parent_id == (i == 63 ? 0 : ids[62 - i]));
    }
    fc_ring_close(c);
    free(buf);
    CHECK(fc_capture_finalize() == 0);
}

static void *thr(void *arg)
{
    (void)arg;
    for (int i = 0; i < 1000; i++) {
        uint64_t a = fc_task_begin("t_outer");
        uint64_t b = fc_task_begin("t_inner");
        if (!a || !b || fc_task_end(0, &b, 8) != 0 || fc_task_end(0, &a, 8) != 0)
            return (void *)1;
    }
    return NULL;
}

static void t_threads_and_attach(void)
{
    unlink(g_path);
    fc_ring_options o;
    fc_ring_options_init(&o);
    o.capacity = 1 << 20;
    fc_ring *r;
    CHECK(fc_ring_create(g_path, &o, &r) == 0);
    CHECK(fc_ring_intern(r, "python-side", 11) == 0);
    fc_task_set_origin(0x123456);
    CHECK(fc_capture_attach(r, 5, 99) == 0);
    pthread_t th[3];
    for (int i = 0; i < 3; i++)
        pthread_create(&th[i], NULL, thr, NULL);
    void *res;
    for (int i = 0; i < 3; i++) {
        pthread_join(th[i], &res);
        CHECK(res == NULL);
    }
    uint64_t nid = fc_task_next_id();
    CHECK((nid >> 40) == 0x123456 && (nid & (1ull << 39)));
    uint8_t *buf = malloc(1 << 20);
    uint32_t n = 0;
    fc_ring *c = NULL;
    const fc_task_record *rec = drain(buf, 1 << 20, &n, &c);
    CHECK(rec && n == 6000);
    const fc_batch_header *h = (const fc_batch_header *)buf;
    uint32_t tids[8] = { 0 };
    for (uint32_t i = 0; i < n; i++) {
        uint64_t self;
        memcpy(&self, buf + h->payload_off + rec[i].payload_off, 8);
        CHECK(self == rec[i].task_id && rec[i].payload_len == 8);
        CHECK((rec[i].task_id >> 40) == 0x123456);
        CHECK(rec[i].rank == 99 && rec[i].workflow_id == 5);
        CHECK(rec[i].thread_id < 8);
        tids[rec[i].thread_id]++;
        const char *nm = name_of(buf, rec[i].activity_id);
        CHECK(strcmp(nm, rec[i].parent_id ? "t_inner" : "t_outer") == 0);
    }
    int distinct = 0;
    for (int i = 0; i < 8; i++)
        distinct += tids[i] == 2000;
    CHECK(distinct == 3);
    fc_ring_close(c);
    CHECK(fc_capture_finalize() == 0);
    /* the ring stays usable: it is the caller's */
    CHECK(fc_ring_intern(r, "python-side", 11) == 0);
    fc_ring_close(r);
    free(buf);
}

/* ---- the record clock ---- */

/* Every timestamp within CLOCK_ERROR_NS of CLOCK_REALTIME: a value is
 * checked against the CLOCK_REALTIME reads just before and after it. */
#define CLOCK_ERROR_NS 1000
#define CLOCK_THREADS 4
#define CLOCK_RUN_NS 80000000ll /* past the baseline, many re-anchors */

#define NARROW_NS 200

static _Atomic int64_t g_clock_worst; /* largest error seen, ns */

static void note_error(int64_t lo, int64_t v, int64_t hi)
{
    int64_t e = v < lo ? lo - v : v > hi ? v - hi : 0;
    int64_t w = atomic_load(&g_clock_worst);
    while (e > w && !atomic_compare_exchange_weak(&g_clock_worst, &w, e))
        ;
}

struct clock_run {
    uint64_t calls, tsc_calls, out_of_bound;
    uint64_t narrow;       /* brackets under NARROW_NS (not preempted) */
    int64_t mid_dev_max;   /* |value - bracket midpoint| over those */
    double mid_dev_sum;
};

static void *clock_thread(void *arg)
{
    static _Thread_local struct fc__clock c; /* this file's own clock */
    struct clock_run *run = arg;
    int64_t t_end = fc__realtime_ns() + CLOCK_RUN_NS;
    for (;;) {
        int64_t lo = fc__realtime_ns();
        int64_t v = fc__clock_ns(&c);
        int64_t hi = fc__realtime_ns();
        run->calls++;
        run->tsc_calls += c.max_delta != 0;
        if (v < lo - CLOCK_ERROR_NS || v > hi + CLOCK_ERROR_NS)
            run->out_of_bound++;
        note_error(lo, v, hi);
        if (hi - lo < NARROW_NS) {
            int64_t dev = v - (lo + (hi - lo) / 2);
            dev = dev < 0 ? -dev : dev;
            run->mid_dev_max = dev > run->mid_dev_max ? dev : run->mid_dev_max;
            run->mid_dev_sum += (double)dev;
            run->narrow++;
        }
        if (hi > t_end)
            break;
    }
    return NULL;
}

static void t_clock_accuracy(void)
{
    atomic_store(&g_clock_worst, 0);
    pthread_t th[CLOCK_THREADS];
    struct clock_run run[CLOCK_THREADS];
    memset(run, 0, sizeof run);
    for (int i = 0; i < CLOCK_THREADS; i++)
        pthread_create(&th[i], NULL, clock_thread, &run[i]);
    uint64_t calls = 0, tsc = 0, bad = 0;
    int64_t dev_max = 0;
    double dev_sum = 0;
    uint64_t narrow = 0;
    for (int i = 0; i < CLOCK_THREADS; i++) {
        pthread_join(th[i], NULL);
        calls += run[i].calls;
        tsc += run[i].tsc_calls;
        bad += run[i].out_of_bound;
        dev_max = run[i].mid_dev_max > dev_max ? run[i].mid_dev_max : dev_max;
        dev_sum += run[i].mid_dev_sum;
        narrow += run[i].narrow;
        /* where the TSC is used, each thread came to use it */
        CHECK(!fc__clock_uses_tsc() || run[i].tsc_calls > 0);
    }
    fprintf(stderr, "  clock: %llu calls in %d threads, %llu from the TSC; outside "
            "the CLOCK_REALTIME bracket by at most %lld ns; off its midpoint "
            "(%llu brackets < %d ns) mean %.1f ns, max %lld ns\n",
            (unsigned long long)calls, CLOCK_THREADS, (unsigned long long)tsc,
            (long long)atomic_load(&g_clock_worst), (unsigned long long)narrow, NARROW_NS,
            narrow ? dev_sum / (double)narrow : 0, (long long)dev_max);
    CHECK(calls > 0 && bad == 0);
}

static void t_clock_env_fallback(void)
{
#if FC__CLOCK_HAVE_TSC
    setenv("FLOWCEPT_CLOCK", "realtime", 1);
    int forced = fc__clock_tsc_ok();
    unsetenv("FLOWCEPT_CLOCK");
    CHECK(forced == 0);
#endif
    struct fc__clock c;
    memset(&c, 0, sizeof c);
    int64_t lo = fc__realtime_ns(), v = fc__clock_ns(&c), hi = fc__realtime_ns();
    CHECK(v >= lo - CLOCK_ERROR_NS && v <= hi + CLOCK_ERROR_NS);
}

/* The records' timestamps, taken by capture.c's clock, from several threads
 * writing one ring: each task's [start, end] within its CLOCK_REALTIME
 * bracket, give or take CLOCK_ERROR_NS. */
#define REC_PER_THREAD 3000
struct rec_bracket {
    int64_t lo, hi;
};
static struct rec_bracket g_brackets[CLOCK_THREADS][REC_PER_THREAD];

static void *rec_thread(void *arg)
{
    uint32_t k = (uint32_t)(uintptr_t)arg;
    for (uint32_t i = 0; i < REC_PER_THREAD; i++) {
        int64_t lo = fc__realtime_ns();
        uint32_t who[2] = { k, i };
        if (!fc_task_begin("timed") || fc_task_end(0, who, sizeof who) != 0)
            return (void *)1;
        int64_t hi = fc__realtime_ns();
        g_brackets[k][i].lo = lo;
        g_brackets[k][i].hi = hi;
        while (fc__realtime_ns() < hi + 20000) /* ~60 ms in all */
            ;
    }
    return NULL;
}

static void t_clock_records(void)
{
    unlink(g_path);
    fc_ring_options o;
    fc_ring_options_init(&o);
    o.capacity = 1 << 22;
    CHECK(fc_capture_init(g_path, &o, 7, 0) == 0);
    pthread_t th[CLOCK_THREADS];
    for (uintptr_t i = 0; i < CLOCK_THREADS; i++)
        pthread_create(&th[i], NULL, rec_thread, (void *)i);
    int failed = 0;
    for (int i = 0; i < CLOCK_THREADS; i++) {
        void *res;
        pthread_join(th[i], &res);
        failed |= res != NULL;
    }
    CHECK(!failed);
    const uint64_t cap = 4u << 20;
    uint8_t *buf = malloc(cap);
    uint32_t n = 0;
    fc_ring *c = NULL;
    const fc_task_record *r = drain(buf, cap, &n, &c);
    int ok = r && n == CLOCK_THREADS * REC_PER_THREAD;
    uint32_t bad = 0;
    int64_t worst = 0;
    for (uint32_t j = 0; ok && j < n; j++) {
        const fc_batch_header *h = (const fc_batch_header *)buf;
        uint32_t who[2];
        memcpy(who, buf + h->payload_off + r[j].payload_off, sizeof who);
        if (who[0] >= CLOCK_THREADS || who[1] >= REC_PER_THREAD) {
            ok = 0;
            break;
        }
        const struct rec_bracket *b = &g_brackets[who[0]][who[1]];
        int64_t e1 = b->lo - r[j].start_ns, e2 = r[j].end_ns - b->hi;
        worst = e1 > worst ? e1 : worst;
        worst = e2 > worst ? e2 : worst;
        bad += r[j].end_ns < r[j].start_ns || e1 > CLOCK_ERROR_NS || e2 > CLOCK_ERROR_NS;
    }
    /* the ring says which clock its producer used */
    int flag_ok = c && !!(c->shm->clock_flags & FC_BATCH_FLAG_CLOCK_TSC) ==
                           fc__clock_uses_tsc();
    fprintf(stderr, "  records: %u, worst error %lld ns\n", n, (long long)worst);
    if (c)
        fc_ring_close(c);
    fc_capture_finalize();
    free(buf);
    CHECK(ok && bad == 0);
    CHECK(flag_ok);
}

int main(void)
{
    snprintf(g_path, sizeof g_path, "/tmp/fc_test_capture_%d.ring", (int)getpid());
    static const fc_test tests[] = {
        { "not_initialised", t_not_initialised },
        { "nesting", t_nesting },
        { "overflow", t_overflow },
        { "strtab_overflow", t_strtab_overflow },
        { "threads_and_attach", t_threads_and_attach },
        { "clock_accuracy", t_clock_accuracy },
        { "clock_env_fallback", t_clock_env_fallback },
        { "clock_records", t_clock_records },
    };
    int rc = FC_RUN_TESTS(tests);
    unlink(g_path);
    return rc;
}
