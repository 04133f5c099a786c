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
#include "flowcept.h"

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
