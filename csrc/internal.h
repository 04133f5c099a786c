/*
 * internal.h -- the process-local ring handle and the helpers the C files
 * share.  Not part of the ABI: the ring and spill file formats other
 * processes read are fc_format.h; the API is flowcept.h.
 *
 * Dependencies between the C files (no cycles):
 *   crc32c.c  <- spill.c, batch.c
 *   ring.c    <- spill.c (fc__spill_append), batch.c, capture.c
 *   spill.c   <- ring.c calls fc__spill_append through this header
 *   jobid.c   <- capture.c
 * ring.c and spill.c meet only in the declarations below.
 */
#ifndef FC_INTERNAL_H
#define FC_INTERNAL_H

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/types.h>
#include <unistd.h>
#include <stdint.h>
#include <stddef.h>
#include <string.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "flowcept.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define FC__CLOCK_HAVE_TSC 1
#include <cpuid.h>
#include <x86intrin.h>
#else
#define FC__CLOCK_HAVE_TSC 0
#endif

#define FC__PAGE FC_RING_PAGE
#define FC__MAX_PAYLOAD (1u << 30)
/* pack keeps (slot offset >> 3) in a u32 while packing */
#define FC__MAX_CAPACITY (1ull << 34)

#define FC__ALIGN8(x) (((uint64_t)(x) + 7u) & ~(uint64_t)7u)

/* Process-local handle. */
struct fc_ring {
    struct fc_ring_shm *shm;
    uint8_t *data;              /* data area */
    uint32_t *str_offs;         /* max_strings offsets */
    uint8_t *str_bytes;         /* strings_bytes bytes */
    uint64_t cap;
    uint64_t mask;
    uint64_t key;               /* stamp_key */
    size_t map_len;
    int is_producer;
    int full_policy;
    int64_t block_timeout_ns;
    /* spill (producer side, slow path) */
    pthread_mutex_t spill_mu;
    int spill_fd;
    char spill_path[FC_SPILL_PATH_MAX];
    /* consumer-side cache of string lengths (single consumer) */
    uint32_t sc_count;
    uint64_t sc_bytes;
};

static inline uint64_t fc__stamp(const struct fc_ring *r, uint64_t p)
{
    return p ^ r->key;
}

/* ---- shared between the C files (global fc__ symbols) ---- */

/* Is the producer of this ring dead or closed?  (syscall: slow path) */
static inline int fc__producer_gone(const struct fc_ring *r)
{
    if (atomic_load_explicit(&r->shm->closed, memory_order_acquire))
        return 1;
    pid_t pid = (pid_t)r->shm->producer_pid;
    if (pid <= 0)
        return 1;
    if (kill(pid, 0) == 0)
        return 0;
    return errno == ESRCH;
}

/* A string table entry; NULL if out of range/corrupt. */
static inline const uint8_t *fc__string_at(const struct fc_ring *r,
                                           uint32_t id, uint32_t *len)
{
    uint32_t sb = r->shm->strings_bytes;
    uint32_t off = r->str_offs[id];
    if (off > sb || sb - off < 2)
        return NULL;
    uint16_t l;
    memcpy(&l, r->str_bytes + off, 2);
    if ((uint32_t)l > sb - off - 2)
        return NULL;
    *len = l;
    return r->str_bytes + off + 2;
}

/* Published string count, bounded by the table size (acquire). */
static inline uint32_t fc__string_count(const struct fc_ring *r)
{
    uint32_t n = atomic_load_explicit(&r->shm->string_count,
                                      memory_order_acquire);
    return n > r->shm->max_strings ? r->shm->max_strings : n;
}

/* An FC_ACTIVITY_OVERFLOW record is well-formed: FC_FLAG_NAME_IN_PAYLOAD
 * set and the payload starts with [u16 n <= FC_NAME_MAX][n bytes]. */
static inline int fc__name_prefix_ok(uint16_t flags, const void *payload,
                                     uint64_t plen)
{
    if (!(flags & FC_FLAG_NAME_IN_PAYLOAD) || plen < 2 || !payload)
        return 0;
    const uint8_t *p = payload;
    uint32_t n = (uint32_t)p[0] | (uint32_t)p[1] << 8;
    return n <= FC_NAME_MAX && 2u + (uint64_t)n <= plen;
}

/* spill.c: appends one record to the ring's spill file (opened on first
 * use, under r->spill_mu) and counts it as spilled (returns 1) or, on
 * failure, as dropped (returns -errno). */
int fc__spill_append(struct fc_ring *r, const fc_task_record *rec,
                     const void *payload, uint32_t plen);

