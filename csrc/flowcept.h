/*
 * flowcept.h -- the one public C ABI of flowcept's compiled hot path.
 *
 * This header is read verbatim (minus preprocessor lines) by the cffi build
 * (flowcept/_build_ext.py), so it must stay plain C declarations between the
 * FC_CDEF_BEGIN / FC_CDEF_END markers.  The record and batch layouts defined
 * here are the single definition of the on-the-wire and on-disk format: the
 * Python side (flowcept/layout.py) builds its numpy dtypes from
 * fc_layout_describe() and refuses to run if they disagree.
 *
 * Conventions
 *  - Handles are opaque; names are fc_<object>_<verb>.
 *  - Functions returning int return 0 (or a non-negative count) on success and
 *    -errno on failure (e.g. -ENOMEM, -EINVAL, -EAGAIN, -ETIMEDOUT, -EBADMSG).
 *  - No function allocates, locks or makes a syscall on the record push path
 *    except the documented slow paths (ring full with spill/block policy,
 *    first use of an activity name).
 *
 * Data path: producers (any thread of one process) push task records into a
 * per-process MPSC ring that lives in a shared-memory file; a consumer (the
 * same process, the node leader, or the SLURM epilog after the producer died)
 * drains committed records into a self-describing batch frame.
 */
#ifndef FLOWCEPT_H
#define FLOWCEPT_H

#include <stdint.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* FC_CDEF_BEGIN */

/* ------------------------------------------------------------------ */
/* Versions                                                             */
/* ------------------------------------------------------------------ */

#define FC_ABI_VERSION 1      /* bumped on any change of this header's ABI */
#define FC_FORMAT_VERSION 1   /* bumped on any change of ring/batch layout */

/* Returns FC_ABI_VERSION * 65536 + FC_FORMAT_VERSION of the compiled code. */
uint32_t fc_version(void);

/* ------------------------------------------------------------------ */
/* The task record (fixed header, 64 bytes, little-endian, 8-aligned)  */
/* ------------------------------------------------------------------ */

#define FC_STATUS_FINISHED 0
#define FC_STATUS_ERROR 1
#define FC_STATUS_RUNNING 2   /* a begin without end: written at recovery */

#define FC_FLAG_PAYLOAD_MSGPACK 1  /* payload is a msgpack map */
#define FC_FLAG_FROM_SPOOL 2       /* record was spilled and replayed */
#define FC_FLAG_C_API 4            /* captured by the C API */
#define FC_FLAG_WORKFLOW 8         /* not a task: a workflow description
                                      (task_id 0, payload: msgpack map) */

typedef struct fc_task_record {
    uint64_t task_id;      /* unique within workflow_id: (origin << 40) | seq */
    uint64_t parent_id;    /* task_id of the enclosing task, 0 = none */
    uint64_t workflow_id;  /* 64-bit random id of the workflow run */
    int64_t  start_ns;     /* CLOCK_REALTIME nanoseconds since the epoch */
    int64_t  end_ns;       /* idem; == start_ns for instantaneous events */
    uint32_t rank;         /* MPI world rank (0 without MPI) */
    uint32_t thread_id;    /* small per-process thread index, from 0 */
    uint32_t activity_id;  /* id in the ring's (and batch's) string table */
    uint32_t payload_len;  /* bytes of payload following this record */
    uint32_t payload_off;  /* in a batch: offset of the payload in the payload
                              area; in a ring: 0 (payload follows directly) */
    uint16_t status;       /* FC_STATUS_* */
    uint16_t flags;        /* FC_FLAG_* */
} fc_task_record;          /* sizeof == 64 */

/* Field description used by Python to build and check its numpy dtype.
 * Fills at most `cap` entries; returns the number of fields (12). */
typedef struct fc_field_desc {
    const char *name;   /* e.g. "task_id" */
    char kind;          /* 'u' unsigned, 'i' signed */
    uint8_t size;       /* bytes */
    uint16_t offset;    /* offset in fc_task_record */
} fc_field_desc;
int fc_layout_describe(fc_field_desc *out, int cap);

