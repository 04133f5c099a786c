/* columns.c -- the compaction's column work: batch records decoded into
 * columns, sorted parts merged, duplicates dropped, chunks gathered and
 * shuffled.  API and contracts: fc_columns.h. */
#include "fc_columns.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ */
/* Loads and stores of 1, 2, 4, 8-byte little-endian integers, aligned  */
/* or not (memcpy: one move on the targets we build for)                */
/* ------------------------------------------------------------------ */

static inline uint64_t ld(const uint8_t *p, unsigned size)
{
    switch (size) {
    case 1:
        return *p;
    case 2: {
        uint16_t v;
        memcpy(&v, p, 2);
        return v;
    }
    case 4: {
        uint32_t v;
        memcpy(&v, p, 4);
        return v;
    }
    default: {
        uint64_t v;
        memcpy(&v, p, 8);
        return v;
    }
    }
}

static inline void st(uint8_t *p, uint64_t v, unsigned size)
{
    switch (size) {
    case 1:
        *p = (uint8_t)v;
        break;
    case 2: {
        uint16_t x = (uint16_t)v;
        memcpy(p, &x, 2);
        break;
    }
    case 4: {
        uint32_t x = (uint32_t)v;
        memcpy(p, &x, 4);
        break;
    }
    default:
        memcpy(p, &v, 8);
        break;
    }
}

static int size_ok(unsigned s)
{
    return s == 1 || s == 2 || s == 4 || s == 8;
}

/* ------------------------------------------------------------------ */
/* Batch records -> columns                                             */
/* ------------------------------------------------------------------ */

#define REC_FLAGS_OFF offsetof(fc_task_record, flags)

static inline int is_task(const uint8_t *rec)
{
    uint16_t f;
    memcpy(&f, rec + REC_FLAGS_OFF, 2);
    return !(f & FC_FLAG_WORKFLOW);
}

/* One column over all records; `all` when there is no workflow record (the
 * loop then has no test).  The sizes are constants in each expansion, so
 * the switch in ld/st folds away. */
#define FILL_LOOP(SS, DS, EXPR)                                                  \
    do {                                                                         \
        uint64_t r = 0;                                                          \
        for (uint32_t i = 0; i < count; i++) {                                   \
            const uint8_t *rec = recs + (uint64_t)i * FC_RECORD_SIZE;            \
            if (!all && !is_task(rec))                                           \
                continue;                                                        \
            uint64_t v = ld(rec + c->src_off, SS);                               \
            st(dst + r * DS, (EXPR), DS);                                        \
            r++;                                                                 \
        }                                                                        \
    } while (0)

#define FILL_SIZES(EXPR)                                                         \
    do {                                                                         \
        switch (c->src_size * 16 + c->dst_size) {                                \
        case 0x88: FILL_LOOP(8, 8, EXPR); break;                                 \
        case 0x44: FILL_LOOP(4, 4, EXPR); break;                                 \
        case 0x48: FILL_LOOP(4, 8, EXPR); break;                                 \
        case 0x22: FILL_LOOP(2, 2, EXPR); break;                                 \
        default: FILL_LOOP(c->src_size, c->dst_size, EXPR); break;               \
        }                                                                        \
    } while (0)

static int column_ok(const fc_column *c)
{
    if (!c->dst || !size_ok(c->dst_size))
        return 0;
    switch (c->kind) {
    case FC_COL_COPY:
    case FC_COL_ADD:
        return size_ok(c->src_size) && c->src_size <= c->dst_size &&
               (uint64_t)c->src_off + c->src_size <= FC_RECORD_SIZE;
    case FC_COL_LUT:
        return c->src_size == 4 && c->dst_size == 4 && c->lut && c->lut_len >= 1 &&
               (uint64_t)c->src_off + 4 <= FC_RECORD_SIZE;
    case FC_COL_CONST:
    case FC_COL_SEQ:
        return 1;
    default:
        return 0;
    }
}