/* Frame writers shared by batch.c (ring pack) and spill.c (spill pack). */
uint64_t fc__write_strings(struct fc_ring *r, uint8_t *dst, uint32_t n);
uint64_t fc__finish_frame(uint8_t *buf, uint32_t flags, uint64_t job_id,
                          uint64_t ring_uid, uint64_t seq, uint32_t n,
                          uint32_t nstr, uint64_t pay, uint64_t strtab,
                          uint32_t rank);
#define FC__MAX_FRAME (1ull << 31)

/* ---- the record clock ----
 * Records hold CLOCK_REALTIME nanoseconds.  A vDSO clock_gettime costs
 * about 30 ns on the machines measured, rdtsc about 12 ns, and a begin/end
 * pair takes two timestamps, so where the TSC is invariant a thread reads
 * the TSC and extrapolates from its last (tsc, CLOCK_REALTIME) anchor:
 *   ns = anchor_ns + ((tsc - anchor_tsc) * mult >> FC__CLOCK_SHIFT)
 * The rate (mult) is the TSC against CLOCK_MONOTONIC since the process
 * baseline (a growing baseline, immune to realtime steps), refined at each
 * re-anchor.  A thread re-anchors with a CLOCK_REALTIME read once its
 * anchor is span_ns old (1 ms at most; shortened while the prediction
 * misses by more than FC__CLOCK_MISS_NS, e.g. while NTP slews fast).
 * Until the baseline is long enough, and wherever the TSC is not invariant
 * or the kernel itself does not use it, every timestamp is a
 * clock_gettime(CLOCK_REALTIME).
 *
 * The thread state (struct fc__clock, zero-initialised) lives in the
 * caller's thread-local data; the process baseline is a static of this
 * header, so each translation unit that uses the clock keeps its own (a
 * compiled module can use it without linking the library). */

#define FC__CLOCK_SHIFT 32
#define FC__CLOCK_BASELINE_NS 10000000ll  /* the rate is measured over >= 10 ms */
#define FC__CLOCK_SPAN_MAX_NS 1000000ll   /* a thread re-anchors at least each 1 ms */
#define FC__CLOCK_SPAN_MIN_NS 15625ll
#define FC__CLOCK_MISS_NS 250  /* prediction error that shortens the span, */
#define FC__CLOCK_HIT_NS 100   /* ... and that lets it grow back */
#define FC__CLOCK_FLOOR_NS 250 /* a thread's clock does not step back at a
                                  re-anchor by up to this */
#define FC__CLOCK_BRACKET_NS 500 /* widest TSC bracket of an anchor's clock
                                    read (an interrupted read is retried) */

struct fc__clock {
    uint64_t anchor_tsc;
    uint64_t max_delta;  /* ticks extrapolated from the anchor; 0: no TSC (yet) */
    uint64_t mult;       /* ns per tick << FC__CLOCK_SHIFT */
    int64_t anchor_ns;   /* CLOCK_REALTIME at anchor_tsc */
    int64_t floor_ns;    /* nothing earlier is returned until the next anchor */
    int64_t span_ns;
    int64_t retry_ns;    /* no anchor is tried before (after a refused one) */
};

static inline int64_t fc__realtime_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

#if FC__CLOCK_HAVE_TSC

/* The process baseline: state 0 unset, 1 being set, 2 set (the fields
 * valid, published with release), -1 the TSC is not used. */
struct fc__clock_base {
    _Atomic int state;
    uint64_t tsc;
    uint64_t width;  /* TSC bracket of the CLOCK_MONOTONIC read */
    int64_t mono_ns;
    int64_t real_ns;
};

static inline struct fc__clock_base *fc__clock_base(void)
{
    static struct fc__clock_base base;
    return &base;
}

/* One (tsc, clock) pair, the best (narrowest TSC bracket) of `tries`
 * clock reads between ordered TSC reads, the tsc their midpoint.  Returns
 * the bracket width in ticks. */
static inline uint64_t fc__clock_sample(clockid_t id, int tries,
                                        uint64_t *tsc, int64_t *ns)
{
    uint64_t best = UINT64_MAX;
    for (int i = 0; i < tries; i++) {
        struct timespec ts;
        _mm_lfence();
        uint64_t a = __rdtsc();
        _mm_lfence();
        clock_gettime(id, &ts);
        _mm_lfence();
        uint64_t b = __rdtsc();
        if (i == 0 || b - a < best) {
            best = b - a;
            *tsc = a + (b - a) / 2;
            *ns = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
        }
    }
    return best;
}