/* ------------------------------------------------------------------ */
/* The ring: lock-free MPSC of variable-length records in a file       */
/* ------------------------------------------------------------------ */

typedef struct fc_ring fc_ring;  /* opaque */

/* What a producer does when the ring is full. */
#define FC_FULL_SPILL 0   /* append the record to the ring's spool file */
#define FC_FULL_BLOCK 1   /* wait up to block_timeout_ns, then count a drop */
#define FC_FULL_DROP 2    /* count a drop and return -ENOSPC */

typedef struct fc_ring_options {
    uint64_t capacity;        /* data bytes, power of two >= 4096 */
    uint32_t max_strings;     /* string table slots (default 4096) */
    uint32_t strings_bytes;   /* string table bytes (default 256 KiB) */
    int      full_policy;     /* FC_FULL_* */
    int64_t  block_timeout_ns;/* FC_FULL_BLOCK: max wait per push */
    const char *spill_path;   /* FC_FULL_SPILL: spool file path (created 0600
                                 on first spill); NULL = "<ring path>.spill" */
    uint64_t job_id;          /* stored in the ring header for recovery */
    uint64_t workflow_id;     /* default workflow id (informational) */
    uint32_t rank;            /* MPI world rank of the producer */
} fc_ring_options;

/* Fills *opts with defaults (1 MiB ring, spill policy). */
void fc_ring_options_init(fc_ring_options *opts);

/* Creates (O_CREAT|O_EXCL, mode 0600) and maps a ring file as its producer.
 * Ownership: the caller owns *out and must fc_ring_close() it.
 * Returns 0, -EEXIST if the file exists, -EINVAL on bad options, -errno. */
int fc_ring_create(const char *path, const fc_ring_options *opts, fc_ring **out);

/* Maps an existing ring file as its consumer (another process, or the same).
 * Refuses a file not owned by the caller's euid or not a regular file
 * (opened with O_NOFOLLOW): -EPERM / -ELOOP.  -EBADMSG on a bad header.
 * Exactly one consumer per ring at a time (the caller's responsibility). */
int fc_ring_open(const char *path, fc_ring **out);

/* Unmaps; does not unlink.  The producer marks the ring closed (clean end).
 * Not thread-safe with concurrent pushes on the same handle. */
void fc_ring_close(fc_ring *ring);

/* Interns an activity (or any) name; returns its id (>= 0) or -ENOSPC when
 * the string table is full, -EINVAL when len > 65535.  Thread-safe (short
 * spinlock in shared memory; not on the hot path: callers cache ids).
 * The string becomes visible to consumers before the id is returned. */
int fc_ring_intern(fc_ring *ring, const char *name, uint32_t len);

/* Number of strings in the table and access to one (consumer side).
 * fc_ring_string returns a pointer into the mapping (valid until close) and
 * its length in *len, or NULL for an unknown id. */
uint32_t fc_ring_string_count(const fc_ring *ring);
const char *fc_ring_string(const fc_ring *ring, uint32_t id, uint32_t *len);

/* Pushes one task record and its payload (copied).  Lock-free, thread-safe,
 * wait-free when there is room.  rec->payload_len must equal payload_len.
 * Returns 0, or when full: 1 if spilled to the spool file, -ENOSPC if dropped
 * (FC_FULL_DROP), -ETIMEDOUT if dropped after blocking; drops are counted. */
int fc_ring_push(fc_ring *ring, const fc_task_record *rec,
                 const void *payload, uint32_t payload_len);

/* Same as fc_ring_push with the record given field by field (cheaper to
 * call from Python through cffi than building a struct; `const char *` so
 * cffi passes a Python bytes object without a copy).  payload_off = 0. */
