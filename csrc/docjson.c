/* docjson.c -- task documents as JSON straight from columns and msgpack
 * payloads, and the scalar values lineage links by.  Contracts:
 * fc_docjson.h.  The Python document path is the reference: a payload is
 * written here only when it is plain (it decodes in Python to the same
 * values, in the same order, whatever the details of msgpack-python's
 * decoder); anything else is left to Python (FC_ROW_PYTHON). */
#include "fc_docjson.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "ryu.h"

static const char HEX[] = "0123456789abcdef";

/* ------------------------------------------------------------------ */
/* Text out                                                            */
/* ------------------------------------------------------------------ */

static inline char *put(char *o, const void *s, size_t n)
{
    memcpy(o, s, n);
    return o + n;
}

#define PUTS(o, lit) put((o), (lit), sizeof(lit) - 1)

static char *put_u64(char *o, uint64_t v)
{
    char tmp[20];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        *o++ = tmp[--n];
    return o;
}

static char *put_i64(char *o, int64_t v)
{
    if (v < 0) {
        *o++ = '-';
        return put_u64(o, (uint64_t)0 - (uint64_t)v);
    }
    return put_u64(o, (uint64_t)v);
}

static char *put_hex16(char *o, uint64_t v)
{
    for (int i = 15; i >= 0; i--) {
        o[i] = HEX[v & 15];
        v >>= 4;
    }
    return o + 16;
}

/* Python's float repr (FC_JSON_PYTHON) or orjson's float text: the same
 * shortest digits; fixed notation for decimal exponents in [-4, 16)
 * (orjson: [-5, 16)), else d.ddde+XX (Python: at least two exponent digits). */
static char *put_double(char *o, double v, uint32_t style)
{
    if (!isfinite(v))
        return PUTS(o, "null");
    if (v == 0) {
        if (signbit(v))
            *o++ = '-';
        return PUTS(o, "0.0");
    }
    if (v < 0) {
        *o++ = '-';
        v = -v;
    }
    uint64_t d;
    int32_t e;
    int n = fc_ryu_shortest(v, &d, &e);
    char dig[20];
    for (int i = n - 1; i >= 0; i--) {
        dig[i] = (char)('0' + d % 10);
        d /= 10;
    }
    int x = e + n - 1;   /* v = d.ddd * 10^x */
    int lo = style == FC_JSON_ORJSON ? -5 : -4;
    if (x >= lo && x < 16) {
        if (x >= n - 1) {   /* an integer: the digits, zeros, ".0" */
            o = put(o, dig, (size_t)n);
            for (int i = 0; i < x - (n - 1); i++)
                *o++ = '0';
            return PUTS(o, ".0");
        }
        if (x >= 0) {
            o = put(o, dig, (size_t)x + 1);
            *o++ = '.';
            return put(o, dig + x + 1, (size_t)(n - x - 1));
        }
        *o++ = '0';
        *o++ = '.';
        for (int i = 0; i < -x - 1; i++)
            *o++ = '0';
        return put(o, dig, (size_t)n);
    }
    *o++ = dig[0];
    if (n > 1) {
        *o++ = '.';
        o = put(o, dig + 1, (size_t)n - 1);
    }
    *o++ = 'e';
    if (x < 0) {
        *o++ = '-';
        x = -x;
    } else {
        *o++ = '+';
    }
    if (style == FC_JSON_PYTHON && x < 10)
        *o++ = '0';
    return put_u64(o, (uint64_t)x);
}

int fc_json_double(double v, uint32_t style, char *out)
{
    return (int)(put_double(out, v, style) - out);
}

/* A JSON string of valid UTF-8 text: " \ and control characters escaped
 * (\b \f \n \r \t, else \u00xx), everything else as it is: what orjson and
 * json.dumps(ensure_ascii=False) both write. */
