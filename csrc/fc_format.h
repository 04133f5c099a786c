/*
 * fc_format.h -- flowcept's data formats, versioned: the task record, the
 * batch frame, the shared-memory ring file and the spill file.
 *
 * These are the bytes other processes read: the node leader and the SLURM
 * epilog map a ring file a producer created, replay its spill file, and a
 * keeper validates batch frames it received.  Everything here is
 * little-endian and changes only together with FC_FORMAT_VERSION (which is
 * written into every ring header and batch header; readers refuse another
 * version with -EPROTO).
 *
 * The part between FC_CDEF_BEGIN and FC_CDEF_END is also read by the cffi
 * build (flowcept/_build_ext.py), so it stays plain C declarations and
 * `#define NAME <integer>` lines.  The ring file header below it uses C11
 * atomics and is for C readers only.
 *
 * The application API (ring handles, batches, capture) is flowcept.h, which
 * includes this header.
 */
#ifndef FC_FORMAT_H
#define FC_FORMAT_H

#include <stdint.h>
#include <stddef.h>

/* FC_CDEF_BEGIN */

/* Version of every layout in this file (ring header, slots, spill entries,
 * batch frame).  Bumped on any change of them. */
#define FC_FORMAT_VERSION 1

/* ------------------------------------------------------------------ */
/* The task record (fixed header, 64 bytes, little-endian, 8-aligned)  */
/* ------------------------------------------------------------------ */

#define FC_STATUS_FINISHED 0
#define FC_STATUS_ERROR 1
#define FC_STATUS_RUNNING 2   /* a begin without end: written at recovery */

#define FC_FLAG_PAYLOAD_MSGPACK 1  /* payload is a msgpack map */
#define FC_FLAG_FROM_SPILL 2       /* record was spilled and replayed */
#define FC_FLAG_FROM_SPOOL 2       /* old name of FC_FLAG_FROM_SPILL */
#define FC_FLAG_C_API 4            /* captured by the C API */
#define FC_FLAG_WORKFLOW 8         /* not a task: a workflow description
                                      (task_id 0, payload: msgpack map) */
#define FC_FLAG_NAME_IN_PAYLOAD 16 /* activity_id is FC_ACTIVITY_OVERFLOW and
                                      the payload starts with the name; see
                                      below */

/* Longest activity name stored: longer names are cut to at most this many
 * bytes, at a UTF-8 character boundary, by fc_ring_intern. */
#define FC_NAME_MAX 1024

/* Reserved activity id: "the name did not fit in the string table".  A
 * record with this id has FC_FLAG_NAME_IN_PAYLOAD set and its payload is
 *   [u16 name_len][name_len bytes of the name][the task's own payload]
 * (name_len <= FC_NAME_MAX, no padding; payload_len counts all of it).
 * Rings, spill files and batch validation accept this id although it is
 * not in the string table. */
#define FC_ACTIVITY_OVERFLOW 0xFFFFFFFF

typedef struct fc_task_record {
    uint64_t task_id;      /* unique within workflow_id: (origin << 40) | seq */
    uint64_t parent_id;    /* task_id of the enclosing task, 0 = none */
    uint64_t workflow_id;  /* 64-bit random id of the workflow run */
    int64_t  start_ns;     /* CLOCK_REALTIME nanoseconds since the epoch */
    int64_t  end_ns;       /* idem; == start_ns for instantaneous events */
    uint32_t rank;         /* MPI world rank (0 without MPI) */
    uint32_t thread_id;    /* small per-process thread index, from 0 */
    uint32_t activity_id;  /* id in the ring's (and batch's) string table,
                              or FC_ACTIVITY_OVERFLOW */
    uint32_t payload_len;  /* bytes of payload following this record */
    uint32_t payload_off;  /* in a batch: offset of the payload in the payload
                              area; in a ring: 0 (payload follows directly) */
    uint16_t status;       /* FC_STATUS_* */
    uint16_t flags;        /* FC_FLAG_* */
} fc_task_record;          /* sizeof == 64 */

#define FC_RECORD_SIZE 64

/* ------------------------------------------------------------------ */
/* The batch frame                                                     */
/* ------------------------------------------------------------------ */

#define FC_BATCH_MAGIC 0x3148544142434647  /* bytes "GFCBATH1" on disk */
#define FC_BATCH_HEADER_SIZE 96

/* fc_batch_header.flags */
#define FC_BATCH_FLAG_FROM_SPILL 1  /* the records came from a spill file */
#define FC_BATCH_FLAG_CLOCK_TSC 2   /* the producer's timestamps are TSC reads
                                       extrapolated from CLOCK_REALTIME anchors
                                       at most 1 ms old (within about 1 us of
                                       CLOCK_REALTIME); without it, each is a
                                       clock_gettime(CLOCK_REALTIME) */

/* Batch frame, little-endian:
 *   [fc_batch_header (96 B)]
 *   [records: record_count * fc_task_record (64 B each), 8-aligned]
 *   [payload area: payload_bytes, records' payload_off index into it]
 *   [string table: string_count * (uint32 len) then the bytes, 8-padded]
 * crc32c covers every byte after the header, then the header with the crc
 * field set to 0.  Batch id = (job_id, ring_uid, seq) where seq is the ring
 * byte position of the first record (spill file offset | 1 << 63 for
 * replayed spill entries): packing the same range again yields the same
 * id, which makes re-delivery idempotent. */