int fc_ring_push_task(fc_ring *ring, uint64_t task_id, uint64_t parent_id,
                      uint64_t workflow_id, int64_t start_ns, int64_t end_ns,
                      uint32_t rank, uint32_t thread_id, uint32_t activity_id,
                      uint16_t status, uint16_t flags,
                      const char *payload, uint32_t payload_len);

/* Ring statistics (monotonic counters read from shared memory). */
typedef struct fc_ring_stats {
    uint64_t capacity;
    uint64_t head;          /* bytes reserved by producers, ever */
    uint64_t tail;          /* bytes released by the consumer, ever */
    uint64_t pushed;        /* records committed to the ring */
    uint64_t spilled;       /* records written to the spool file */
    uint64_t dropped;       /* records lost by the DROP/BLOCK policies */
    uint64_t torn;          /* half-written records skipped at recovery */
    uint64_t job_id;
    uint64_t workflow_id;
    uint64_t ring_uid;      /* random id of this ring, part of batch ids */
    uint32_t rank;
    int32_t  producer_pid;
    int      closed;        /* producer called fc_ring_close */
} fc_ring_stats;
void fc_ring_get_stats(const fc_ring *ring, fc_ring_stats *out);

/* Spool file path of the ring (for the leader/epilog to replay). */
const char *fc_ring_spill_path(const fc_ring *ring);

/* ------------------------------------------------------------------ */
/* Batches                                                             */
/* ------------------------------------------------------------------ */

#define FC_BATCH_MAGIC 0x3148544142434647  /* bytes "GFCBATH1" on disk */
#define FC_BATCH_HEADER_SIZE 96

/* Batch frame, little-endian:
 *   [fc_batch_header (96 B)]
 *   [records: record_count * fc_task_record (64 B each), 8-aligned]
 *   [payload area: payload_bytes, records' payload_off index into it]
 *   [string table: string_count * (uint32 len) then the bytes, 8-padded]
 * crc32c covers every byte after the header, then the header with the crc
 * field set to 0.  Batch id = (job_id, ring_uid, seq) where seq is the ring
 * byte position of the first record: packing the same ring range again
 * yields the same id, which makes re-delivery idempotent. */