static char *put_str(char *o, const uint8_t *s, uint64_t n)
{
    *o++ = '"';
    uint64_t i = 0;
    while (i < n) {
        uint64_t j = i;
        while (j < n && s[j] >= 0x20 && s[j] != '"' && s[j] != '\\')
            j++;
        o = put(o, s + i, (size_t)(j - i));
        if (j == n)
            break;
        uint8_t c = s[j];
        *o++ = '\\';
        switch (c) {
        case '"': *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        case '\n': *o++ = 'n'; break;
        case '\r': *o++ = 'r'; break;
        case '\t': *o++ = 't'; break;
        case '\b': *o++ = 'b'; break;
        case '\f': *o++ = 'f'; break;
        default:
            o = PUTS(o, "u00");
            *o++ = HEX[c >> 4];
            *o++ = HEX[c & 15];
        }
        i = j + 1;
    }
    *o++ = '"';
    return o;
}

static char *put_hexstr(char *o, const uint8_t *s, uint64_t n)
{
    *o++ = '"';
    for (uint64_t i = 0; i < n; i++) {
        *o++ = HEX[s[i] >> 4];
        *o++ = HEX[s[i] & 15];
    }
    *o++ = '"';
    return o;
}

/* ------------------------------------------------------------------ */
/* msgpack in                                                          */
/* ------------------------------------------------------------------ */

enum { K_NIL, K_BOOL, K_UINT, K_INT, K_F32, K_F64, K_STR, K_BIN, K_ARR, K_MAP };

typedef struct mp {
    int kind;
    uint64_t u;            /* UINT; BOOL; STR/BIN/ARR/MAP: length or count */
    int64_t i;             /* INT */
    double f;              /* F32, F64 */
    const uint8_t *data;   /* STR, BIN */
} mp;

static inline uint64_t be(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int k = 0; k < n; k++)
        v = v << 8 | p[k];
    return v;
}

/* The head of the value at p: its kind and scalar or length, and where what
 * follows it starts (STR/BIN: after the bytes).  -1: not plain msgpack
 * (truncated, 0xc1, ext types, more elements than bytes left). */
static int head(const uint8_t *p, const uint8_t *end, mp *v, const uint8_t **next)
{
    if (p >= end)
        return -1;
    uint8_t b = *p++;
    int len_bytes = 0;
    if (b <= 0x7f) {
        v->kind = K_UINT;
        v->u = b;
    } else if (b >= 0xe0) {
        v->kind = K_INT;
        v->i = (int8_t)b;
    } else if (b <= 0x8f) {
        v->kind = K_MAP;
        v->u = b & 15u;
    } else if (b <= 0x9f) {
        v->kind = K_ARR;
        v->u = b & 15u;
    } else if (b <= 0xbf) {
        v->kind = K_STR;
        v->u = b & 31u;
    } else {
        switch (b) {
        case 0xc0: v->kind = K_NIL; break;
        case 0xc2: v->kind = K_BOOL; v->u = 0; break;
        case 0xc3: v->kind = K_BOOL; v->u = 1; break;
        case 0xc4: v->kind = K_BIN; len_bytes = 1; break;
        case 0xc5: v->kind = K_BIN; len_bytes = 2; break;
        case 0xc6: v->kind = K_BIN; len_bytes = 4; break;
        case 0xca: {
            if (end - p < 4)
                return -1;
            uint32_t bits = (uint32_t)be(p, 4);
            float f;
            memcpy(&f, &bits, 4);
            v->kind = K_F32;
            v->f = (double)f;
            p += 4;
            break;
        }
        case 0xcb: {
            if (end - p < 8)
                return -1;
            uint64_t bits = be(p, 8);
            memcpy(&v->f, &bits, 8);
            v->kind = K_F64;
            p += 8;
            break;
        }
        case 0xcc: case 0xcd: case 0xce: case 0xcf: {
            int n = 1 << (b - 0xcc);
            if (end - p < n)
                return -1;
            v->kind = K_UINT;
            v->u = be(p, n);
            p += n;
            break;
        }
        case 0xd0: case 0xd1: case 0xd2: case 0xd3: {
            int n = 1 << (b - 0xd0);
            if (end - p < n)
                return -1;
            uint64_t raw = be(p, n);
            int64_t x;
            if (n == 8) {
                memcpy(&x, &raw, 8);
            } else {
                uint64_t sign = 1ull << (8 * n - 1);
                x = (int64_t)(raw ^ sign) - (int64_t)sign;
            }
            v->kind = K_INT;
            v->i = x;
            p += n;
            break;
        }
        case 0xd9: v->kind = K_STR; len_bytes = 1; break;
        case 0xda: v->kind = K_STR; len_bytes = 2; break;
        case 0xdb: v->kind = K_STR; len_bytes = 4; break;
        case 0xdc: v->kind = K_ARR; len_bytes = 2; break;
        case 0xdd: v->kind = K_ARR; len_bytes = 4; break;
        case 0xde: v->kind = K_MAP; len_bytes = 2; break;
        case 0xdf: v->kind = K_MAP; len_bytes = 4; break;
        default:
            return -1;   /* 0xc1, ext, fixext */
        }
        if (len_bytes) {
            if (end - p < len_bytes)
                return -1;
            v->u = be(p, len_bytes);
            p += len_bytes;
        }
    }
    if (v->kind == K_STR || v->kind == K_BIN) {
        if ((uint64_t)(end - p) < v->u)
            return -1;
        v->data = p;
        p += v->u;
    } else if (v->kind == K_ARR || v->kind == K_MAP) {
        uint64_t min_bytes = v->kind == K_MAP ? 2 * v->u : v->u;
        if ((uint64_t)(end - p) < min_bytes)
            return -1;
    }
    *next = p;
    return 0;
}