/* Can timestamps be extrapolated from the TSC?  An invariant TSC (CPUID),
 * which the kernel also trusts for its own clock (clocksource "tsc": it
 * checks that the TSCs of all CPUs agree), and FLOWCEPT_CLOCK is not
 * "realtime". */
static inline int fc__clock_tsc_ok(void)
{
    const char *env = getenv("FLOWCEPT_CLOCK");
    if (env && strcmp(env, "realtime") == 0)
        return 0;
    unsigned a, b, c, d;
    if (!__get_cpuid(0x80000000u, &a, &b, &c, &d) || a < 0x80000007u)
        return 0;
    __get_cpuid(0x80000007u, &a, &b, &c, &d);
    if (!(d & (1u << 8)))
        return 0;
    FILE *f = fopen("/sys/devices/system/clocksource/clocksource0/current_clocksource", "re");
    if (!f)
        return 0;
    char name[32] = "";
    int ok = fgets(name, sizeof name, f) && strcmp(name, "tsc\n") == 0;
    fclose(f);
    return ok;
}

static __attribute__((noinline, unused)) void fc__clock_init(struct fc__clock_base *b)
{
    int expect = 0;
    if (!atomic_compare_exchange_strong_explicit(&b->state, &expect, 1,
            memory_order_acq_rel, memory_order_acquire))
        return; /* set, or being set by another thread */
    if (!fc__clock_tsc_ok()) {
        atomic_store_explicit(&b->state, -1, memory_order_release);
        return;
    }
    uint64_t t;
    b->width = fc__clock_sample(CLOCK_MONOTONIC, 5, &b->tsc, &b->mono_ns);
    fc__clock_sample(CLOCK_REALTIME, 1, &t, &b->real_ns);
    atomic_store_explicit(&b->state, 2, memory_order_release);
}

/* Does this translation unit's clock extrapolate from the TSC (or will it,
 * once the baseline is long enough)?  Decided once per process. */
static inline int fc__clock_uses_tsc(void)
{
    struct fc__clock_base *b = fc__clock_base();
    int s = atomic_load_explicit(&b->state, memory_order_acquire);
    if (s == 0) {
        fc__clock_init(b);
        s = atomic_load_explicit(&b->state, memory_order_acquire);
    }
    while (s == 1) { /* another thread is deciding (microseconds) */
        _mm_pause();
        s = atomic_load_explicit(&b->state, memory_order_acquire);
    }
    return s == 2;
}

static inline int64_t fc__clock_ticks_ns(uint64_t ticks, uint64_t mult)
{
    return (int64_t)(((unsigned __int128)ticks * mult) >> FC__CLOCK_SHIFT);
}