typedef struct fc_batch_header {
    uint64_t magic;          /* FC_BATCH_MAGIC */
    uint16_t version;        /* FC_FORMAT_VERSION */
    uint16_t header_size;    /* FC_BATCH_HEADER_SIZE */
    uint32_t flags;          /* bit 0: records came from a spool file */
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

/* Drains committed records of `ring` into a batch frame written to buf.
 * Takes records starting at the consumer position while they fit in `cap`
 * bytes and record_count < max_records.  Does NOT release ring space: call
 * fc_ring_release(ring, hdr.seq + consumed) once the batch is safely
 * published.  Determinism: the end of the packed range is recorded in the
 * ring header ("pending end"); while pending end > tail, every later
 * fc_ring_pack (by this or any other consumer, e.g. after a crash) packs
 * exactly [tail, pending end) again, so the same batch id always carries the
 * same records and re-delivery is idempotent.
 * Only the consumer calls this (single consumer).
 * *consumed receives the ring bytes covered; returns the frame length (> 0),
 * 0 when nothing is committed, -ENOBUFS if cap cannot hold one record.
 * When the producer is dead (no live pid) or closed, torn records are
 * skipped and counted.  Runs without touching Python: callable with the GIL
 * released. */
int64_t fc_ring_pack(fc_ring *ring, void *buf, uint64_t cap,
                     uint32_t max_records, uint64_t *consumed);

/* Consumer: releases ring bytes up to absolute position `pos` (the batch's
 * seq + consumed).  Returns 0 or -EINVAL if pos is out of range. */
int fc_ring_release(fc_ring *ring, uint64_t pos);

/* Re-packs records from a spool file (written by the spill policy) starting
 * at byte `offset`; same contract as fc_ring_pack, seq = offset with bit 63
 * set.  Packs only entries ending at or before end_limit (0 = no limit), so
 * a caller that recorded the range it published can re-pack it identically.
 * `ring` supplies job id, ring uid, rank and the string table; it may be a
 * consumer handle.  *consumed receives the file bytes covered.  Returns
 * frame length, 0 at end of file, -errno.  A torn tail (producer killed mid-write) is
 * ignored. */
int64_t fc_spool_pack(fc_ring *ring, const char *spool_path, uint64_t offset,
                      uint64_t end_limit, void *buf, uint64_t cap,
                      uint32_t max_records, uint64_t *consumed);

/* Validates a batch frame completely (magic, version, sizes, offsets,
 * every record's payload range, string ids, crc).  Never reads outside
 * [buf, buf+len).  Returns 0 or:
 *   -EBADMSG  bad magic / inconsistent sizes or offsets
 *   -EPROTO   unsupported version
 *   -EILSEQ   checksum mismatch
 *   -EMSGSIZE len differs from total_len (truncated or trailing bytes)
 *   -ERANGE   a record's payload or activity id is out of range */
int fc_batch_validate(const void *buf, uint64_t len);

/* CRC32C (Castagnoli) of a buffer, continuing from `crc` (start with 0). */
uint32_t fc_crc32c(uint32_t crc, const void *buf, uint64_t len);

/* ------------------------------------------------------------------ */
/* C capture API for C/C++/Fortran MPI codes                           */
/* ------------------------------------------------------------------ */

/* Initialises the process's capture: creates the ring at `ring_path` with
 * `opts` (NULL = defaults).  ring_path NULL = the path flowcept's runtime,
 * `flowcept drain` and the SLURM epilog look in:
 * $FLOWCEPT_SHM_DIR (default /dev/shm)/flowcept-<uid>/<job>/<rank>.<pid>.ring
 * with job = $FLOWCEPT_JOB_ID, else $SLURM_JOB_ID, else local-<pid>
 * (directories created 0700; a foreign or linked one gives -EPERM).
 * String 0 of the ring names the node ("host:<hostname>").  Not thread-safe with the other fc_task_*
 * calls; call once, before threads start.  Returns 0 or -errno. */
int fc_capture_init(const char *ring_path, const fc_ring_options *opts,
                    uint64_t workflow_id, uint32_t rank);

/* Attaches capture to an existing producer ring handle (used by Python so
 * the C API and Python decorators share one ring).  The handle stays owned
 * by the caller. */
int fc_capture_attach(fc_ring *ring, uint64_t workflow_id, uint32_t rank);

/* Begins a task named `name` on the calling thread (nesting allowed up to
 * 64 deep per thread; the enclosing task becomes the parent).  Returns the
 * new task id, or 0 when capture is not initialised or nesting overflows.
 * Thread-safe; no locks; a syscall only on a thread's first call. */
uint64_t fc_task_begin(const char *name);

/* Ends the innermost open task of the calling thread with `status`
 * (FC_STATUS_*), attaching an optional payload (copied; NULL/0 for none).
 * Returns 0, -ENOENT if no task is open, or fc_ring_push's result. */
int fc_task_end(int status, const void *payload, uint32_t payload_len);

/* Allocates a task id of this process (thread-safe, lock-free):
 * (origin << 40) | (1 << 39) | counter.  Bit 39 set marks ids made in C;
 * the Python capture layer makes ids with bit 39 clear from its own
 * counter, so both can share one origin without colliding. */
uint64_t fc_task_next_id(void);

/* Sets the origin (24 bits, e.g. the MPI rank) that task ids are made of. */
void fc_task_set_origin(uint32_t origin);

/* Nanoseconds of CLOCK_REALTIME. */
int64_t fc_now_ns(void);

/* Flushes nothing (records are committed on push) and detaches; closes the
 * ring if fc_capture_init created it.  Returns 0. */
int fc_capture_finalize(void);

/* FC_CDEF_END */

#ifdef __cplusplus
}
#endif
#endif /* FLOWCEPT_H */