/* Strict UTF-8, as Python's decoder: no overlong forms, no surrogates,
 * nothing past U+10FFFF. */
static bool utf8_ok(const uint8_t *s, uint64_t n)
{
    uint64_t i = 0;
    while (i < n) {
        while (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (w & 0x8080808080808080ull)
                break;
            i += 8;
        }
        if (i >= n)
            break;
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        uint64_t need;
        uint8_t lo = 0x80, hi = 0xbf;
        if (c >= 0xc2 && c <= 0xdf) {
            need = 1;
        } else if (c >= 0xe0 && c <= 0xef) {
            need = 2;
            if (c == 0xe0)
                lo = 0xa0;
            else if (c == 0xed)
                hi = 0x9f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            need = 3;
            if (c == 0xf0)
                lo = 0x90;
            else if (c == 0xf4)
                hi = 0x8f;
        } else {
            return false;
        }
        if (n - i - 1 < need)
            return false;
        if (s[i + 1] < lo || s[i + 1] > hi)
            return false;
        for (uint64_t k = 2; k <= need; k++)
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
        i += need + 1;
    }
    return true;
}

typedef struct span {
    const uint8_t *s;
    uint64_t n;
} span;

static uint64_t fnv(const uint8_t *s, uint64_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (uint64_t i = 0; i < n; i++)
        h = (h ^ s[i]) * 0x100000001b3ull;
    return h;
}

typedef struct keyref {
    uint64_t h;
    span k;
} keyref;

static int keyref_cmp(const void *a, const void *b)
{
    const keyref *x = a, *y = b;
    if (x->h != y->h)
        return x->h < y->h ? -1 : 1;
    if (x->k.n != y->k.n)
        return x->k.n < y->k.n ? -1 : 1;
    return memcmp(x->k.s, y->k.s, (size_t)x->k.n);
}

static inline bool same(span a, span b)
{
    return a.n == b.n && memcmp(a.s, b.s, (size_t)a.n) == 0;
}

/* Whether the n keys are distinct (a Python dict keeps the last of equal
 * keys at the first one's place: such maps are left to Python). */
static int keys_distinct(const span *keys, uint64_t n)
{
    if (n <= 16) {
        for (uint64_t a = 1; a < n; a++)
            for (uint64_t b = 0; b < a; b++)
                if (same(keys[a], keys[b]))
                    return 0;
        return 1;
    }
    keyref *r = malloc((size_t)n * sizeof *r);
    if (!r)
        return -1;
    for (uint64_t a = 0; a < n; a++) {
        r[a].h = fnv(keys[a].s, keys[a].n);
        r[a].k = keys[a];
    }
    qsort(r, (size_t)n, sizeof *r, keyref_cmp);
    int ok = 1;
    for (uint64_t a = 1; a < n && ok; a++)
        if (r[a].h == r[a - 1].h && same(r[a].k, r[a - 1].k))
            ok = 0;
    free(r);
    return ok;
}

