/*
 * internal.h -- private layout of the shared-memory ring file and of the
 * process-local ring handle.  NOT part of the ABI (flowcept.h is); shared by
 * ring.c, batch.c, capture.c and the C tests.
 *
 * Ring file layout (all offsets from the start of the file/mapping):
 *   [0, FC__HDR_SIZE)             struct fc_ring_shm (header page)
 *   [strings_off, data_off)       string table: max_strings u32 offsets,
 *                                 then strings_bytes bytes of entries
 *                                 {u16 len; char bytes[len]} (unaligned)
 *   [data_off, data_off+capacity) data area (capacity: power of two)
 *
 * Data area slots (8-byte aligned, absolute position p, offset p & mask):
 *   {u64 stamp; u32 len; u32 type;} then len body bytes, padded to 8.
 *   type 1: body = fc_task_record + payload.  type 2: padding up to the end
 *   of the data area (len = bytes after the slot header).  A padding slot
 *   of only 8 bytes (at offset capacity-8) is just its stamp.
 *   A slot is committed iff stamp == (p ^ stamp_key), stored last with
 *   release order.  stamp_key is a random non-zero per-ring value: it makes
 *   the zero-filled fresh file and stale payload bytes of earlier laps
 *   (which could otherwise hold any user chosen value) practically never
 *   look committed.
 */
#ifndef FC_INTERNAL_H
#define FC_INTERNAL_H

#include <stdatomic.h>
#include <stdint.h>
#include <stddef.h>
#include <string.h>
#include <pthread.h>
#include "flowcept.h"

#define FC__MAGIC "FCRING01"
#define FC__HDR_SIZE 4096u
#define FC__PAGE 4096u
#define FC__SLOT_HDR 16u
#define FC__REC_SIZE 64u
#define FC__SLOT_RECORD 1u
#define FC__SLOT_PAD 2u
#define FC__SPILL_MAGIC 0x50534346u /* "FCSP" little-endian */
#define FC__SPILL_HDR 16u
#define FC__SPILL_PATH_MAX 1024u
#define FC__MAX_PAYLOAD (1u << 30)
/* pack keeps (slot offset >> 3) in a u32 while packing */
#define FC__MAX_CAPACITY (1ull << 34)

#define FC__ALIGN8(x) (((uint64_t)(x) + 7u) & ~(uint64_t)7u)
#define FC__CL _Alignas(64)

struct fc_ring_shm {
    char magic[8];              /* "FCRING01", written last at create */
    uint32_t format_version;    /* FC_FORMAT_VERSION */
    uint32_t header_size;       /* FC__HDR_SIZE */
    uint64_t capacity;          /* data bytes, power of two */
    uint32_t max_strings;
    uint32_t strings_bytes;
    uint64_t strings_off;       /* file offset of the string table */
    uint64_t data_off;          /* file offset of the data area */
    uint64_t file_size;
    uint64_t job_id;
    uint64_t workflow_id;
    uint64_t ring_uid;          /* getrandom() */
    uint64_t stamp_key;         /* getrandom(), non-zero */
    uint32_t rank;
    int32_t producer_pid;
    int32_t full_policy;
    uint32_t reserved0;
    int64_t block_timeout_ns;
    char spill_path[FC__SPILL_PATH_MAX]; /* NUL-terminated */

    FC__CL _Atomic uint32_t closed;      /* producer called fc_ring_close */
    FC__CL _Atomic uint64_t head;        /* bytes reserved, absolute */
    FC__CL _Atomic uint64_t tail;        /* bytes released, absolute */
    FC__CL _Atomic uint64_t pending_end; /* end of the last packed range */
    _Atomic uint64_t pending_strings;    /* string count of that batch */
    FC__CL _Atomic uint64_t pushed;
    FC__CL _Atomic uint64_t spilled;
    FC__CL _Atomic uint64_t dropped;
    FC__CL _Atomic uint64_t torn;
    FC__CL _Atomic uint32_t str_lock;    /* spinlock for fc_ring_intern */
    _Atomic uint32_t string_count;       /* release-published */
    uint32_t strings_used;               /* bytes used (under str_lock) */
};

_Static_assert(sizeof(struct fc_ring_shm) <= FC__HDR_SIZE, "header page");
_Static_assert(sizeof(fc_task_record) == 64, "record size");
_Static_assert(sizeof(fc_batch_header) == FC_BATCH_HEADER_SIZE, "batch hdr");

typedef struct fc__slot {
    _Atomic uint64_t stamp;
    uint32_t len;
    uint32_t type;
} fc__slot;

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
    char spill_path[FC__SPILL_PATH_MAX];
    /* consumer-side cache of string lengths (single consumer) */
    uint32_t sc_count;
    uint64_t sc_bytes;
};

static inline uint64_t fc__stamp(const struct fc_ring *r, uint64_t p)
{
    return p ^ r->key;
}

/* ---- shared between ring.c and batch.c (global fc__ symbols) ---- */

/* Is the producer of this ring dead or closed?  (syscall: slow path) */
int fc__producer_gone(const struct fc_ring *r);

/* Length of a string table entry; returns NULL if out of range/corrupt. */
const uint8_t *fc__string_at(const struct fc_ring *r, uint32_t id,
                             uint32_t *len);

/* ---- test helper: reserve a slot and write its header but never commit
 * it (what a producer killed between reserve and commit leaves behind).
 * Returns the absolute position of the slot or UINT64_MAX when full. ---- */
static inline uint64_t fc__test_reserve_torn(struct fc_ring *r,
                                             uint32_t payload_len)
{
    uint64_t need = FC__SLOT_HDR + FC__REC_SIZE + FC__ALIGN8(payload_len);
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
            fc__slot *s = (fc__slot *)(r->data + (p & r->mask));
            s->len = (uint32_t)(FC__REC_SIZE + payload_len);
            s->type = FC__SLOT_RECORD;
            fc_task_record *rec = (fc_task_record *)(s + 1);
            memset(rec, 0x5a, sizeof *rec); /* garbage body */
            return p;
        }
    }
}

#endif /* FC_INTERNAL_H */