int64_t fc_batch_columns(const void *frame, uint64_t len, const fc_column *cols,
                         uint32_t ncols, uint64_t at, uint64_t cap)
{
    fc_batch_header h;
    if (!frame || len < FC_BATCH_HEADER_SIZE)
        return -EBADMSG;
    memcpy(&h, frame, sizeof h);
    if (h.records_off > len ||
        (uint64_t)h.record_count > (len - h.records_off) / FC_RECORD_SIZE)
        return -EBADMSG;
    if (ncols && !cols)
        return -EINVAL;
    for (uint32_t k = 0; k < ncols; k++)
        if (!column_ok(&cols[k]))
            return -EINVAL;
    const uint8_t *recs = (const uint8_t *)frame + h.records_off;
    uint32_t count = h.record_count;
    uint64_t tasks = 0;
    for (uint32_t i = 0; i < count; i++)
        tasks += is_task(recs + (uint64_t)i * FC_RECORD_SIZE);
    int all = tasks == count;
    if (at > cap || tasks > cap - at)
        return -ENOSPC;
    for (uint32_t k = 0; k < ncols; k++) {
        const fc_column *c = &cols[k];
        uint8_t *dst = (uint8_t *)c->dst + at * c->dst_size;
        uint64_t value = c->value;
        switch (c->kind) {
        case FC_COL_COPY:
            FILL_SIZES(v);
            break;
        case FC_COL_ADD:
            FILL_SIZES(v + value);
            break;
        case FC_COL_LUT: {
            const uint32_t *lut = c->lut;
            uint64_t last = c->lut_len - 1;
            FILL_LOOP(4, 4, lut[v < last ? v : last]);
            break;
        }
        case FC_COL_CONST:
            for (uint64_t r = 0; r < tasks; r++)
                st(dst + r * c->dst_size, value, c->dst_size);
            break;
        case FC_COL_SEQ:
            for (uint64_t r = 0; r < tasks; r++)
                st(dst + r * c->dst_size, value + r, c->dst_size);
            break;
        }
    }
    return (int64_t)tasks;
}

/* ------------------------------------------------------------------ */
/* k-way merge                                                          */
/* ------------------------------------------------------------------ */

typedef struct merge_state {
    const int64_t *const *keys;
    const int64_t *const *seqs;
    const uint64_t *lens;
    uint64_t *pos;
} merge_state;

/* (key, seq, part) of part a's head < that of part b's */
static inline int head_less(const merge_state *m, uint32_t a, uint32_t b)
{
    int64_t ka = m->keys[a][m->pos[a]], kb = m->keys[b][m->pos[b]];
    if (ka != kb)
        return ka < kb;
    if (m->seqs) {
        int64_t sa = m->seqs[a][m->pos[a]], sb = m->seqs[b][m->pos[b]];
        if (sa != sb)
            return sa < sb;
    }
    return a < b;
}

static void sift_down(const merge_state *m, uint32_t *heap, uint32_t n, uint32_t i)
{
    for (;;) {
        uint32_t l = 2 * i + 1, s = i;
        if (l < n && head_less(m, heap[l], heap[s]))
            s = l;
        if (l + 1 < n && head_less(m, heap[l + 1], heap[s]))
            s = l + 1;
        if (s == i)
            return;
        uint32_t t = heap[i];
        heap[i] = heap[s];
        heap[s] = t;
        i = s;
    }
}

int64_t fc_merge_order(uint32_t k, const int64_t *const *keys,
                       const int64_t *const *seqs, const uint64_t *lens,
                       uint64_t *order, int64_t *merged_keys)
{
    if (k > FC_ORDER_MAX_PARTS || (k && (!keys || !lens)))
        return -EINVAL;
    uint64_t total = 0;
    for (uint32_t p = 0; p < k; p++) {
        if (lens[p] >= (1ull << FC_ORDER_ROW_BITS))
            return -EINVAL;
        if (lens[p] && (!keys[p] || (seqs && !seqs[p])))
            return -EINVAL;
        total += lens[p];
    }
    if (total && !order)
        return -EINVAL;
    if (total >= (1ull << 62))
        return -EINVAL;
    uint32_t *heap = malloc((k ? k : 1) * sizeof *heap);
    uint64_t *pos = calloc(k ? k : 1, sizeof *pos);
    if (!heap || !pos) {
        free(heap);
        free(pos);
        return -ENOMEM;
    }
    merge_state m = {keys, seqs, lens, pos};
    uint32_t n = 0;
    for (uint32_t p = 0; p < k; p++)
        if (lens[p])
            heap[n++] = p;
    for (uint32_t i = n / 2; i-- > 0;)
        sift_down(&m, heap, n, i);
    uint64_t o = 0;
    while (n) {
        uint32_t p = heap[0];
        const int64_t *kp = keys[p];
        uint64_t end = lens[p];
        uint64_t i = pos[p];
        if (n == 1) {             /* the last part: the rest of it */
            for (; i < end; i++, o++) {
                order[o] = ((uint64_t)p << FC_ORDER_ROW_BITS) | i;
                if (merged_keys)
                    merged_keys[o] = kp[i];
            }
            pos[p] = end;
            break;
        }
        /* the runner-up: the smaller child of the root */
        uint32_t q = heap[1];
        if (n > 2 && head_less(&m, heap[2], q))
            q = heap[2];
        /* emit p's rows while they sort before q's head */
        do {
            order[o] = ((uint64_t)p << FC_ORDER_ROW_BITS) | i;
            if (merged_keys)
                merged_keys[o] = kp[i];
            o++;
            pos[p] = ++i;
        } while (i < end && head_less(&m, p, q));
        if (i == end)
            heap[0] = heap[--n];
        sift_down(&m, heap, n, 0);
    }
    free(heap);
    free(pos);
    return (int64_t)o;
}

