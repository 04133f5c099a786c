/*
 * batch.c -- batch frames: the frame writer (shared with spill.c),
 * fc_ring_pack and fc_batch_validate.  Frame layout: fc_format.h
 * (fc_batch_header).  Uses crc32c.c and the ring inlines of internal.h.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------------ */
/* Frame helpers                                                       */
/* ------------------------------------------------------------------ */

/* Sum of string lengths of ids [0, n); -1 if the table is corrupt. */
static int64_t strings_sum(struct fc_ring *r, uint32_t n)
{
    uint64_t sum = 0;
    uint32_t i = 0;
    if (n >= r->sc_count) {
        sum = r->sc_bytes;
        i = r->sc_count;
    }
    for (; i < n; i++) {
        uint32_t l;
        if (!fc__string_at(r, i, &l))
            return -1;
        sum += l;
    }
    if (n >= r->sc_count) {
        r->sc_count = n;
        r->sc_bytes = sum;
    }
    return (int64_t)sum;
}

/* Writes the string table for ids [0, n) at dst; returns bytes written
 * (padded to 8 with zeros). */
uint64_t fc__write_strings(struct fc_ring *r, uint8_t *dst, uint32_t n)
{
    uint8_t *p = dst, *b = dst + (uint64_t)n * 4u;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t l = 0;
        const uint8_t *s = fc__string_at(r, i, &l);
        memcpy(p + (uint64_t)i * 4u, &l, 4);
        if (l)
            memcpy(b, s, l);
        b += l;
    }
    uint64_t used = (uint64_t)(b - dst), padded = FC__ALIGN8(used);
    memset(b, 0, padded - used);
    return padded;
}

uint64_t fc__finish_frame(uint8_t *buf, uint32_t flags, uint64_t job_id,
                          uint64_t ring_uid, uint64_t seq, uint32_t n,
                          uint32_t nstr, uint64_t pay, uint64_t strtab,
                          uint32_t rank)
{
    fc_batch_header h;
    memset(&h, 0, sizeof h);
    h.magic = FC_BATCH_MAGIC;
    h.version = FC_FORMAT_VERSION;
    h.header_size = FC_BATCH_HEADER_SIZE;
    h.flags = flags;
    h.job_id = job_id;
    h.ring_uid = ring_uid;
    h.seq = seq;
    h.records_off = FC_BATCH_HEADER_SIZE;
    h.payload_off = h.records_off + (uint64_t)n * FC_RECORD_SIZE;
    h.payload_bytes = pay;
    h.strings_off = h.payload_off + pay;
    h.total_len = h.strings_off + strtab;
    h.record_count = n;
    h.string_count = nstr;
    h.rank = rank;
    h.crc32c = 0;
    memcpy(buf, &h, sizeof h);
    uint32_t c = fc_crc32c(0, buf + FC_BATCH_HEADER_SIZE,
                           h.total_len - FC_BATCH_HEADER_SIZE);
    c = fc_crc32c(c, buf, FC_BATCH_HEADER_SIZE);
    memcpy(buf + offsetof(fc_batch_header, crc32c), &c, 4);
    return h.total_len;
}

/* ------------------------------------------------------------------ */
/* Ring pack                                                           */
/* ------------------------------------------------------------------ */

static inline uint64_t load_stamp(const struct fc_ring *r, uint64_t p)
{
    const fc_ring_slot *s = (const fc_ring_slot *)(r->data + (p & r->mask));
    return atomic_load_explicit((_Atomic uint64_t *)&s->stamp,
                                memory_order_acquire);
}

/* Parses the committed slot at p; returns its size (0 = not sane) and the
 * record (NULL for padding). */