/* The slow path: no anchor yet, or the anchor is too old. */
static __attribute__((noinline, unused)) int64_t fc__clock_slow(struct fc__clock *c)
{
    struct fc__clock_base *b = fc__clock_base();
    int s = atomic_load_explicit(&b->state, memory_order_acquire);
    if (s == 0) {
        fc__clock_init(b);
        s = atomic_load_explicit(&b->state, memory_order_acquire);
    }
    if (s != 2)
        return fc__realtime_ns();
    if (!c->max_delta) {
        /* the baseline is still short, or an anchor was refused lately:
         * one read, as without the TSC */
        int64_t now = fc__realtime_ns();
        if (now - b->real_ns < FC__CLOCK_BASELINE_NS || now < c->retry_ns)
            return now;
    }
    c->max_delta = 0; /* until the anchor below is accepted */
    c->retry_ns = 0;
    uint64_t tm, tr;
    int64_t mono, real;
    uint64_t wm = fc__clock_sample(CLOCK_MONOTONIC, 2, &tm, &mono);
    uint64_t wr = fc__clock_sample(CLOCK_REALTIME, 2, &tr, &real);
    int64_t baseline = mono - b->mono_ns;
    if (baseline < FC__CLOCK_BASELINE_NS || tm <= b->tsc)
        return real;
    c->retry_ns = real + FC__CLOCK_SPAN_MAX_NS; /* if refused below */
    uint64_t mult = (uint64_t)(((unsigned __int128)(uint64_t)baseline
                                << FC__CLOCK_SHIFT) / (tm - b->tsc));
    if (!mult) /* over 2^32 ticks per ns: not a TSC */
        return real;
    /* The brackets' halves bound the reads' errors: an anchor within
     * FC__CLOCK_BRACKET_NS / 2, and a rate error (base + this read over the
     * baseline) of at most 1e-4, 100 ns over the longest span. */
    if (fc__clock_ticks_ns(wm, mult) > FC__CLOCK_BRACKET_NS ||
        fc__clock_ticks_ns(wr, mult) > FC__CLOCK_BRACKET_NS ||
        (fc__clock_ticks_ns(b->width, mult) + FC__CLOCK_BRACKET_NS) / 2 >
            baseline / 10000)
        return real;
    int64_t floor = INT64_MIN;
    /* a thread starts short and doubles the span while its predictions hit */
    int64_t span = c->span_ns ? c->span_ns : FC__CLOCK_SPAN_MIN_NS;
    uint64_t d = tr - c->anchor_tsc;
    if (c->mult && tr >= c->anchor_tsc && fc__clock_ticks_ns(d, c->mult) <= 2 * span) {
        /* how far off was the old anchor, just past its span? */
        int64_t pred = c->anchor_ns + fc__clock_ticks_ns(d, c->mult);
        int64_t err = pred - real;
        int64_t mag = err < 0 ? -err : err;
        if (mag > FC__CLOCK_MISS_NS)
            span = span / 4 > FC__CLOCK_SPAN_MIN_NS ? span / 4 : FC__CLOCK_SPAN_MIN_NS;
        else if (mag < FC__CLOCK_HIT_NS)
            span = span * 2 < FC__CLOCK_SPAN_MAX_NS ? span * 2 : FC__CLOCK_SPAN_MAX_NS;
        if (err > 0 && err <= FC__CLOCK_FLOOR_NS)
            floor = pred; /* what this thread may already have returned */
    }
    uint64_t ticks = (uint64_t)(((unsigned __int128)(uint64_t)span << FC__CLOCK_SHIFT) / mult);
    uint64_t fit = UINT64_MAX / mult; /* d * mult stays within 64 bits */
    c->span_ns = span;
    c->mult = mult;
    c->anchor_tsc = tr;
    c->anchor_ns = real;
    c->floor_ns = floor;
    c->retry_ns = 0;
    c->max_delta = ticks < fit ? (ticks ? ticks : 1) : fit;
    return real > floor ? real : floor;
}

/* CLOCK_REALTIME nanoseconds, for the calling thread's clock state. */
static inline int64_t fc__clock_ns(struct fc__clock *c)
{
    uint64_t d = __rdtsc() - c->anchor_tsc;
    if (__builtin_expect(d < c->max_delta, 1)) {
        int64_t v = c->anchor_ns + (int64_t)((d * c->mult) >> FC__CLOCK_SHIFT);
        return v > c->floor_ns ? v : c->floor_ns;
    }
    return fc__clock_slow(c);
}

#else /* no TSC: every timestamp is a clock_gettime */

static inline int fc__clock_uses_tsc(void)
{
    return 0;
}

static inline int64_t fc__clock_ns(struct fc__clock *c)
{
    (void)c;
    return fc__realtime_ns();
}

#endif /* FC__CLOCK_HAVE_TSC */

/* ---- test helper: reserve a slot and write its header but never commit
 * it (what a producer killed between reserve and commit leaves behind).
 * Returns the absolute position of the slot or UINT64_MAX when full. ---- */
static inline uint64_t fc__test_reserve_torn(struct fc_ring *r,
                                             uint32_t payload_len)
{
    uint64_t need = FC_RING_SLOT_HDR + FC_RECORD_SIZE + FC__ALIGN8(payload_len);
    uint64_t h = atomic_load_explicit(&r->shm->head, memory_order_relaxed);
    for (;;) {
        uint64_t off = h & r->mask, rem = r->cap - off;
        uint64_t total = need <= rem ? need : rem + need;
        uint64_t t = atomic_load_explicit(&r->shm->tail, memory_order_acquire);
        if (h + total - t > r->cap)
            return UINT64_MAX;
        if (atomic_compare_exchange_weak_explicit(&r->shm->head, &h, h + total,
                memory_order_relaxed, memory_order_relaxed)) {
            uint64_t p = h;
            if (total != need) { /* leave the padding torn too */
                p = h + rem;
            }
            fc_ring_slot *s = (fc_ring_slot *)(r->data + (p & r->mask));
            s->len = (uint32_t)(FC_RECORD_SIZE + payload_len);
            s->type = FC_RING_SLOT_RECORD;
            fc_task_record *rec = (fc_task_record *)(s + 1);
            memset(rec, 0x5a, sizeof *rec); /* garbage body */
            return p;
        }
    }
}

#endif /* FC_INTERNAL_H */