/* ------------------------------------------------------------------ */
/* Duplicates                                                           */
/* ------------------------------------------------------------------ */

typedef struct dup_row {
    uint64_t wf, tid;
    uint32_t running;
    uint32_t at;              /* position in the group */
} dup_row;

static int dup_cmp(const void *a, const void *b)
{
    const dup_row *x = a, *y = b;
    if (x->wf != y->wf)
        return x->wf < y->wf ? -1 : 1;
    if (x->tid != y->tid)
        return x->tid < y->tid ? -1 : 1;
    if (x->running != y->running)
        return x->running < y->running ? -1 : 1;
    return x->at < y->at ? -1 : x->at > y->at;
}

int64_t fc_drop_duplicates(uint64_t *order, int64_t *keys, uint64_t n, uint32_t nparts,
                           const uint64_t *lens, const uint64_t *const *workflow_id,
                           const uint64_t *const *task_id,
                           const uint16_t *const *status, uint16_t running)
{
    if (n && (!order || !keys || !lens || !workflow_id || !task_id || !status))
        return -EINVAL;
    const uint64_t row_mask = (1ull << FC_ORDER_ROW_BITS) - 1;
    for (uint64_t i = 0; i < n; i++)
        if ((order[i] >> FC_ORDER_ROW_BITS) >= nparts ||
            (order[i] & row_mask) >= lens[order[i] >> FC_ORDER_ROW_BITS])
            return -EINVAL;
    for (uint64_t i = 1; i < n; i++)
        if (keys[i] < keys[i - 1])
            return -EINVAL;
    dup_row *rows = NULL;
    uint8_t *drop = NULL;
    uint64_t room = 0, w = 0;
#define ROW_OF(i, WF, TID, RUN)                                                  \
    do {                                                                         \
        uint64_t p_ = order[i] >> FC_ORDER_ROW_BITS, r_ = order[i] & row_mask;   \
        WF = workflow_id[p_][r_];                                                \
        TID = task_id[p_][r_];                                                   \
        RUN = status[p_][r_] == running;                                         \
    } while (0)
    uint64_t i = 0;
    while (i < n) {
        uint64_t j = i + 1;
        while (j < n && keys[j] == keys[i])
            j++;
        uint64_t g = j - i;
        if (g == 1) {
            order[w] = order[i];
            keys[w++] = keys[i];
        } else if (g == 2) {
            uint64_t wa, ta, wb, tb;
            uint32_t ra, rb;
            ROW_OF(i, wa, ta, ra);
            ROW_OF(i + 1, wb, tb, rb);
            if (wa != wb || ta != tb) {
                order[w] = order[i];
                keys[w++] = keys[i];
                order[w] = order[i + 1];
                keys[w++] = keys[i + 1];
            } else {         /* one task: the first, unless only the second finished */
                uint64_t keep = (ra && !rb) ? i + 1 : i;
                order[w] = order[keep];
                keys[w++] = keys[keep];
            }
        } else {
            if (g > room) {
                uint64_t want = g > 2 * room ? g : 2 * room;
                dup_row *nr = realloc(rows, want * sizeof *rows);
                if (!nr) {
                    free(rows);
                    free(drop);
                    return -ENOMEM;
                }
                rows = nr;
                uint8_t *nd = realloc(drop, want);
                if (!nd) {
                    free(rows);
                    free(drop);
                    return -ENOMEM;
                }
                drop = nd;
                room = want;
            }
            if (g > UINT32_MAX) {
                free(rows);
                free(drop);
                return -EINVAL;
            }
            for (uint64_t a = 0; a < g; a++) {
                uint32_t run;
                ROW_OF(i + a, rows[a].wf, rows[a].tid, run);
                rows[a].running = run;
                rows[a].at = (uint32_t)a;
                drop[a] = 0;
            }
            qsort(rows, g, sizeof *rows, dup_cmp);
            for (uint64_t a = 1; a < g; a++)
                if (rows[a].wf == rows[a - 1].wf && rows[a].tid == rows[a - 1].tid)
                    drop[rows[a].at] = 1;
            for (uint64_t a = 0; a < g; a++)
                if (!drop[a]) {
                    order[w] = order[i + a];
                    keys[w++] = keys[i + a];
                }
        }
        i = j;
    }
#undef ROW_OF
    free(rows);
    free(drop);
    return (int64_t)w;
}

