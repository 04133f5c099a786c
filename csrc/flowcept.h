/*
 * flowcept.h -- the application API of flowcept's compiled hot path: ring
 * handles, batches, the C capture API.  The data formats (task record,
 * batch frame, ring and spill files) are in fc_format.h, included here.
 *
 * This header is read verbatim (minus preprocessor lines) by the cffi build
 * (flowcept/_build_ext.py), so it must stay plain C declarations between the
 * FC_CDEF_BEGIN / FC_CDEF_END markers.  The Python side
 * (flowcept/record/layout.py) builds its numpy dtypes from
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
 * Environment: the library reads the environment in exactly one place,
 * fc_capture_init() with ring_path == NULL, and only these variables:
 *   FLOWCEPT_SHM_DIR   directory of the rings (default /dev/shm)
 *   FLOWCEPT_JOB_ID    job name (first choice)
 *   SLURM_JOB_ID       job name (second choice; else "local-<pid>")
 * Nothing is read at load time.  The CRC software fallback is chosen by
 * fc_crc32c_force_soft(), not by the environment.
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

#include "fc_format.h"

#ifdef __cplusplus
extern "C" {
#endif

/* FC_CDEF_BEGIN */

/* ------------------------------------------------------------------ */
/* Versions                                                             */
/* ------------------------------------------------------------------ */

#define FC_ABI_VERSION 1      /* bumped on an incompatible change of this
                                 header (added functions/constants keep it) */
/* FC_FORMAT_VERSION (ring/spill/batch layouts): fc_format.h */

/* Returns FC_ABI_VERSION * 65536 + FC_FORMAT_VERSION of the compiled code. */
uint32_t fc_version(void);

/* The task record, the batch frame and the file formats: fc_format.h. */

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
#define FC_FULL_SPILL 0   /* append the record to the ring's spill file */
#define FC_FULL_BLOCK 1   /* wait up to block_timeout_ns, then count a drop */
#define FC_FULL_DROP 2    /* count a drop and return -ENOSPC */

typedef struct fc_ring_options {
    uint64_t capacity;        /* data bytes, power of two >= 4096 */
    uint32_t max_strings;     /* string table slots (default 4096, at most
                                 2^24); stored in the ring header */
    uint32_t strings_bytes;   /* string table bytes (default 256 KiB, at
                                 most 1 GiB; each name takes 2 + its length);
                                 stored in the ring header */
    int      full_policy;     /* FC_FULL_* */
    int64_t  block_timeout_ns;/* FC_FULL_BLOCK: max wait per push */
    const char *spill_path;   /* FC_FULL_SPILL: spill file path (created 0600
                                 on first spill); NULL = "<ring path>.spill" */
    uint64_t job_id;          /* stored in the ring header for recovery */
    uint64_t workflow_id;     /* default workflow id (informational) */
    uint32_t rank;            /* MPI world rank of the producer */
} fc_ring_options;

/* Fills *opts with defaults (1 MiB ring, spill policy). */
void fc_ring_options_init(fc_ring_options *opts);

/* Creates (O_CREAT|O_EXCL, mode 0600) and maps a ring file as its producer.
 * Ownership: the caller owns *out and must fc_ring_close() it.
 * The file's blocks are allocated at creation (posix_fallocate), so a full
 * file system (e.g. /dev/shm) fails here with -ENOSPC rather than with a
 * SIGBUS at a later push; the file is removed again on any failure.
 * Returns 0, -EEXIST if the file exists, -EINVAL on bad options, -ENOSPC,
 * -errno. */
int fc_ring_create(const char *path, const fc_ring_options *opts, fc_ring **out);

/* Maps an existing ring file as its consumer (another process, or the same).
 * Refuses a file not owned by the caller's euid or not a regular file
 * (opened with O_NOFOLLOW): -EPERM / -ELOOP.  -EPROTO for a ring of
 * another format version (it will never open: do not retry).  -EBADMSG for
 * a file that is not (yet) a complete ring header: a ring still being
 * created looks like this for a moment, so a caller may retry.
 * Exactly one consumer per ring at a time (the caller's responsibility). */
int fc_ring_open(const char *path, fc_ring **out);

/* Unmaps; does not unlink.  The producer marks the ring closed (clean end).
 * Not thread-safe with concurrent pushes on the same handle. */
void fc_ring_close(fc_ring *ring);