/* The payload fields a map may carry into the document (PAYLOAD_FIELDS). */
static const struct {
    const char *name;
    uint32_t n;
} PFIELD[5] = {{"used", 4}, {"generated", 9}, {"tags", 4}, {"custom_metadata", 15}, {"error", 5}};

/* Skips the value at *pp if it is plain: text valid UTF-8, map keys text
 * and distinct, no deeper than FC_JSON_MAX_DEPTH.  For the payload's own
 * map (top non-NULL), records where each PFIELD value starts.  0 or -1. */
static int skip_plain(const uint8_t **pp, const uint8_t *end, int depth, const uint8_t **top)
{
    mp v;
    const uint8_t *p;
    if (head(*pp, end, &v, &p))
        return -1;
    if (v.kind == K_STR) {
        if (!utf8_ok(v.data, v.u))
            return -1;
    } else if (v.kind == K_ARR) {
        if (depth >= FC_JSON_MAX_DEPTH)
            return -1;
        for (uint64_t k = 0; k < v.u; k++)
            if (skip_plain(&p, end, depth + 1, NULL))
                return -1;
    } else if (v.kind == K_MAP) {
        if (depth >= FC_JSON_MAX_DEPTH)
            return -1;
        span small[16];
        span *keys = v.u <= 16 ? small : malloc((size_t)v.u * sizeof *keys);
        if (!keys)
            return -1;
        int rc = 0;
        for (uint64_t k = 0; k < v.u && !rc; k++) {
            mp key;
            if (head(p, end, &key, &p) || key.kind != K_STR || !utf8_ok(key.data, key.u)) {
                rc = -1;
                break;
            }
            keys[k].s = key.data;
            keys[k].n = key.u;
            if (top) {
                for (int f = 0; f < 5; f++)
                    if (key.u == PFIELD[f].n && !memcmp(key.data, PFIELD[f].name, key.u))
                        top[f] = p;
            }
            rc = skip_plain(&p, end, depth + 1, NULL);
        }
        if (!rc && keys_distinct(keys, v.u) != 1)
            rc = -1;
        if (keys != small)
            free(keys);
        if (rc)
            return -1;
    }
    *pp = p;
    return 0;
}

/* Writes the (plain) value at *pp as JSON. */
static char *render(const uint8_t **pp, const uint8_t *end, char *o, uint32_t style)
{
    mp v;
    const uint8_t *p;
    if (head(*pp, end, &v, &p))   /* cannot happen: checked by skip_plain */
        return PUTS(o, "null");
    switch (v.kind) {
    case K_NIL: o = PUTS(o, "null"); break;
    case K_BOOL: o = v.u ? PUTS(o, "true") : PUTS(o, "false"); break;
    case K_UINT: o = put_u64(o, v.u); break;
    case K_INT: o = put_i64(o, v.i); break;
    case K_F32:
    case K_F64: o = put_double(o, v.f, style); break;
    case K_STR: o = put_str(o, v.data, v.u); break;
    case K_BIN: o = put_hexstr(o, v.data, v.u); break;
    case K_ARR:
        *o++ = '[';
        for (uint64_t k = 0; k < v.u; k++) {
            if (k)
                *o++ = ',';
            o = render(&p, end, o, style);
        }
        *o++ = ']';
        break;
    default:
        *o++ = '{';
        for (uint64_t k = 0; k < v.u; k++) {
            if (k)
                *o++ = ',';
            o = render(&p, end, o, style);
            *o++ = ':';
            o = render(&p, end, o, style);
        }
        *o++ = '}';
        break;
    }
    *pp = p;
    return o;
}

/* What a row's payload brings to its document. */
enum { P_NONE, P_MAP, P_VALUE, P_OPAQUE, P_PYTHON };

typedef struct pview {
    int kind;
    const uint8_t *start, *end;
    const uint8_t *field[5];   /* P_MAP: where each PFIELD value starts, or NULL */
} pview;

