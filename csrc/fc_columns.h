/*
 * fc_columns.h -- the compaction's column work in C (csrc/columns.c): task
 * records of batch frames decoded into one array per column, rows of
 * several sorted parts merged into one order, duplicates dropped from it,
 * and the columns gathered in that order into the bytes of an HDF5 chunk
 * (shuffled into byte planes for the shuffle filter).
 *
 * Which columns there are, and from which record field, is not written
 * here: the caller describes each column (fc_column) from the record dtype
 * (flowcept/record/layout.py, checked against fc_format.h at load).
 *
 * Every function is pure: it reads its inputs, writes only its outputs, and
 * may be called from several threads at once on shared inputs.  Read by the
 * cffi build between FC_CDEF_BEGIN and FC_CDEF_END like flowcept.h.
 */
#ifndef FC_COLUMNS_H
#define FC_COLUMNS_H

#include <stdint.h>

#include "fc_format.h"

#ifdef __cplusplus
extern "C" {
#endif

/* FC_CDEF_BEGIN */

/* How a column is filled from a task record (fc_column.kind). */
#define FC_COL_COPY 0    /* the field as it is (zero-extended to dst_size) */
#define FC_COL_LUT 1     /* a 4-byte field mapped through lut; ids at or past
                            lut_len map to lut[lut_len - 1] */
#define FC_COL_ADD 2     /* the field (zero-extended) plus value */
#define FC_COL_CONST 3   /* value, the same for every row */
#define FC_COL_SEQ 4     /* value + the row's index among the batch's rows */

typedef struct fc_column {
    void *dst;            /* row r at dst + r * dst_size */
    uint32_t src_off;     /* COPY, LUT, ADD: byte offset of the field in
                             fc_task_record */
    uint16_t src_size;    /* COPY, LUT, ADD: 1, 2, 4 or 8 */
    uint16_t dst_size;    /* 1, 2, 4 or 8; >= src_size */
    uint32_t kind;        /* FC_COL_* */
    uint32_t lut_len;     /* LUT: entries of lut (>= 1) */
    const uint32_t *lut;  /* LUT */
    uint64_t value;       /* ADD, CONST, SEQ */
} fc_column;

/* Writes the task records of a batch frame (workflow records are skipped)
 * into rows at, at+1, ... of each column, at most cap rows in all.  Returns
 * the number of rows written, -EBADMSG when the frame's header places the
 * records outside [frame, frame + len), -ENOSPC when they would pass cap,
 * -EINVAL for a column description that does not fit the record. */
int64_t fc_batch_columns(const void *frame, uint64_t len, const fc_column *cols,
                         uint32_t ncols, uint64_t at, uint64_t cap);

/* A merged order names each row by its part and its row in that part:
 * (part << FC_ORDER_ROW_BITS) | row. */
#define FC_ORDER_ROW_BITS 40
#define FC_ORDER_MAX_PARTS 16777216

/* Merges k parts, each sorted by (keys, seqs) -- by keys alone, ties in
 * row order, when seqs is NULL -- into order[0..n) and, when merged_keys is
 * not NULL, their keys in that order.  Ties of (key, seq) go by part.
 * Returns n (the sum of lens), or -EINVAL (k past FC_ORDER_MAX_PARTS, a
 * part of 2^40 rows or more, a NULL keys[i] of a non-empty part). */
int64_t fc_merge_order(uint32_t k, const int64_t *const *keys,
                       const int64_t *const *seqs, const uint64_t *lens,
                       uint64_t *order, int64_t *merged_keys);

/* Drops duplicates from rows in merged order: among rows of equal key
 * (keys[i] is the key of order[i], non-decreasing) those with the same
 * (workflow_id, task_id) are one task; the first of them whose status is
 * not `running` is kept, else the first.  Part p has lens[p] rows.
 * Compacts order and keys in place and returns how many rows are left, or
 * -ENOMEM, or -EINVAL (keys not sorted, a row outside its part). */
int64_t fc_drop_duplicates(uint64_t *order, int64_t *keys, uint64_t n, uint32_t nparts,
                           const uint64_t *lens, const uint64_t *const *workflow_id,
                           const uint64_t *const *task_id,
                           const uint16_t *const *status, uint16_t running);

/* Rows of a chunk: n of them, either rows first.. of the piece's part 0
 * (order NULL) or the rows order[0..n) names; the piece's part p has
 * lens[p] rows. */
typedef struct fc_gather_piece {
    const uint64_t *lens;
    const uint64_t *order;
    uint64_t first;
    uint64_t n;
    uint32_t nparts;
} fc_gather_piece;

/* fc_gather_column.flags */
#define FC_GATHER_SHUFFLE 1   /* out in HDF5's shuffled byte planes */
#define FC_GATHER_MAX 2       /* itemsize 8: the largest element into max */

/* One column to gather: its array in each part of each piece, piece after
 * piece (bases[nparts of the pieces before + p]), and where it goes: out
 * holds chunk elements of itemsize bytes (1, 2, 4 or 8). */
typedef struct fc_gather_column {
    const void *const *bases;
    void *out;
    uint32_t itemsize;
    uint32_t flags;
    int64_t max;              /* FC_GATHER_MAX: set (INT64_MIN for no rows) */
} fc_gather_column;

/* Gathers the rows of the pieces, one after the other, into each column's
 * out; elements past them are zero.  With FC_GATHER_SHUFFLE, out is what
 * HDF5's shuffle filter makes of the chunk: byte b of element i at
 * out[b * chunk + i].  The order is read once for all the columns.
 * Returns the number of rows, or -EINVAL (an itemsize, more rows than
 * chunk, a row outside its part, a missing array), -ENOMEM. */
int64_t fc_gather(const fc_gather_piece *pieces, uint32_t npieces,
                  fc_gather_column *cols, uint32_t ncols, uint64_t chunk);

/* FC_CDEF_END */

#ifdef __cplusplus
}
#endif
#endif /* FC_COLUMNS_H */