/* ------------------------------------------------------------------ */
/* Gather (and shuffle)                                                 */
/* ------------------------------------------------------------------ */

#define TILE 64

/* Byte planes of a tile of m elements (m <= TILE) into out at element i0. */
static inline void tile_to_planes(const uint8_t *tile, unsigned m, unsigned isz,
                                  uint8_t *out, uint64_t chunk, uint64_t i0)
{
    for (unsigned b = 0; b < isz; b++) {
        uint8_t *dst = out + (uint64_t)b * chunk + i0;
        const uint8_t *src = tile + b;
        for (unsigned j = 0; j < m; j++)
            dst[j] = src[(uint64_t)j * isz];
    }
}

int64_t fc_gather(const fc_gather_piece *pieces, uint32_t npieces, uint32_t itemsize,
                  uint64_t chunk, int shuffle, void *outv, int64_t *max_out)
{
    if (!size_ok(itemsize) || (npieces && !pieces) || (chunk && !outv))
        return -EINVAL;
    const uint64_t row_mask = (1ull << FC_ORDER_ROW_BITS) - 1;
    uint64_t total = 0;
    for (uint32_t k = 0; k < npieces; k++) {
        const fc_gather_piece *pc = &pieces[k];
        if (!pc->n)
            continue;
        if (!pc->bases || !pc->lens || pc->nparts == 0)
            return -EINVAL;
        if (pc->order) {
            for (uint64_t e = 0; e < pc->n; e++) {
                uint64_t p = pc->order[e] >> FC_ORDER_ROW_BITS;
                if (p >= pc->nparts || !pc->bases[p] || (pc->order[e] & row_mask) >= pc->lens[p])
                    return -EINVAL;
            }
        } else if (!pc->bases[0] || pc->first > pc->lens[0] || pc->n > pc->lens[0] - pc->first) {
            return -EINVAL;
        }
        total += pc->n;
    }
    if (total > chunk)
        return -EINVAL;
    uint8_t *out = outv;
    unsigned isz = itemsize;
    int want_max = max_out && isz == 8;
    int64_t mx = INT64_MIN;
    uint8_t tile[TILE * 8];
    unsigned m = 0;              /* elements in the tile */
    uint64_t at = 0;             /* elements written out (tile start) */
    for (uint32_t k = 0; k < npieces; k++) {
        const fc_gather_piece *pc = &pieces[k];
        for (uint64_t e = 0; e < pc->n; e++) {
            const uint8_t *src;
            if (pc->order) {
                uint64_t v = pc->order[e];
                src = (const uint8_t *)pc->bases[v >> FC_ORDER_ROW_BITS] + (v & row_mask) * isz;
            } else {
                src = (const uint8_t *)pc->bases[0] + (pc->first + e) * isz;
            }
            uint8_t *dst = shuffle ? tile + (uint64_t)m * isz : out + (at + m) * isz;
            switch (isz) {
            case 8: {
                uint64_t x;
                memcpy(&x, src, 8);
                memcpy(dst, &x, 8);
                if (want_max && (int64_t)x > mx)
                    mx = (int64_t)x;
                break;
            }
            case 4: memcpy(dst, src, 4); break;
            case 2: memcpy(dst, src, 2); break;
            default: *dst = *src; break;
            }
            if (++m == TILE) {
                if (shuffle)
                    tile_to_planes(tile, m, isz, out, chunk, at);
                at += m;
                m = 0;
            }
        }
    }
    if (m) {
        if (shuffle)
            tile_to_planes(tile, m, isz, out, chunk, at);
        at += m;
    }
    if (at < chunk) {            /* zeros past the data */
        if (shuffle)
            for (unsigned b = 0; b < isz; b++)
                memset(out + (uint64_t)b * chunk + at, 0, chunk - at);
        else
            memset(out + at * isz, 0, (chunk - at) * isz);
    }
    if (max_out && isz == 8)
        *max_out = mx;
    return (int64_t)at;
}