static void view_payload(const fc_doc_rows *r, uint64_t i, pview *pv)
{
    uint64_t n = r->payload_len[i];
    memset(pv, 0, sizeof *pv);
    if (!n) {
        pv->kind = P_NONE;
        return;
    }
    pv->start = (const uint8_t *)(uintptr_t)r->payload[i];
    pv->end = pv->start + n;
    if (!(r->flags[i] & r->msgpack_flag)) {
        pv->kind = P_OPAQUE;
        return;
    }
    const uint8_t *p = pv->start;
    mp v;
    const uint8_t *after;
    if (head(p, pv->end, &v, &after)) {
        pv->kind = P_PYTHON;
        return;
    }
    bool is_map = v.kind == K_MAP;
    if (skip_plain(&p, pv->end, 0, is_map ? pv->field : NULL) || p != pv->end) {
        pv->kind = P_PYTHON;
        return;
    }
    pv->kind = is_map ? P_MAP : P_VALUE;
}

/* ------------------------------------------------------------------ */
/* Documents                                                           */
/* ------------------------------------------------------------------ */

static const struct {
    const char *key;
    uint32_t n;
} FKEY[FC_DOC_NFIELDS] = {
    {"\"task_id\":", 10}, {"\"workflow_id\":", 14}, {"\"parent_task_id\":", 17},
    {"\"activity_id\":", 14}, {"\"status\":", 9}, {"\"started_at\":", 13},
    {"\"ended_at\":", 11}, {"\"start_ns\":", 11}, {"\"end_ns\":", 9}, {"\"rank\":", 7},
    {"\"thread_id\":", 12}, {"\"hostname\":", 11}, {"\"used\":", 7}, {"\"generated\":", 12},
    {"\"tags\":", 7}, {"\"custom_metadata\":", 18}, {"\"error\":", 8}, {"\"payload\":", 10},
    {"\"payload_error\":", 16},
};

static const uint8_t ALL_FIELDS[FC_DOC_NFIELDS] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9,
                                                   10, 11, 12, 13, 14, 15, 16, 17, 18};

static inline char *put_lit(char *o, const fc_doc_rows *r, uint32_t k)
{
    return put(o, r->lit_text + r->lit_off[k], (size_t)(r->lit_off[k + 1] - r->lit_off[k]));
}

static inline uint64_t lit_len(const fc_doc_rows *r, uint32_t k)
{
    return r->lit_off[k + 1] - r->lit_off[k];
}

/* At most what a row's document takes: 6 text bytes per payload byte and
 * a comma, and the fixed fields. */
static uint64_t row_bound(const fc_doc_rows *r, uint64_t i)
{
    return 640 + 8 * (uint64_t)r->payload_len[i] + lit_len(r, r->activity[i]) +
           lit_len(r, r->status[i]) + lit_len(r, r->hostname[i]);
}

static char *put_fixed(char *o, const fc_doc_rows *r, uint64_t i, int f, uint32_t style)
{
    switch (f) {
    case FC_DOC_TASK_ID:
        *o++ = '"';
        o = put_hex16(o, r->workflow_id[i]);
        *o++ = '-';
        o = put_hex16(o, r->task_id[i]);
        *o++ = '"';
        return o;
    case FC_DOC_WORKFLOW_ID:
        *o++ = '"';
        o = put_hex16(o, r->workflow_id[i]);
        *o++ = '"';
        return o;
    case FC_DOC_PARENT_TASK_ID:
        if (!r->parent_id[i])
            return PUTS(o, "null");
        *o++ = '"';
        o = put_hex16(o, r->workflow_id[i]);
        *o++ = '-';
        o = put_hex16(o, r->parent_id[i]);
        *o++ = '"';
        return o;
    case FC_DOC_ACTIVITY_ID: return put_lit(o, r, r->activity[i]);
    case FC_DOC_STATUS: return put_lit(o, r, r->status[i]);
    case FC_DOC_STARTED_AT: return put_double(o, (double)r->start_ns[i] / 1e9, style);
    case FC_DOC_ENDED_AT: return put_double(o, (double)r->end_ns[i] / 1e9, style);
    case FC_DOC_START_NS: return put_i64(o, r->start_ns[i]);
    case FC_DOC_END_NS: return put_i64(o, r->end_ns[i]);
    case FC_DOC_RANK: return put_u64(o, r->rank[i]);
    case FC_DOC_THREAD_ID: return put_u64(o, r->thread_id[i]);
    default: return put_lit(o, r, r->hostname[i]);
    }
}

