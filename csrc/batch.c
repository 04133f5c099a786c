/*
 * batch.c -- batch frames: fc_ring_pack, fc_spool_pack, fc_batch_validate,
 * fc_crc32c.  Frame layout: see flowcept.h (fc_batch_header).
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define FC__MAX_FRAME (1ull << 31)

#if defined(__x86_64__) || defined(__i386__)
#include <nmmintrin.h>
#define FC_HAVE_X86_CRC 1
#endif

/* ------------------------------------------------------------------ */
/* CRC32C                                                              */
/* ------------------------------------------------------------------ */

static uint32_t crc_table[8][256];
#define FC__CRC_BLK 2048u /* bytes per stream in the 3-stream loop */
static uint32_t crc_shift_blk; /* x^(8*FC__CRC_BLK) mod P, reflected */
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;
static int crc_hw; /* written once under crc_once */

static uint32_t crc_sw(uint32_t c, const uint8_t *p, uint64_t n);

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^
                              crc_table[0][crc_table[t - 1][i] & 0xff];
    static const uint8_t zeros[FC__CRC_BLK];
    crc_shift_blk = crc_sw(1u << 31, zeros, FC__CRC_BLK);
#ifdef FC_HAVE_X86_CRC
    __builtin_cpu_init();
    crc_hw = __builtin_cpu_supports("sse4.2") ? 1 : 0;
#endif
    if (getenv("FLOWCEPT_CRC_SOFT"))
        crc_hw = 0;
}

static uint32_t crc_sw(uint32_t c, const uint8_t *p, uint64_t n)
{
    while (n && ((uintptr_t)p & 7)) {
        c = (c >> 8) ^ crc_table[0][(c ^ *p++) & 0xff];
        n--;
    }
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        w ^= c;
        c = crc_table[7][w & 0xff] ^ crc_table[6][(w >> 8) & 0xff] ^
            crc_table[5][(w >> 16) & 0xff] ^ crc_table[4][(w >> 24) & 0xff] ^
            crc_table[3][(w >> 32) & 0xff] ^ crc_table[2][(w >> 40) & 0xff] ^
            crc_table[1][(w >> 48) & 0xff] ^ crc_table[0][w >> 56];
        p += 8;
        n -= 8;
    }
    while (n--)
        c = (c >> 8) ^ crc_table[0][(c ^ *p++) & 0xff];
    return c;
}

/* a(x) * b(x) mod P, reflected representation (bit 31 = x^0) */
static uint32_t crc_mulmod(uint32_t a, uint32_t b)
{
    uint32_t m = 1u << 31, p = 0;
    for (;;) {
        if (a & m) {
            p ^= b;
            if ((a & (m - 1)) == 0)
                break;
        }
        m >>= 1;
        b = b & 1 ? (b >> 1) ^ 0x82F63B78u : b >> 1;
    }
    return p;
}

#ifdef FC_HAVE_X86_CRC
__attribute__((target("sse4.2")))
static uint32_t crc_hw_run(uint32_t c, const uint8_t *p, uint64_t n)
{
    while (n && ((uintptr_t)p & 7)) {
        c = _mm_crc32_u8(c, *p++);
        n--;
    }
    uint64_t c64 = c;
    /* three independent streams hide the instruction's latency; the
     * partial crcs are combined by multiplying with x^(8*BLK) mod P */
    while (n >= 3 * FC__CRC_BLK) {
        uint64_t a = c64, b = 0, d = 0;
        const uint8_t *pa = p, *pb = p + FC__CRC_BLK, *pd = p + 2 * FC__CRC_BLK;
        for (unsigned i = 0; i < FC__CRC_BLK; i += 8) {
            uint64_t x, y, z;
            memcpy(&x, pa + i, 8);
            memcpy(&y, pb + i, 8);
            memcpy(&z, pd + i, 8);
            a = _mm_crc32_u64(a, x);
            b = _mm_crc32_u64(b, y);
            d = _mm_crc32_u64(d, z);
        }
        uint32_t k = crc_shift_blk;
        c64 = crc_mulmod(k, crc_mulmod(k, (uint32_t)a) ^ (uint32_t)b) ^
              (uint32_t)d;
        p += 3 * FC__CRC_BLK;
        n -= 3 * FC__CRC_BLK;
    }
    while (n >= 8) {
        uint64_t a;
        memcpy(&a, p, 8);
        c64 = _mm_crc32_u64(c64, a);
        p += 8;
        n -= 8;
    }
    c = (uint32_t)c64;
    while (n--)
        c = _mm_crc32_u8(c, *p++);
    return c;
}
#endif