static inline __attribute__((always_inline)) uint64_t
slot_parse(const struct fc_ring *r, uint64_t p, uint64_t limit,
           const fc_task_record **rec)
{
    uint64_t off = p & r->mask, rem = r->cap - off;
    *rec = NULL;
    if (__builtin_expect(rem < FC_RING_SLOT_HDR, 0))
        return limit - p >= rem ? rem : 0;
    const fc_ring_slot *s = (const fc_ring_slot *)(r->data + off);
    uint32_t len = s->len, type = s->type;
    if (__builtin_expect(type == FC_RING_SLOT_RECORD, 1)) {
        uint64_t size = FC_RING_SLOT_HDR + FC__ALIGN8(len);
        const fc_task_record *rc = (const fc_task_record *)(s + 1);
        if (len < FC_RECORD_SIZE || size > rem || limit - p < size ||
            (uint64_t)rc->payload_len + FC_RECORD_SIZE != len)
            return 0;
        *rec = rc;
        return size;
    }
    if (type == FC_RING_SLOT_PAD && (uint64_t)len == rem - FC_RING_SLOT_HDR &&
        limit - p >= rem)
        return rem;
    return 0;
}

struct walk {
    uint64_t end;     /* end of the covered range */
    uint32_t n;       /* records */
    uint64_t pay;     /* payload area bytes */
    uint64_t torn;    /* torn/corrupt slots skipped */
    int need_strings; /* stopped at a record whose id >= nstr */
    int nobufs;       /* a record did not fit (the first one: w->n == 0) */
    int dead;         /* -1 unknown, 0 live producer, 1 gone */
};

static __attribute__((noinline)) uint64_t scan_torn(struct fc_ring *r,
                                                    uint64_t p, uint64_t limit)
{
    uint64_t q = p + 8;
    for (; q < limit; q += 8) {
        const fc_task_record *x;
        if (load_stamp(r, q) == fc__stamp(r, q) && slot_parse(r, q, limit, &x))
            break;
    }
    return q < limit ? q : limit;
}

/* Walks slots from p to at most limit, copying the records it takes to
 * out_recs (each record's payload_off temporarily holds the ring offset of
 * its slot >> 3; see copy_payloads).  room = bytes available for
 * records+payloads. */
static void walk(struct fc_ring *r, uint64_t p, uint64_t limit, uint32_t nstr,
                 uint32_t max_n, uint64_t room, int skip_bad_ids,
                 uint8_t *out_recs, struct walk *w)
{
    w->end = p;
    w->n = 0;
    w->pay = 0;
    w->torn = 0;
    w->need_strings = 0;
    w->nobufs = 0;
    uint64_t used = 0;
    while (p < limit) {
        const fc_task_record *rec = NULL;
        uint64_t sz = 0;
        if (__builtin_expect(load_stamp(r, p) == fc__stamp(r, p), 1))
            sz = slot_parse(r, p, limit, &rec);
        if (__builtin_expect(sz && rec && rec->activity_id >= nstr &&
                             rec->activity_id != FC_ACTIVITY_OVERFLOW, 0)) {
            if (!skip_bad_ids) {
                w->need_strings = 1;
                break;
            }
            w->torn++; /* a committed record naming no string: skip it */
            p += sz;
            w->end = p;
            continue;
        }
        if (__builtin_expect(!sz, 0)) {
            if (w->dead < 0)
                w->dead = fc__producer_gone(r);
            if (!w->dead)
                break; /* a live producer will commit it */
            p = scan_torn(r, p, limit);
            w->torn++;
            w->end = p;
            continue;
        }
        if (__builtin_expect(rec != NULL, 1)) {
            if (w->n >= max_n)
                break;
            uint32_t plen = rec->payload_len;
            uint64_t need = FC_RECORD_SIZE + FC__ALIGN8(plen);
            if (need > room - used) {
                w->nobufs = 1;
                break;
            }
            uint8_t *d = out_recs + (uint64_t)w->n * FC_RECORD_SIZE;
            memcpy(d, rec, FC_RECORD_SIZE);
            uint32_t so = (uint32_t)((p & r->mask) >> 3);
            memcpy(d + offsetof(fc_task_record, payload_off), &so, 4);
            used += need;
            w->n++;
            w->pay += FC__ALIGN8(plen);
        }
        p += sz;
        w->end = p;
    }
}