/* The value of a payload-sourced field of a row, or NULL when it has none:
 * *opaque set when it is the payload's raw bytes (hex). */
static const uint8_t *payload_field(const pview *pv, int f, int *opaque)
{
    *opaque = 0;
    if (f >= FC_DOC_USED && f <= FC_DOC_ERROR)
        return pv->kind == P_MAP ? pv->field[f - FC_DOC_USED] : NULL;
    if (f == FC_DOC_PAYLOAD) {
        if (pv->kind == P_VALUE)
            return pv->start;
        if (pv->kind == P_OPAQUE) {
            *opaque = 1;
            return pv->start;
        }
    }
    return NULL;   /* payload_error: only on payloads left to Python */
}

static int check_rows(const fc_doc_rows *r, uint64_t first, uint32_t style)
{
    if (style != FC_JSON_ORJSON && style != FC_JSON_PYTHON)
        return -EINVAL;
    for (uint64_t i = first; i < r->n; i++)
        if (r->activity[i] >= r->nlits || r->status[i] >= r->nlits || r->hostname[i] >= r->nlits)
            return -EINVAL;
    return 0;
}

int64_t fc_docs_json(const fc_doc_rows *r, uint64_t first, const uint8_t *fields,
                     uint32_t nfields, uint32_t style, int32_t sep, char *out, uint64_t cap,
                     uint64_t *ends, uint8_t *state)
{
    if (!fields || !nfields) {
        fields = ALL_FIELDS;
        nfields = FC_DOC_NFIELDS;
    }
    bool need_payload = false;
    for (uint32_t k = 0; k < nfields; k++) {
        if (fields[k] >= FC_DOC_NFIELDS)
            return -EINVAL;
        need_payload |= fields[k] >= FC_DOC_USED;
    }
    int rc = check_rows(r, first, style);
    if (rc)
        return rc;
    char *o = out;
    uint64_t i = first;
    for (; i < r->n; i++) {
        if ((uint64_t)(o - out) + row_bound(r, i) > cap)
            break;
        pview pv = {P_NONE, NULL, NULL, {NULL}};
        if (need_payload)
            view_payload(r, i, &pv);
        if (pv.kind == P_PYTHON || !lit_len(r, r->activity[i]) || !lit_len(r, r->status[i]) ||
            !lit_len(r, r->hostname[i])) {
            state[i] = FC_ROW_PYTHON;
            ends[i] = (uint64_t)(o - out);
            continue;
        }
        *o++ = '{';
        bool any = false;
        for (uint32_t k = 0; k < nfields; k++) {
            int f = fields[k];
            if (f < FC_DOC_USED) {
                if (any)
                    *o++ = ',';
                o = put(o, FKEY[f].key, FKEY[f].n);
                o = put_fixed(o, r, i, f, style);
                any = true;
                continue;
            }
            int opaque;
            const uint8_t *at = payload_field(&pv, f, &opaque);
            if (!at)
                continue;
            if (any)
                *o++ = ',';
            o = put(o, FKEY[f].key, FKEY[f].n);
            o = opaque ? put_hexstr(o, pv.start, (uint64_t)(pv.end - pv.start))
                       : render(&at, pv.end, o, style);
            any = true;
        }
        *o++ = '}';
        if (sep >= 0)
            *o++ = (char)sep;
        state[i] = FC_ROW_DONE;
        ends[i] = (uint64_t)(o - out);
    }
    return (int64_t)(i - first);
}

