/*
 * spill.c -- the spill file, a ring's overflow: the writer
 * (fc__spill_append, called by ring.c's full-ring slow path) and the reader
 * (fc_spill_pack, which packs spilled entries into batch frames).  The
 * entry format is in fc_format.h.  Uses crc32c.c, batch.c's frame writer
 * and the ring inlines of internal.h; calls nothing in ring.c.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

/* ------------------------------------------------------------------ */
/* Writer                                                              */
/* ------------------------------------------------------------------ */

/* Appends one entry (format: fc_format.h) under r->spill_mu. */
int fc__spill_append(struct fc_ring *r, const fc_task_record *rec,
                     const void *payload, uint32_t plen)
{
    static const uint8_t zeros[8];
    uint32_t body_len = (uint32_t)(FC_RECORD_SIZE + FC__ALIGN8(plen));
    uint32_t padn = body_len - FC_RECORD_SIZE - plen;
    fc_task_record rc = *rec;
    rc.payload_off = 0;
    uint32_t crc = fc_crc32c(0, &rc, sizeof rc);
    crc = fc_crc32c(crc, payload, plen);
    crc = fc_crc32c(crc, zeros, padn);
    uint32_t hdr[4] = { FC_SPILL_MAGIC, body_len, crc, 0 };
    struct iovec iov[4] = {
        { hdr, sizeof hdr }, { &rc, sizeof rc },
        { (void *)payload, plen }, { (void *)zeros, padn },
    };
    size_t want = sizeof hdr + body_len;
    int res;
    pthread_mutex_lock(&r->spill_mu);
    if (r->spill_fd < 0) {
        r->spill_fd = open(r->spill_path,
                           O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW |
                           O_CLOEXEC, 0600);
        if (r->spill_fd < 0) {
            res = -errno;
            goto out;
        }
    }
    off_t start = lseek(r->spill_fd, 0, SEEK_END);
    ssize_t w = writev(r->spill_fd, iov, 4);
    if (w == (ssize_t)want) {
        res = 1;
    } else {
        res = w < 0 ? -errno : -EIO;
        if (w > 0 && start >= 0 && ftruncate(r->spill_fd, start) != 0)
            res = -EIO; /* a torn entry stays; spill readers stop there */
    }
out:
    pthread_mutex_unlock(&r->spill_mu);
    if (res == 1)
        atomic_fetch_add_explicit(&r->shm->spilled, 1, memory_order_relaxed);
    else
        atomic_fetch_add_explicit(&r->shm->dropped, 1, memory_order_relaxed);
    return res;
}

/* ------------------------------------------------------------------ */
/* Reader: spill pack                                                         */
/* ------------------------------------------------------------------ */

static int spill_entry(const uint8_t *win, uint64_t got, uint64_t p,
                       const fc_task_record **rec, uint32_t *body_len)
{
    uint32_t hdr[4];
    if (got - p < FC_SPILL_ENTRY_HDR)
        return 0;
    memcpy(hdr, win + p, sizeof hdr);
    if (hdr[0] != FC_SPILL_MAGIC || hdr[3] != 0 || hdr[1] < FC_RECORD_SIZE ||
        (hdr[1] & 7))
        return 0;
    if (got - p - FC_SPILL_ENTRY_HDR < hdr[1])
        return -1; /* extends past the window */
    const uint8_t *body = win + p + FC_SPILL_ENTRY_HDR;
    if (fc_crc32c(0, body, hdr[1]) != hdr[2])
        return 0;
    uint32_t plen;
    memcpy(&plen, body + offsetof(fc_task_record, payload_len), 4);
    if (FC_RECORD_SIZE + FC__ALIGN8(plen) != hdr[1])
        return 0;
    *rec = (const fc_task_record *)body;
    *body_len = hdr[1];
    return 1;
}