/* Second step: payloads to the payload area, payload_off fixed up. */
static void copy_payloads(struct fc_ring *r, uint8_t *recs, uint32_t n,
                          uint8_t *pay)
{
    uint32_t po = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint8_t *d = recs + (uint64_t)i * FC_RECORD_SIZE;
        uint32_t plen, so;
        memcpy(&plen, d + offsetof(fc_task_record, payload_len), 4);
        memcpy(&so, d + offsetof(fc_task_record, payload_off), 4);
        memcpy(d + offsetof(fc_task_record, payload_off), &po, 4);
        if (plen) {
            const uint8_t *src = r->data + ((uint64_t)so << 3) +
                                 FC_RING_SLOT_HDR + FC_RECORD_SIZE;
            memcpy(pay + po, src, plen);
            uint32_t padn = (uint32_t)FC__ALIGN8(plen) - plen;
            if (padn)
                memset(pay + po + plen, 0, padn);
            po += (uint32_t)FC__ALIGN8(plen);
        }
    }
}

int64_t fc_ring_pack(fc_ring *r, void *bufv, uint64_t cap,
                     uint32_t max_records, uint64_t *consumed)
{
    if (!r || !bufv || !consumed || max_records == 0)
        return -EINVAL;
    uint8_t *buf = bufv;
    struct fc_ring_shm *h = r->shm;
    *consumed = 0;
    if (cap > FC__MAX_FRAME)
        cap = FC__MAX_FRAME; /* payload_off is 32-bit */
    uint64_t t = atomic_load_explicit(&h->tail, memory_order_acquire);
    uint64_t pe = atomic_load_explicit(&h->pending_end, memory_order_acquire);
    uint32_t nstr;
    int64_t ssum;
    uint64_t strtab, fixed;
    struct walk w;
    int repack = pe > t;

    if (repack) {
        /* exactly [tail, pending_end) again, same string table */
        uint64_t ps = atomic_load_explicit(&h->pending_strings,
                                           memory_order_relaxed);
        if (pe - t > r->cap || ps > fc__string_count(r))
            return -EBADMSG;
        nstr = (uint32_t)ps;
        ssum = strings_sum(r, nstr);
        if (ssum < 0)
            return -EBADMSG;
        strtab = FC__ALIGN8((uint64_t)nstr * 4u + (uint64_t)ssum);
        fixed = FC_BATCH_HEADER_SIZE + strtab;
        w.dead = 1;
        walk(r, t, pe, nstr, UINT32_MAX, cap >= fixed ? cap - fixed : 0, 1,
             buf + FC_BATCH_HEADER_SIZE, &w);
        if (w.nobufs)
            return -ENOBUFS;
        if (w.end != pe)
            return -EBADMSG;
        if (w.n == 0) {
            /* nothing but torn/padding: release it ourselves */
            atomic_store_explicit(&h->tail, pe, memory_order_release);
            atomic_store_explicit(&h->pending_end, 0, memory_order_release);
            return 0;
        }
    } else {
        uint64_t hd = atomic_load_explicit(&h->head, memory_order_acquire);
        if (hd - t > r->cap)
            return -EBADMSG;
        nstr = fc__string_count(r);
        int skip_bad = 0;
        w.dead = -1;
        for (;;) {
            ssum = strings_sum(r, nstr);
            if (ssum < 0)
                return -EBADMSG;
            strtab = FC__ALIGN8((uint64_t)nstr * 4u + (uint64_t)ssum);
            fixed = FC_BATCH_HEADER_SIZE + strtab;
            uint64_t room = cap >= fixed ? cap - fixed : 0;
            walk(r, t, hd, nstr, max_records, room, skip_bad,
                 buf + FC_BATCH_HEADER_SIZE, &w);
            if (!w.need_strings)
                break;
            uint32_t n2 = fc__string_count(r);
            if (n2 > nstr)
                nstr = n2;
            else
                skip_bad = 1;
        }
        if (w.nobufs && w.n == 0)
            return -ENOBUFS;
        if (w.n == 0) {
            if (w.end > t) {
                /* only torn records / padding: skip them now */
                atomic_fetch_add_explicit(&h->torn, w.torn,
                                          memory_order_relaxed);
                atomic_store_explicit(&h->tail, w.end, memory_order_release);
            }
            return 0;
        }
        pe = w.end;
    }

    uint8_t *recs = buf + FC_BATCH_HEADER_SIZE;
    uint8_t *pay = recs + (uint64_t)w.n * FC_RECORD_SIZE;
    copy_payloads(r, recs, w.n, pay);
    fc__write_strings(r, pay + w.pay, nstr);
    uint32_t clock = atomic_load_explicit(&h->clock_flags, memory_order_relaxed) &
                     FC_BATCH_FLAG_CLOCK_TSC;
    uint64_t total = fc__finish_frame(buf, clock, h->job_id, h->ring_uid, t, w.n,
                                     nstr, w.pay, strtab, h->rank);
    if (!repack) {
        atomic_fetch_add_explicit(&h->torn, w.torn, memory_order_relaxed);
        atomic_store_explicit(&h->pending_strings, nstr, memory_order_relaxed);
        atomic_store_explicit(&h->pending_end, pe, memory_order_release);
    }
    *consumed = pe - t;
    return (int64_t)total;
}