int64_t fc_docs_value_json(const fc_doc_rows *r, uint64_t first, uint32_t field,
                           uint32_t style, char *out, uint64_t cap, uint64_t *ends,
                           uint8_t *state)
{
    if (field < FC_DOC_USED || field > FC_DOC_ERROR)
        return -EINVAL;
    if (style != FC_JSON_ORJSON && style != FC_JSON_PYTHON)
        return -EINVAL;
    char *o = out;
    uint64_t i = first;
    for (; i < r->n; i++) {
        if ((uint64_t)(o - out) + 64 + 8 * (uint64_t)r->payload_len[i] > cap)
            break;
        pview pv;
        view_payload(r, i, &pv);
        if (pv.kind == P_PYTHON) {
            state[i] = FC_ROW_PYTHON;
        } else if (pv.kind != P_MAP || !pv.field[field - FC_DOC_USED] ||
                   *pv.field[field - FC_DOC_USED] == 0xc0) {
            state[i] = FC_ROW_ABSENT;   /* (a nil value is no value in a column) */
        } else {
            const uint8_t *at = pv.field[field - FC_DOC_USED];
            o = render(&at, pv.end, o, style);
            state[i] = FC_ROW_DONE;
        }
        ends[i] = (uint64_t)(o - out);
    }
    return (int64_t)(i - first);
}

/* ------------------------------------------------------------------ */
/* Lineage scalars                                                     */
/* ------------------------------------------------------------------ */

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                             \
    do {                                                                                     \
        v0 += v1; v1 = ROTL(v1, 13); v1 ^= v0; v0 = ROTL(v0, 32);                            \
        v2 += v3; v3 = ROTL(v3, 16); v3 ^= v2;                                               \
        v0 += v3; v3 = ROTL(v3, 21); v3 ^= v0;                                               \
        v2 += v1; v1 = ROTL(v1, 17); v1 ^= v2; v2 = ROTL(v2, 32);                            \
    } while (0)

/* SipHash-2-4 with 128-bit output under a fixed key: long texts' keys. */
static void siphash128(const uint8_t *in, uint64_t n, uint64_t out[2])
{
    const uint64_t k0 = 0x0706050403020100ull, k1 = 0x0f0e0d0c0b0a0908ull;
    uint64_t v0 = 0x736f6d6570736575ull ^ k0, v1 = 0x646f72616e646f6dull ^ k1;
    uint64_t v2 = 0x6c7967656e657261ull ^ k0, v3 = 0x7465646279746573ull ^ k1;
    v1 ^= 0xee;
    uint64_t full = n & ~7ull;
    for (uint64_t i = 0; i < full; i += 8) {
        uint64_t m = 0;
        for (int k = 7; k >= 0; k--)
            m = m << 8 | in[i + (uint64_t)k];
        v3 ^= m;
        SIPROUND;
        SIPROUND;
        v0 ^= m;
    }
    uint64_t b = n << 56;
    for (uint64_t k = 0; k < (n & 7); k++)
        b |= (uint64_t)in[full + k] << (8 * k);
    v3 ^= b;
    SIPROUND;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xee;
    SIPROUND; SIPROUND; SIPROUND; SIPROUND;
    out[0] = v0 ^ v1 ^ v2 ^ v3;
    v1 ^= 0xdd;
    SIPROUND; SIPROUND; SIPROUND; SIPROUND;
    out[1] = v0 ^ v1 ^ v2 ^ v3;
}

enum { T_INT = 1, T_FLOAT = 2, T_STR = 3, T_BIN = 4, T_LONG_STR = 5, T_LONG_BIN = 6 };

static void bytes_key(int tag, const uint8_t *s, uint64_t n, uint64_t key[2])
{
    if (n <= 14) {
        uint8_t b[16] = {0};
        b[0] = (uint8_t)tag;
        b[1] = (uint8_t)n;
        memcpy(b + 2, s, (size_t)n);
        key[0] = be(b, 8);
        key[1] = be(b + 8, 8);
        return;
    }
    uint64_t h[2];
    siphash128(s, n, h);
    key[0] = (uint64_t)(tag + 2) << 56 | (h[0] >> 8);
    key[1] = h[1];
}

static inline void int_key(int neg, uint64_t bits, uint64_t key[2])
{
    key[0] = (uint64_t)T_INT << 56 | (uint64_t)neg;
    key[1] = bits;
}