int64_t fc_spill_pack(fc_ring *r, const char *spill_path, uint64_t offset,
                      uint64_t end_limit, void *bufv, uint64_t cap,
                      uint32_t max_records, uint64_t *consumed)
{
    if (!r || !spill_path || !bufv || !consumed || max_records == 0)
        return -EINVAL;
    *consumed = 0;
    uint8_t *buf = bufv;
    if (cap > FC__MAX_FRAME)
        cap = FC__MAX_FRAME; /* payload_off is 32-bit */
    int fd = open(spill_path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
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

    uint32_t have_str = fc__string_count(r);
    uint32_t nstr = 0, n = 0;
    uint64_t ssum = 0, pay = 0, p = 0;
    for (;;) {
        const fc_task_record *rec;
        uint32_t bl;
        int k = spill_entry(win, got, p, &rec, &bl);
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
        /* an overflow record carries its name: it needs no string */
        int named = aid != FC_ACTIVITY_OVERFLOW;
        if (named && aid >= have_str) {
            if (n == 0)
                ret = -ERANGE; /* spill file of another ring? */
            break;
        }
        uint32_t nstr2 = nstr;
        uint64_t ssum2 = ssum;
        for (; named && nstr2 <= aid; nstr2++) {
            uint32_t l;
            if (!fc__string_at(r, nstr2, &l)) {
                ret = -EBADMSG;
                goto out;
            }
            ssum2 += l;
        }
        uint64_t size = FC_BATCH_HEADER_SIZE + (uint64_t)(n + 1) * 64u + pay +
                        bl - FC_RECORD_SIZE +
                        FC__ALIGN8((uint64_t)nstr2 * 4u + ssum2);
        if (size > cap) {
            if (n == 0)
                ret = -ENOBUFS;
            break;
        }
        nstr = nstr2;
        ssum = ssum2;
        pay += bl - FC_RECORD_SIZE;
        n++;
        p += FC_SPILL_ENTRY_HDR + bl;
    }
    if (ret < 0 || n == 0)
        goto out;
    uint64_t end = p;
    uint8_t *recs = buf + FC_BATCH_HEADER_SIZE;
    uint8_t *pa = recs + (uint64_t)n * FC_RECORD_SIZE;
    uint64_t po = 0;
    uint32_t i = 0;
    for (p = 0; p < end; i++) {
        uint32_t bl;
        memcpy(&bl, win + p + 4, 4);
        const uint8_t *body = win + p + FC_SPILL_ENTRY_HDR;
        fc_task_record rc;
        memcpy(&rc, body, sizeof rc);
        rc.payload_off = (uint32_t)po;
        rc.flags |= FC_FLAG_FROM_SPILL;
        memcpy(recs + (uint64_t)i * FC_RECORD_SIZE, &rc, sizeof rc);
        memcpy(pa + po, body + FC_RECORD_SIZE, bl - FC_RECORD_SIZE);
        /* the spilled padding is zeros (covered by the entry's crc) */
        po += bl - FC_RECORD_SIZE;
        p += FC_SPILL_ENTRY_HDR + bl;
    }
    uint64_t strtab = fc__write_strings(r, pa + pay, nstr);
    uint32_t flags = FC_BATCH_FLAG_FROM_SPILL |
                     (atomic_load_explicit(&r->shm->clock_flags, memory_order_relaxed) &
                      FC_BATCH_FLAG_CLOCK_TSC);
    ret = (int64_t)fc__finish_frame(buf, flags, r->shm->job_id, r->shm->ring_uid,
                                offset | (1ull << 63), n, nstr, pay, strtab,
                                r->shm->rank);
    *consumed = end;
out:
    free(win);
    close(fd);
    return ret;
}

int64_t fc_spool_pack(fc_ring *r, const char *spool_path, uint64_t offset,
                      uint64_t end_limit, void *buf, uint64_t cap,
                      uint32_t max_records, uint64_t *consumed)
{
    return fc_spill_pack(r, spool_path, offset, end_limit, buf, cap,
                         max_records, consumed);
}