uint32_t fc_crc32c(uint32_t crc, const void *buf, uint64_t len)
{
    pthread_once(&crc_once, crc_init);
    if (!buf || !len)
        return crc;
    uint32_t c = ~crc;
#ifdef FC_HAVE_X86_CRC
    if (crc_hw)
        return ~crc_hw_run(c, buf, len);
#endif
    return ~crc_sw(c, buf, len);
}

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
static uint64_t write_strings(struct fc_ring *r, uint8_t *dst, uint32_t n)
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

static uint64_t finish_frame(uint8_t *buf, uint32_t flags, uint64_t job_id,
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
    h.payload_off = h.records_off + (uint64_t)n * FC__REC_SIZE;
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
    const fc__slot *s = (const fc__slot *)(r->data + (p & r->mask));
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
    if (__builtin_expect(rem < FC__SLOT_HDR, 0))
        return limit - p >= rem ? rem : 0;
    const fc__slot *s = (const fc__slot *)(r->data + off);
    uint32_t len = s->len, type = s->type;
    if (__builtin_expect(type == FC__SLOT_RECORD, 1)) {
        uint64_t size = FC__SLOT_HDR + FC__ALIGN8(len);
        const fc_task_record *rc = (const fc_task_record *)(s + 1);
        if (len < FC__REC_SIZE || size > rem || limit - p < size ||
            (uint64_t)rc->payload_len + FC__REC_SIZE != len)
            return 0;
        *rec = rc;
        return size;
    }
    if (type == FC__SLOT_PAD && (uint64_t)len == rem - FC__SLOT_HDR &&
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
        if (__builtin_expect(sz && rec && rec->activity_id >= nstr, 0)) {
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
            uint64_t need = FC__REC_SIZE + FC__ALIGN8(plen);
            if (need > room - used) {
                w->nobufs = 1;
                break;
            }
            uint8_t *d = out_recs + (uint64_t)w->n * FC__REC_SIZE;
            memcpy(d, rec, FC__REC_SIZE);
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
        uint8_t *d = recs + (uint64_t)i * FC__REC_SIZE;
        uint32_t plen, so;
        memcpy(&plen, d + offsetof(fc_task_record, payload_len), 4);
        memcpy(&so, d + offsetof(fc_task_record, payload_off), 4);
        memcpy(d + offsetof(fc_task_record, payload_off), &po, 4);
        if (plen) {
            const uint8_t *src = r->data + ((uint64_t)so << 3) +
                                 FC__SLOT_HDR + FC__REC_SIZE;
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
        if (pe - t > r->cap || ps > fc_ring_string_count(r))
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
        nstr = fc_ring_string_count(r);
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
            uint32_t n2 = fc_ring_string_count(r);
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
    uint8_t *pay = recs + (uint64_t)w.n * FC__REC_SIZE;
    copy_payloads(r, recs, w.n, pay);
    write_strings(r, pay + w.pay, nstr);
    uint64_t total = finish_frame(buf, 0, h->job_id, h->ring_uid, t, w.n,
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
/* Spool pack                                                          */
/* ------------------------------------------------------------------ */

struct spent { /* a parsed spool entry inside the read window */
    uint64_t off;          /* of the body in the window */
    uint32_t body_len;
};

static int spool_entry(const uint8_t *win, uint64_t got, uint64_t p,
                       const fc_task_record **rec, uint32_t *body_len)
{
    uint32_t hdr[4];
    if (got - p < FC__SPILL_HDR)
        return 0;
    memcpy(hdr, win + p, sizeof hdr);
    if (hdr[0] != FC__SPILL_MAGIC || hdr[3] != 0 || hdr[1] < FC__REC_SIZE ||
        (hdr[1] & 7))
        return 0;
    if (got - p - FC__SPILL_HDR < hdr[1])
        return -1; /* extends past the window */
    const uint8_t *body = win + p + FC__SPILL_HDR;
    if (fc_crc32c(0, body, hdr[1]) != hdr[2])
        return 0;
    uint32_t plen;
    memcpy(&plen, body + offsetof(fc_task_record, payload_len), 4);
    if (FC__REC_SIZE + FC__ALIGN8(plen) != hdr[1])
        return 0;
    *rec = (const fc_task_record *)body;
    *body_len = hdr[1];
    return 1;
}

int64_t fc_spool_pack(fc_ring *r, const char *spool_path, uint64_t offset,
                      uint64_t end_limit, void *bufv, uint64_t cap,
                      uint32_t max_records, uint64_t *consumed)
{
    if (!r || !spool_path || !bufv || !consumed || max_records == 0)
        return -EINVAL;
    *consumed = 0;
    uint8_t *buf = bufv;
    if (cap > FC__MAX_FRAME)
        cap = FC__MAX_FRAME; /* payload_off is 32-bit */
    int fd = open(spool_path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return errno == ENOENT ? 0 : -errno;
    struct stat st;
    int64_t ret = 0;
    uint8_t *win = NULL;
    if (fstat(fd, &st) != 0) {
        ret = -errno;
        goto out;
    }
    if (!S_ISREG(st.st_mode) || st.st_uid != geteuid()) {
        ret = -EPERM;
        goto out;
    }
    uint64_t lim = (uint64_t)st.st_size;
    if (end_limit && end_limit < lim)
        lim = end_limit;
    if (offset >= lim)
        goto out;
    /* entries that fit in cap occupy at most 5/4 of it in the file */
    uint64_t want = lim - offset;
    uint64_t wmax = cap / 4 > UINT64_MAX - cap - 64 ? UINT64_MAX
                                                    : cap + cap / 4 + 64;
    if (want > wmax)
        want = wmax;
    if (want > ((uint64_t)1 << 40)) {
        ret = -ENOMEM;
        goto out;
    }
    win = malloc(want ? want : 1);
    if (!win) {
        ret = -ENOMEM;
        goto out;
    }
    uint64_t got = 0;
    while (got < want) {
        ssize_t k = pread(fd, win + got, want - got, (off_t)(offset + got));
        if (k < 0) {
            if (errno == EINTR)
                continue;
            ret = -errno;
            goto out;
        }
        if (k == 0)
            break;
        got += (uint64_t)k;
    }
    int cut_by_window = (got == want && want < lim - offset);

    uint32_t have_str = fc_ring_string_count(r);
    uint32_t nstr = 0, n = 0;
    uint64_t ssum = 0, pay = 0, p = 0;
    for (;;) {
        const fc_task_record *rec;
        uint32_t bl;
        int k = spool_entry(win, got, p, &rec, &bl);
        if (k == 0)
            break; /* end or torn tail */
        if (k < 0) {
            if (cut_by_window && n == 0)
                ret = -ENOBUFS;
            break;
        }
        if (n >= max_records)
            break;
        uint32_t aid = rec->activity_id;
        if (aid >= have_str) {
            if (n == 0)
                ret = -ERANGE; /* spool of another ring? */
            break;
        }
        uint32_t nstr2 = nstr;
        uint64_t ssum2 = ssum;
        for (; nstr2 <= aid; nstr2++) {
            uint32_t l;
            if (!fc__string_at(r, nstr2, &l)) {
                ret = -EBADMSG;
                goto out;
            }
            ssum2 += l;
        }
        uint64_t size = FC_BATCH_HEADER_SIZE + (uint64_t)(n + 1) * 64u + pay +
                        bl - FC__REC_SIZE +
                        FC__ALIGN8((uint64_t)nstr2 * 4u + ssum2);
        if (size > cap) {
            if (n == 0)
                ret = -ENOBUFS;
            break;
        }
        nstr = nstr2;
        ssum = ssum2;
        pay += bl - FC__REC_SIZE;
        n++;
        p += FC__SPILL_HDR + bl;
    }
    if (ret < 0 || n == 0)
        goto out;
    uint64_t end = p;
    uint8_t *recs = buf + FC_BATCH_HEADER_SIZE;
    uint8_t *pa = recs + (uint64_t)n * FC__REC_SIZE;
    uint64_t po = 0;
    uint32_t i = 0;
    for (p = 0; p < end; i++) {
        uint32_t bl;
        memcpy(&bl, win + p + 4, 4);
        const uint8_t *body = win + p + FC__SPILL_HDR;
        fc_task_record rc;
        memcpy(&rc, body, sizeof rc);
        rc.payload_off = (uint32_t)po;
        rc.flags |= FC_FLAG_FROM_SPOOL;
        memcpy(recs + (uint64_t)i * FC__REC_SIZE, &rc, sizeof rc);
        memcpy(pa + po, body + FC__REC_SIZE, bl - FC__REC_SIZE);
        /* the spilled padding is zeros (covered by the entry's crc) */
        po += bl - FC__REC_SIZE;
        p += FC__SPILL_HDR + bl;
    }
    uint64_t strtab = write_strings(r, pa + pay, nstr);
    ret = (int64_t)finish_frame(buf, 1, r->shm->job_id, r->shm->ring_uid,
                                offset | (1ull << 63), n, nstr, pay, strtab,
                                r->shm->rank);
    *consumed = end;
out:
    free(win);
    close(fd);
    return ret;
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
    if (n * FC__REC_SIZE > len - h.records_off)
        return -EBADMSG;
    if (h.payload_off != h.records_off + n * FC__REC_SIZE)
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
        memcpy(&rc, buf + h.records_off + i * FC__REC_SIZE, sizeof rc);
        if ((uint64_t)rc.payload_off + rc.payload_len > h.payload_bytes)
            return -ERANGE;
        if ((uint64_t)rc.activity_id >= s)
            return -ERANGE;
    }
    return 0;
}