/* 1 and the key of a scalar that takes part; 0 for one that does not. */
static int value_key(const mp *v, uint64_t key[2])
{
    switch (v->kind) {
    case K_UINT:
        int_key(0, v->u, key);
        return 1;
    case K_INT:
        if (v->i >= 0)
            int_key(0, (uint64_t)v->i, key);
        else
            int_key(1, (uint64_t)v->i, key);
        return 1;
    case K_F32:
    case K_F64: {
        double d = v->f;
        if (isnan(d))
            return 0;
        if (isfinite(d) && d == floor(d)) {   /* equal to an integer: the integer's key */
            if (d >= 0 && d < 18446744073709551616.0) {
                int_key(0, (uint64_t)d, key);
                return 1;
            }
            if (d < 0 && d >= -9223372036854775808.0) {
                int_key(1, (uint64_t)(int64_t)d, key);
                return 1;
            }
        }
        uint64_t bits;
        memcpy(&bits, &d, 8);
        key[0] = (uint64_t)T_FLOAT << 56;
        key[1] = bits;
        return 1;
    }
    case K_STR:
        bytes_key(T_STR, v->data, v->u, key);
        return 1;
    case K_BIN:
        bytes_key(T_BIN, v->data, v->u, key);
        return 1;
    default:
        return 0;
    }
}

int fc_scalar_key(const uint8_t *data, uint64_t len, uint64_t *key)
{
    mp v;
    const uint8_t *p = data, *end = data + len;
    if (head(data, end, &v, &p) != 0)
        return -EBADMSG;
    if (v.kind == K_STR && !utf8_ok(v.data, v.u))
        return -EBADMSG;
    if (v.kind == K_ARR || v.kind == K_MAP) {
        p = data;
        if (skip_plain(&p, end, 0, NULL))
            return -EBADMSG;
    }
    if (p != end)
        return -EBADMSG;
    return value_key(&v, key);
}

/* Appends the keys of the values of the map at p (a used or generated map). */
static void map_scalars(const uint8_t *p, const uint8_t *end, uint64_t row, uint8_t which,
                        uint64_t *keys, uint64_t *row_of, uint8_t *kind, uint64_t *count)
{
    mp m;
    if (head(p, end, &m, &p) || m.kind != K_MAP)
        return;
    for (uint64_t k = 0; k < m.u; k++) {
        const uint8_t *q = p;
        mp key, v;
        head(q, end, &key, &q);                /* the key (text: checked) */
        const uint8_t *val = q;
        head(val, end, &v, &q);
        if (v.kind == K_ARR) {
            const uint8_t *e = q;
            for (uint64_t j = 0; j < v.u; j++) {
                mp x;
                const uint8_t *xe;
                head(e, end, &x, &xe);
                uint64_t kk[2];
                if (value_key(&x, kk) == 1) {
                    keys[2 * *count] = kk[0];
                    keys[2 * *count + 1] = kk[1];
                    row_of[*count] = row;
                    kind[*count] = which;
                    (*count)++;
                }
                skip_plain(&e, end, 1, NULL);
            }
        } else {
            uint64_t kk[2];
            if (value_key(&v, kk) == 1) {
                keys[2 * *count] = kk[0];
                keys[2 * *count + 1] = kk[1];
                row_of[*count] = row;
                kind[*count] = which;
                (*count)++;
            }
        }
        p = val;
        skip_plain(&p, end, 1, NULL);
    }
}

int64_t fc_doc_scalars(const fc_doc_rows *r, uint64_t first, uint64_t *keys,
                       uint64_t *row_of, uint8_t *kind, uint64_t cap, uint64_t *count,
                       uint8_t *state)
{
    uint64_t c = 0;
    uint64_t i = first;
    for (; i < r->n; i++) {
        if (c + r->payload_len[i] > cap)   /* each value takes a byte at least */
            break;
        pview pv;
        view_payload(r, i, &pv);
        if (pv.kind == P_PYTHON) {
            state[i] = FC_ROW_PYTHON;
            continue;
        }
        state[i] = FC_ROW_DONE;
        if (pv.kind != P_MAP)
            continue;
        for (uint8_t w = 0; w < 2; w++)
            if (pv.field[w])
                map_scalars(pv.field[w], pv.end, i, w, keys, row_of, kind, &c);
    }
    *count = c;
    return (int64_t)(i - first);
}