typedef struct fc_batch_header {
    uint64_t magic;          /* FC_BATCH_MAGIC */
    uint16_t version;        /* FC_FORMAT_VERSION */
    uint16_t header_size;    /* FC_BATCH_HEADER_SIZE */
    uint32_t flags;          /* FC_BATCH_FLAG_* */
    uint64_t job_id;
    uint64_t ring_uid;
    uint64_t seq;
    uint64_t total_len;      /* whole frame, header included */
    uint32_t record_count;
    uint32_t string_count;
    uint64_t records_off;    /* from frame start */
    uint64_t payload_off;
    uint64_t payload_bytes;
    uint64_t strings_off;
    uint32_t rank;           /* producer rank */
    uint32_t crc32c;
} fc_batch_header;

/* FC_CDEF_END */

/* ------------------------------------------------------------------ */
/* The spill file (a ring's overflow, "<ring path>.spill")             */
/* ------------------------------------------------------------------ */

/* An append-only sequence of entries, each
 *   [u32 magic FC_SPILL_MAGIC][u32 body_len][u32 crc32c(body)][u32 0]
 *   [body: fc_task_record (payload_off 0) + payload, zero-padded to 8]
 * body_len == FC_RECORD_SIZE + ALIGN8(payload_len).  The fourth word is
 * 0 in this format version.  A reader stops at the first entry that is
 * short or fails its checks (a producer killed mid-write leaves a torn
 * tail).  The file is created 0600 with O_NOFOLLOW by the producer. */
#define FC_SPILL_MAGIC 0x50534346u /* "FCSP" little-endian */
#define FC_SPILL_ENTRY_HDR 16u
#define FC_SPILL_PATH_MAX 1024u

/* ------------------------------------------------------------------ */
/* The ring file (shared memory)                                       */
/* ------------------------------------------------------------------ */

/* Layout (all offsets from the start of the file/mapping):
 *   [0, FC_RING_HEADER_SIZE)      struct fc_ring_shm (header page)
 *   [strings_off, data_off)       string table: max_strings u32 offsets,
 *                                 then strings_bytes bytes of entries
 *                                 {u16 len; char bytes[len]} (unaligned);
 *                                 size rounded up to FC_RING_PAGE
 *   [data_off, data_off+capacity) data area (capacity: power of two)
 *
 * Data area slots (8-byte aligned, absolute position p, offset p & mask):
 *   {u64 stamp; u32 len; u32 type;} then len body bytes, padded to 8.
 *   type FC_RING_SLOT_RECORD: body = fc_task_record + payload.
 *   type FC_RING_SLOT_PAD: padding up to the end of the data area (len =
 *   bytes after the slot header).  A padding slot of only 8 bytes (at
 *   offset capacity-8) is just its stamp.
 *   A slot is committed iff stamp == (p ^ stamp_key), stored last with
 *   release order.  stamp_key is a random non-zero per-ring value: it makes
 *   the zero-filled fresh file and stale payload bytes of earlier laps
 *   (which could otherwise hold any user chosen value) practically never
 *   look committed.
 *
 * Creation writes every field, then `magic` last (release): a file whose
 * magic is not yet "FCRING" is still being created (readers: -EBADMSG,
 * retry later); one whose magic or format_version names another version
 * is refused with -EPROTO.
 */
#define FC_RING_MAGIC "FCRING01"
#define FC_RING_MAGIC_PREFIX_LEN 6  /* "FCRING": then two version digits */
#define FC_RING_HEADER_SIZE 4096u
#define FC_RING_PAGE 4096u
#define FC_RING_SLOT_HDR 16u
#define FC_RING_SLOT_RECORD 1u
#define FC_RING_SLOT_PAD 2u

#if !defined(__cplusplus)
#include <stdatomic.h>

#define FC_RING_CL _Alignas(64)

struct fc_ring_shm {
    char magic[8];              /* FC_RING_MAGIC, written last at create */
    uint32_t format_version;    /* FC_FORMAT_VERSION */
    uint32_t header_size;       /* FC_RING_HEADER_SIZE */
    uint64_t capacity;          /* data bytes, power of two */
    uint32_t max_strings;       /* string table slots */
    uint32_t strings_bytes;     /* string table bytes */
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
    _Atomic uint32_t clock_flags; /* FC_BATCH_FLAG_CLOCK_TSC once a producer
                                     timestamps from the TSC (0 at create) */
    int64_t block_timeout_ns;
    char spill_path[FC_SPILL_PATH_MAX]; /* NUL-terminated */

    FC_RING_CL _Atomic uint32_t closed;  /* producer called fc_ring_close */
    FC_RING_CL _Atomic uint64_t head;    /* bytes reserved, absolute */
    FC_RING_CL _Atomic uint64_t tail;    /* bytes released, absolute */
    FC_RING_CL _Atomic uint64_t pending_end; /* end of the last packed range */
    _Atomic uint64_t pending_strings;    /* string count of that batch */
    FC_RING_CL _Atomic uint64_t pushed;
    FC_RING_CL _Atomic uint64_t spilled;
    FC_RING_CL _Atomic uint64_t dropped;
    FC_RING_CL _Atomic uint64_t torn;
    FC_RING_CL _Atomic uint32_t str_lock; /* spinlock for fc_ring_intern */
    _Atomic uint32_t string_count;       /* release-published */
    uint32_t strings_used;               /* bytes used (under str_lock) */
};

typedef struct fc_ring_slot {
    _Atomic uint64_t stamp;
    uint32_t len;
    uint32_t type;
} fc_ring_slot;

_Static_assert(sizeof(struct fc_ring_shm) <= FC_RING_HEADER_SIZE,
               "ring header fits its page");
_Static_assert(sizeof(fc_ring_slot) == FC_RING_SLOT_HDR, "slot header");
_Static_assert(sizeof(fc_task_record) == FC_RECORD_SIZE, "record size");
_Static_assert(sizeof(fc_batch_header) == FC_BATCH_HEADER_SIZE, "batch hdr");
#endif /* !__cplusplus */

#endif /* FC_FORMAT_H */
