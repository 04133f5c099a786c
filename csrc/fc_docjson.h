/*
 * fc_docjson.h -- task documents as JSON, written in C straight from the
 * record columns, the string tables and the msgpack payloads
 * (csrc/docjson.c), for the read path's outputs: JSON lines, pages,
 * Parquet's JSON columns; and the scalar values of used/generated that
 * lineage links by.
 *
 * The Python document path (flowcept/record/document.py, flowcept/query/
 * documents.py) is the reference and keeps the policy: these functions
 * write exactly its bytes for every row they write, and leave to it
 * (state FC_ROW_PYTHON, nothing written) every row whose payload is not
 * plain: msgpack that does not decode, ext types, map keys that are not
 * text or repeat, text that is not UTF-8, nesting deeper than
 * FC_JSON_MAX_DEPTH.
 *
 * Every function is pure (reads its inputs, writes its outputs) and may run
 * on several threads at once.  Read by the cffi build between FC_CDEF_BEGIN
 * and FC_CDEF_END.
 */
#ifndef FC_DOCJSON_H
#define FC_DOCJSON_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* FC_CDEF_BEGIN */

/* The two JSON texts of the Python side: orjson.dumps (floats such as
 * 0.00001 and 1e-7, 1e+16) and json.dumps(..., ensure_ascii=False,
 * separators=(",", ":")) (floats as repr: 1e-05, 1e+16).  Text is UTF-8 in
 * both, with the same escapes; NaN and infinities are null. */
#define FC_JSON_ORJSON 0
#define FC_JSON_PYTHON 1

/* Deeper payload values are left to Python. */
#define FC_JSON_MAX_DEPTH 64

/* The fields of a task document, in document order. */
#define FC_DOC_TASK_ID 0
#define FC_DOC_WORKFLOW_ID 1
#define FC_DOC_PARENT_TASK_ID 2
#define FC_DOC_ACTIVITY_ID 3
#define FC_DOC_STATUS 4
#define FC_DOC_STARTED_AT 5
#define FC_DOC_ENDED_AT 6
#define FC_DOC_START_NS 7
#define FC_DOC_END_NS 8
#define FC_DOC_RANK 9
#define FC_DOC_THREAD_ID 10
#define FC_DOC_HOSTNAME 11
#define FC_DOC_USED 12
#define FC_DOC_GENERATED 13
#define FC_DOC_TAGS 14
#define FC_DOC_CUSTOM_METADATA 15
#define FC_DOC_ERROR 16
#define FC_DOC_PAYLOAD 17
#define FC_DOC_PAYLOAD_ERROR 18
#define FC_DOC_NFIELDS 19

/* What became of a row (state[]). */
#define FC_ROW_DONE 0
#define FC_ROW_ABSENT 1   /* fc_docs_value_json: the row has no such field */
#define FC_ROW_PYTHON 2   /* left to the Python reference; nothing written */

/* Rows to write: n rows, row i's fields from element i of each array.
 * activity, hostname and status are indexes into the literals: literal k is
 * the complete JSON text (a quoted string) lit_text[lit_off[k] ..
 * lit_off[k + 1]); an empty literal marks a text only Python writes (rows
 * using it are left to Python).  payload[i] is the address of
 * row i's own payload (any name prefix skipped) and payload_len[i] its
 * length; flags[i] & msgpack_flag says it is msgpack (else it is opaque
 * bytes, written as hex). */
typedef struct fc_doc_rows {
    uint64_t n;
    const uint64_t *workflow_id;
    const uint64_t *task_id;
    const uint64_t *parent_id;
    const int64_t *start_ns;
    const int64_t *end_ns;
    const uint32_t *rank;
    const uint32_t *thread_id;
    const uint32_t *activity;
    const uint32_t *status;
    const uint32_t *hostname;
    const uint16_t *flags;
    const uint64_t *payload;
    const uint32_t *payload_len;
    const char *lit_text;
    const uint64_t *lit_off;
    uint32_t nlits;
    uint16_t msgpack_flag;
} fc_doc_rows;

/* Writes the documents of rows first, first+1, ... into out, each followed
 * by the byte sep (none when sep < 0), as long as the next one surely fits
 * in cap.  fields: the fields of each document in output order (the
 * projection; those a row lacks are left out), or NULL with nfields 0 for
 * whole documents.  ends[i] (for each row i written or skipped) is where
 * row i's text ends in out; state[i] is FC_ROW_DONE or FC_ROW_PYTHON.
 * Returns the number of rows handled (0 when the first one needs a larger
 * out), or -EINVAL (a field code, a lit index or the style out of range). */
int64_t fc_docs_json(const fc_doc_rows *rows, uint64_t first, const uint8_t *fields,
                     uint32_t nfields, uint32_t style, int32_t sep, char *out, uint64_t cap,
                     uint64_t *ends, uint8_t *state);

/* The JSON of one payload field (FC_DOC_USED .. FC_DOC_ERROR) of rows
 * first, first+1, ...: state FC_ROW_ABSENT (nothing written) where a row
 * has none or its value is nil (a column's null).  Otherwise as
 * fc_docs_json. */
int64_t fc_docs_value_json(const fc_doc_rows *rows, uint64_t first, uint32_t field,
                           uint32_t style, char *out, uint64_t cap, uint64_t *ends,
                           uint8_t *state);

/* Lineage: the values of a row's used and generated maps that data links
 * are made of -- text, bytes, integers and floats (not booleans, nil or
 * NaN), at the top of the map or in a top-level array -- each as a 128-bit
 * key equal for values Python finds equal (1 == 1.0; text and bytes of up
 * to 14 bytes exactly, longer ones by a 128-bit SipHash).  For rows first,
 * first+1, ... while their values fit in cap: key k of value v at
 * keys[2v], keys[2v+1], its row at row_of[v], kind[v] 0 for used and 1
 * for generated; state[i] FC_ROW_DONE or FC_ROW_PYTHON.  *count is the
 * number of values written.  Returns the number of rows handled. */
int64_t fc_doc_scalars(const fc_doc_rows *rows, uint64_t first, uint64_t *keys,
                       uint64_t *row_of, uint8_t *kind, uint64_t cap, uint64_t *count,
                       uint8_t *state);

/* The key of one msgpack scalar (as fc_doc_scalars): 1 when it takes part
 * (key in key[0], key[1]), 0 when it does not (nil, a boolean, NaN, a
 * container), -EBADMSG when data is not one such value. */
int fc_scalar_key(const uint8_t *data, uint64_t len, uint64_t *key);

/* Writes a double as the style prints it (at most 32 bytes); returns the
 * length. */
int fc_json_double(double v, uint32_t style, char *out);

/* FC_CDEF_END */

#ifdef __cplusplus
}
#endif
#endif /* FC_DOCJSON_H */