/* ------------------------------------------------------------------ */
/* Summary                                                             */
/* ------------------------------------------------------------------ */

int fc_batch_summarize(const void *bufv, uint64_t len, fc_batch_summary *out,
                       uint32_t *acts, uint64_t *wfs, uint32_t max_wfs)
{
    const uint8_t *buf = bufv;
    fc_batch_header h;
    if (!buf || !out || len < FC_BATCH_HEADER_SIZE)
        return -EBADMSG;
    memcpy(&h, buf, sizeof h);
    if (h.records_off > len || (uint64_t)h.record_count > (len - h.records_off) / FC_RECORD_SIZE ||
        (uint64_t)h.string_count > len / 4)   /* each string has a 4-byte length */
        return -EBADMSG;
    memset(out, 0, sizeof *out);
    out->t0 = out->e0 = INT64_MAX;
    out->t1 = out->s1 = INT64_MIN;
    out->id0 = UINT64_MAX;
    out->r0 = UINT32_MAX;
    /* one bit per string id: which activity ids occur */
    uint32_t words = (h.string_count + 63) / 64;
    uint64_t *seen = words ? calloc(words, sizeof *seen) : NULL;
    if (words && !seen)
        return -ENOMEM;
    int rc = 0;
    const uint8_t *p = buf + h.records_off;
    for (uint32_t i = 0; i < h.record_count; i++, p += FC_RECORD_SIZE) {
        fc_task_record r;
        memcpy(&r, p, sizeof r);
        if (r.flags & FC_FLAG_WORKFLOW) {
            out->workflows++;
            continue;
        }
        out->tasks++;
        if (r.start_ns < out->t0) out->t0 = r.start_ns;
        if (r.start_ns > out->s1) out->s1 = r.start_ns;
        if (r.end_ns > out->t1) out->t1 = r.end_ns;
        if (r.end_ns < out->e0) out->e0 = r.end_ns;
        if (r.task_id < out->id0) out->id0 = r.task_id;
        if (r.task_id > out->id1) out->id1 = r.task_id;
        if (r.rank < out->r0) out->r0 = r.rank;
        if (r.rank > out->r1) out->r1 = r.rank;
        out->errors += r.status == FC_STATUS_ERROR;
        if (r.activity_id == FC_ACTIVITY_OVERFLOW)
            out->overflow++;
        else if (r.activity_id < h.string_count)
            seen[r.activity_id / 64] |= 1ull << (r.activity_id % 64);
        else
            rc = -E2BIG;
        /* workflow ids: almost always one; kept sorted */
        uint32_t k = 0;
        while (k < out->n_wfs && wfs[k] < r.workflow_id)
            k++;
        if (k == out->n_wfs || wfs[k] != r.workflow_id) {
            if (out->n_wfs == max_wfs) {
                rc = -E2BIG;
                continue;
            }
            memmove(wfs + k + 1, wfs + k, (out->n_wfs - k) * sizeof *wfs);
            wfs[k] = r.workflow_id;
            out->n_wfs++;
        }
    }
    for (uint32_t w = 0; w < words; w++)
        for (uint64_t bits = seen[w]; bits; bits &= bits - 1)
            acts[out->n_acts++] = w * 64 + (uint32_t)__builtin_ctzll(bits);
    free(seen);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Validation                                                          */
/* ------------------------------------------------------------------ */

int fc_batch_validate(const void *bufv, uint64_t len)
{
    const uint8_t *buf = bufv;
    fc_batch_header h;
    if (!buf || len < FC_BATCH_HEADER_SIZE)
        return -EMSGSIZE;
    memcpy(&h, buf, sizeof h);
    if (h.magic != FC_BATCH_MAGIC)
        return -EBADMSG;
    if (h.version != FC_FORMAT_VERSION)
        return -EPROTO;
    if (h.header_size != FC_BATCH_HEADER_SIZE)
        return -EBADMSG;
    if (h.total_len != len)
        return -EMSGSIZE;
    uint32_t c = fc_crc32c(0, buf + FC_BATCH_HEADER_SIZE,
                           len - FC_BATCH_HEADER_SIZE);
    fc_batch_header z = h;
    z.crc32c = 0;
    c = fc_crc32c(c, &z, sizeof z);
    if (c != h.crc32c)
        return -EILSEQ;
    if (len & 7)
        return -EBADMSG;
    /* sections: header | records | payload | strings, contiguous */
    uint64_t n = h.record_count, s = h.string_count;
    if (h.records_off != FC_BATCH_HEADER_SIZE)
        return -EBADMSG;
    if (n * FC_RECORD_SIZE > len - h.records_off)
        return -EBADMSG;
    if (h.payload_off != h.records_off + n * FC_RECORD_SIZE)
        return -EBADMSG;
    if (h.payload_bytes > len - h.payload_off)
        return -EBADMSG;
    if (h.strings_off != h.payload_off + h.payload_bytes)
        return -EBADMSG;
    if (s * 4u > len - h.strings_off)
        return -EBADMSG;
    uint64_t sbytes = 0, avail = len - h.strings_off - s * 4u;
    for (uint64_t i = 0; i < s; i++) {
        uint32_t l;
        memcpy(&l, buf + h.strings_off + i * 4u, 4);
        if (l > avail - sbytes)
            return -EBADMSG;
        sbytes += l;
    }
    if (FC__ALIGN8(h.strings_off + s * 4u + sbytes) != len)
        return -EBADMSG;
    for (uint64_t i = 0; i < n; i++) {
        fc_task_record rc;
        memcpy(&rc, buf + h.records_off + i * FC_RECORD_SIZE, sizeof rc);
        if ((uint64_t)rc.payload_off + rc.payload_len > h.payload_bytes)
            return -ERANGE;
        if ((uint64_t)rc.activity_id >= s &&
            (rc.activity_id != FC_ACTIVITY_OVERFLOW ||
             !fc__name_prefix_ok(rc.flags, buf + h.payload_off + rc.payload_off,
                                 rc.payload_len)))
            return -ERANGE;
    }
    return 0;
}