/* Interns an activity (or any) name; returns its id (>= 0), or -ENOSPC
 * when the string table is full (see below), -EINVAL on a NULL name with
 * len > 0.  A name longer than FC_NAME_MAX bytes is cut to at most
 * FC_NAME_MAX bytes at a UTF-8 character boundary (names that are not
 * UTF-8 are cut at FC_NAME_MAX) and interned as such: two long names with
 * the same first FC_NAME_MAX bytes share an id.  Thread-safe (short
 * spinlock in shared memory; not on the hot path: callers cache ids).
 * The string becomes visible to consumers before the id is returned.
 * Table full (-ENOSPC; its size is fc_ring_options.max_strings and
 * .strings_bytes): the caller records the task anyway with activity_id
 * FC_ACTIVITY_OVERFLOW, flag FC_FLAG_NAME_IN_PAYLOAD and the name in front
 * of the payload (fc_format.h); fc_task_begin does so itself, and
 * fc_name_in_payload builds such a payload. */
int fc_ring_intern(fc_ring *ring, const char *name, uint32_t len);

/* Length of `name` (len bytes) cut to FC_NAME_MAX at a UTF-8 boundary: the
 * number of bytes fc_ring_intern stores. */
uint32_t fc_name_cut(const char *name, uint32_t len);

/* Writes the FC_FLAG_NAME_IN_PAYLOAD prefix for `name` (cut like
 * fc_name_cut) to out: [u16 n][n bytes].  Returns the bytes written
 * (2 + n), or -ENOBUFS if cap is smaller. */
int fc_name_in_payload(const char *name, uint32_t len, void *out,
                       uint32_t cap);

/* Number of strings in the table and access to one (consumer side).
 * fc_ring_string returns a pointer into the mapping (valid until close) and
 * its length in *len, or NULL for an unknown id. */
uint32_t fc_ring_string_count(const fc_ring *ring);
const char *fc_ring_string(const fc_ring *ring, uint32_t id, uint32_t *len);

/* Pushes one task record and its payload (copied).  Lock-free, thread-safe,
 * wait-free when there is room.  rec->payload_len must equal payload_len.
 * Returns 0, or when full: 1 if spilled to the spill file, -ENOSPC if dropped
 * (FC_FULL_DROP), -ETIMEDOUT if dropped after blocking; drops are counted.
 * -EINVAL for an activity id not in the string table, except
 * FC_ACTIVITY_OVERFLOW with FC_FLAG_NAME_IN_PAYLOAD and a well-formed name
 * prefix (fc_name_in_payload). */
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
    uint64_t spilled;       /* records written to the spill file */
    uint64_t dropped;       /* records lost by the DROP/BLOCK policies */
    uint64_t torn;          /* half-written records skipped at recovery */
    uint64_t job_id;
    uint64_t workflow_id;
    uint64_t ring_uid;      /* random id of this ring, part of batch ids */
    uint32_t rank;
    int32_t  producer_pid;
    int      closed;        /* producer called fc_ring_close */
    uint32_t max_strings;   /* string table size, from the ring header */
    uint32_t strings_bytes;
    uint32_t string_count;  /* strings interned so far */
} fc_ring_stats;
void fc_ring_get_stats(const fc_ring *ring, fc_ring_stats *out);

/* Reads the record reserved at absolute position *pos, for a producer that
 * recovers after its own crash: it noted the head before pushing (into a
 * ring it alone produces into) and walks its records from there to learn
 * which were committed before it died.  A consumer's release does not erase
 * a slot, so the answer holds for drained records too, as long as no
 * producer wrote a later lap over them.  A committed padding slot at the
 * end of the data area is stepped over.  Returns 1 for a committed record:
 * its task id in *task_id (may be NULL) and *pos moved past it; 0 when no
 * committed record is there (reserved and torn, or not reserved yet);
 * -EINVAL when *pos is not 8-aligned or lies more than a lap below head. */
int fc_ring_slot_task(const fc_ring *ring, uint64_t *pos, uint64_t *task_id);

/* Spill file path of the ring (for the leader/epilog to replay). */
const char *fc_ring_spill_path(const fc_ring *ring);

/* Producer side: notes how its timestamps are taken (FC_BATCH_FLAG_CLOCK_*),
 * which every batch of the ring then carries.  The C API's fc_init does it
 * itself; a producer with its own clock (the Python wrappers) calls it once
 * after creating the ring, before its first push. */
void fc_ring_note_clock(fc_ring *ring, uint32_t flags);

/* ------------------------------------------------------------------ */
/* Batches                                                             */
/* ------------------------------------------------------------------ */

/* Batch frame layout (fc_batch_header): fc_format.h. */

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

/* Re-packs records from a spill file (written by the spill policy) starting
 * at byte `offset`; same contract as fc_ring_pack, seq = offset with bit 63
 * set.  Packs only entries ending at or before end_limit (0 = no limit), so
 * a caller that recorded the range it published can re-pack it identically.
 * `ring` supplies job id, ring uid, rank and the string table; it may be a
 * consumer handle.  *consumed receives the file bytes covered.  Returns
 * frame length, 0 at end of file, -errno.  A torn tail (producer killed
 * mid-write) is ignored.  Records get FC_FLAG_FROM_SPILL. */
int64_t fc_spill_pack(fc_ring *ring, const char *spill_path, uint64_t offset,
                      uint64_t end_limit, void *buf, uint64_t cap,
                      uint32_t max_records, uint64_t *consumed);

/* Old name of fc_spill_pack (same function), kept for existing callers. */
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
 *   -ERANGE   a record's payload or activity id is out of range, or an
 *             FC_ACTIVITY_OVERFLOW record lacks its name prefix */
int fc_batch_validate(const void *buf, uint64_t len);

/* The index entry of a batch (what a store keeps to skip whole batches in
 * queries), over its task records (workflow records are only counted). */
typedef struct fc_batch_summary {
    uint32_t tasks;       /* task records */
    uint32_t workflows;   /* workflow records */
    uint32_t errors;      /* task records with FC_STATUS_ERROR */
    uint32_t overflow;    /* task records naming FC_ACTIVITY_OVERFLOW */
    int64_t t0, t1;       /* min start_ns, max end_ns */
    int64_t s1, e0;       /* max start_ns, min end_ns */
    uint64_t id0, id1;    /* min, max task_id */
    uint32_t r0, r1;      /* min, max rank */
    uint32_t n_acts;      /* distinct activity ids (below string_count), ascending, in acts */
    uint32_t n_wfs;       /* distinct workflow ids, ascending, in wfs */
} fc_batch_summary;

/* Fills *out from a frame whose layout (offsets, record count) is sound.
 * acts must hold string_count entries, wfs max_wfs.  Returns 0, -EBADMSG
 * for a frame whose records lie outside [buf, buf+len), or -E2BIG when a
 * task record's activity id is neither below string_count nor
 * FC_ACTIVITY_OVERFLOW, or there are more than max_wfs workflow ids (the
 * caller computes those batches another way). */
int fc_batch_summarize(const void *buf, uint64_t len, fc_batch_summary *out,
                       uint32_t *acts, uint64_t *wfs, uint32_t max_wfs);

/* CRC32C (Castagnoli) of a buffer, continuing from `crc` (start with 0). */
uint32_t fc_crc32c(uint32_t crc, const void *buf, uint64_t len);

/* Makes fc_crc32c use the portable table code (force != 0) or the CPU's
 * crc32 instruction where there is one (force == 0, the default).  Both
 * give the same result; for tests and for CPUs that misreport SSE4.2.  Not
 * thread-safe with concurrent fc_crc32c calls. */
void fc_crc32c_force_soft(int force);

/* ------------------------------------------------------------------ */
/* Job ids                                                             */
/* ------------------------------------------------------------------ */

/* The 64-bit id of a job name, the same as Python's job_id_of: a name of
 * ASCII digits only whose value is < 2^63 is that number; any other name
 * (the empty one too) is BLAKE2b-64 (RFC 7693, digest_size 8, no key) of
 * its bytes read little-endian, with bit 63 set.  NULL gives 0. */
uint64_t fc_job_id_of(const char *name);

/* ------------------------------------------------------------------ */
/* C capture API for C/C++/Fortran MPI codes                           */
/* ------------------------------------------------------------------ */

/* Initialises the process's capture: creates the ring at `ring_path` with
 * `opts` (NULL = defaults).  ring_path NULL = the path flowcept's runtime,
 * `flowcept drain` and the SLURM epilog look in:
 * $FLOWCEPT_SHM_DIR (default /dev/shm)/flowcept-<uid>/<job>/<rank>.<pid>.ring
 * with job = $FLOWCEPT_JOB_ID, else $SLURM_JOB_ID, else local-<pid>
 * (directories created 0700; a foreign or linked one gives -EPERM), and
 * the ring's job id (unless opts->job_id is set) = fc_job_id_of(job).
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
 * When the ring's string table is full the task is still recorded, with
 * activity_id FC_ACTIVITY_OVERFLOW and the name in its payload
 * (FC_FLAG_NAME_IN_PAYLOAD; that slow path copies the name and allocates).
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
