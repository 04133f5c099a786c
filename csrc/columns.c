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

/* A part's head: its key and seq cached, so that comparisons read no other
 * memory.  A part with no rows left has the head (INT64_MAX, INT64_MAX) and
 * is marked done, which decides a tie with a live head. */
typedef struct head {
    int64_t key, seq;
} head;

/* part a's head sorts before part b's: (key, seq, live first, part) */
static inline int beats(const head *h, const uint8_t *done, uint32_t a, uint32_t b)
{
    if (h[a].key != h[b].key)
        return h[a].key < h[b].key;
    if (h[a].seq != h[b].seq)
        return h[a].seq < h[b].seq;
    if (done[a] != done[b])
        return done[b];
    return a < b;
}

/* A tournament (loser) tree over the parts: each internal node keeps the
 * part that lost the match played there, so that after the winner's head
 * moves, one walk from its leaf to the root (log2 k comparisons, no swaps
 * of entries) finds the next winner. */
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
    if (!total)
        return 0;
    uint32_t leaves = 1;
    while (leaves < k)
        leaves *= 2;
    head *h = malloc(leaves * sizeof *h);
    uint64_t *pos = calloc(leaves, sizeof *pos);
    uint8_t *done = malloc(leaves);
    uint32_t *win = malloc(2 * (size_t)leaves * sizeof *win);   /* while building */
    uint32_t *loser = malloc((size_t)leaves * sizeof *loser);   /* nodes 1..leaves-1 */
    if (!h || !pos || !done || !win || !loser) {
        free(h);
        free(pos);
        free(done);
        free(win);
        free(loser);
        return -ENOMEM;
    }
    for (uint32_t p = 0; p < leaves; p++) {
        done[p] = !(p < k && lens[p]);
        h[p] = done[p] ? (head){ INT64_MAX, INT64_MAX }
                       : (head){ keys[p][0], seqs ? seqs[p][0] : 0 };
        win[leaves + p] = p;
    }
    for (uint32_t node = leaves - 1; node >= 1; node--) {
        uint32_t a = win[2 * node], b = win[2 * node + 1];
        int ab = beats(h, done, a, b);
        win[node] = ab ? a : b;
        loser[node] = ab ? b : a;
    }
    uint32_t w = leaves > 1 ? win[1] : 0;
    free(win);
    uint64_t o = 0;
    while (!done[w]) {
        uint64_t i = pos[w];
        order[o] = ((uint64_t)w << FC_ORDER_ROW_BITS) | i;
        if (merged_keys)
            merged_keys[o] = h[w].key;
        o++;
        pos[w] = ++i;
        if (i == lens[w]) {
            done[w] = 1;
            h[w] = (head){ INT64_MAX, INT64_MAX };
        } else {
            h[w].key = keys[w][i];
            h[w].seq = seqs ? seqs[w][i] : 0;
        }
        for (uint32_t node = (w + leaves) >> 1; node >= 1; node >>= 1) {
            uint32_t l = loser[node];
            if (beats(h, done, l, w)) {
                loser[node] = w;
                w = l;
            }
        }
    }
    free(h);
    free(pos);
    free(done);
    free(loser);
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

/* The shuffle filter's byte planes of 16 elements at element i0 of a chunk:
 * plane b gets byte b of each of them (16 bytes).  The 16 x isz bytes are a
 * matrix whose byte index is [element (4 bits) | byte (log2 isz bits)];
 * the transpose wants [byte | element], a rotation of the index by 4 bits,
 * which is four perfect shuffles (interleaving the first half of the bytes
 * with the second), each one round of SSE2 unpacks over isz registers:
 * register j holds bytes 16j..16j+15, and unpacking registers j and
 * j + isz/2 gives registers 2j and 2j+1 of the shuffled bytes. */
#if defined(__SSE2__)
#include <emmintrin.h>

#define LO(a, b) _mm_unpacklo_epi8(a, b)
#define HI(a, b) _mm_unpackhi_epi8(a, b)
#define STORE(b, x) _mm_storeu_si128((__m128i *)(out + (uint64_t)(b) * chunk + i0), x)

/* The transposes in registers, one function per item size (locals, not
 * arrays, so that nothing goes through the stack). */
static inline __attribute__((always_inline)) void
planes16_8(const uint64_t *w, uint8_t *out, uint64_t chunk, uint64_t i0)
{
    __m128i r0 = _mm_set_epi64x((long long)w[1], (long long)w[0]);
    __m128i r1 = _mm_set_epi64x((long long)w[3], (long long)w[2]);
    __m128i r2 = _mm_set_epi64x((long long)w[5], (long long)w[4]);
    __m128i r3 = _mm_set_epi64x((long long)w[7], (long long)w[6]);
    __m128i r4 = _mm_set_epi64x((long long)w[9], (long long)w[8]);
    __m128i r5 = _mm_set_epi64x((long long)w[11], (long long)w[10]);
    __m128i r6 = _mm_set_epi64x((long long)w[13], (long long)w[12]);
    __m128i r7 = _mm_set_epi64x((long long)w[15], (long long)w[14]);
    for (int round = 0; round < 4; round++) {
        __m128i t0 = LO(r0, r4), t1 = HI(r0, r4), t2 = LO(r1, r5), t3 = HI(r1, r5);
        __m128i t4 = LO(r2, r6), t5 = HI(r2, r6), t6 = LO(r3, r7), t7 = HI(r3, r7);
        r0 = t0, r1 = t1, r2 = t2, r3 = t3, r4 = t4, r5 = t5, r6 = t6, r7 = t7;
    }
    STORE(0, r0), STORE(1, r1), STORE(2, r2), STORE(3, r3);
    STORE(4, r4), STORE(5, r5), STORE(6, r6), STORE(7, r7);
}

static inline __attribute__((always_inline)) void
planes16_4(const uint64_t *w, uint8_t *out, uint64_t chunk, uint64_t i0)
{
    __m128i r0 = _mm_set_epi32((int)w[3], (int)w[2], (int)w[1], (int)w[0]);
    __m128i r1 = _mm_set_epi32((int)w[7], (int)w[6], (int)w[5], (int)w[4]);
    __m128i r2 = _mm_set_epi32((int)w[11], (int)w[10], (int)w[9], (int)w[8]);
    __m128i r3 = _mm_set_epi32((int)w[15], (int)w[14], (int)w[13], (int)w[12]);
    for (int round = 0; round < 4; round++) {
        __m128i t0 = LO(r0, r2), t1 = HI(r0, r2), t2 = LO(r1, r3), t3 = HI(r1, r3);
        r0 = t0, r1 = t1, r2 = t2, r3 = t3;
    }
    STORE(0, r0), STORE(1, r1), STORE(2, r2), STORE(3, r3);
}

static inline __attribute__((always_inline)) void
planes16_2(const uint64_t *w, uint8_t *out, uint64_t chunk, uint64_t i0)
{
    __m128i r0 = _mm_set_epi16((short)w[7], (short)w[6], (short)w[5], (short)w[4],
                               (short)w[3], (short)w[2], (short)w[1], (short)w[0]);
    __m128i r1 = _mm_set_epi16((short)w[15], (short)w[14], (short)w[13], (short)w[12],
                               (short)w[11], (short)w[10], (short)w[9], (short)w[8]);
    for (int round = 0; round < 4; round++) {
        __m128i t0 = LO(r0, r1), t1 = HI(r0, r1);
        r0 = t0, r1 = t1;
    }
    STORE(0, r0), STORE(1, r1);
}
#undef LO
#undef HI
#undef STORE
#endif

/* The planes of 16 values, portable (and the reference the SSE2 path is
 * tested against through the Python one). */
static inline void planes16_scalar(const uint64_t *w, unsigned isz, uint8_t *out, uint64_t chunk,
                                   uint64_t i0)
{
    for (unsigned b = 0; b < isz; b++) {
        uint8_t *d = out + (uint64_t)b * chunk + i0;
        for (unsigned e = 0; e < 16; e++)
            d[e] = (uint8_t)(w[e] >> (8 * b));
    }
}

static inline __attribute__((always_inline)) void
planes_of(const uint64_t *w, const unsigned isz, uint8_t *out, uint64_t chunk, uint64_t i0)
{
#if defined(__SSE2__)
    switch (isz) {
    case 8: planes16_8(w, out, chunk, i0); return;
    case 4: planes16_4(w, out, chunk, i0); return;
    case 2: planes16_2(w, out, chunk, i0); return;
    default: break;
    }
#endif
    planes16_scalar(w, isz, out, chunk, i0);
}

#define GATHER_BLOCK 512

/* A column's gather in progress: up to 15 values of a shuffled group cut by
 * a block's end, the elements written out, the largest value. */
typedef struct col_state {
    uint64_t v[16];
    unsigned m;
    uint64_t at;
    int64_t max;
} col_state;

/* One block of rows (their part, pp, and row, rr) of one column; isz,
 * shuffle and want are constants in each call, so that loads, stores and
 * the transposes are specialised. */
static inline __attribute__((always_inline)) void
gather_block(const fc_gather_column *c, col_state *s, const void *const *bases,
             const uint32_t *pp, const uint64_t *rr, unsigned cnt, const unsigned isz,
             const int shuffle, const int want, uint64_t chunk)
{
    uint8_t *out = c->out;
    unsigned m = s->m;
    uint64_t at = s->at;
    int64_t best = s->max;
    unsigned e = 0;
#define LOAD(E) ld((const uint8_t *)bases[pp[E]] + rr[E] * isz, isz)
    if (!shuffle) {
        for (; e < cnt; e++) {
            uint64_t x = LOAD(e);
            if (want && (int64_t)x > best)
                best = (int64_t)x;
            st(out + (at + e) * isz, x, isz);
        }
        at += cnt;
    } else {
        for (; m && e < cnt; e++) {          /* complete the waiting group */
            uint64_t x = LOAD(e);
            if (want && (int64_t)x > best)
                best = (int64_t)x;
            s->v[m++] = x;
            if (m == 16) {
                planes_of(s->v, isz, out, chunk, at);
                at += 16;
                m = 0;
            }
        }
        for (; e + 16 <= cnt; e += 16) {
            uint64_t w[16];
#pragma GCC unroll 16
            for (unsigned j = 0; j < 16; j++) {
                w[j] = LOAD(e + j);
                if (want && (int64_t)w[j] > best)
                    best = (int64_t)w[j];
            }
            planes_of(w, isz, out, chunk, at);
            at += 16;
        }
        for (; e < cnt; e++) {
            uint64_t x = LOAD(e);
            if (want && (int64_t)x > best)
                best = (int64_t)x;
            s->v[m++] = x;
        }
    }
#undef LOAD
    s->m = m;
    s->at = at;
    s->max = best;
}

int64_t fc_gather(const fc_gather_piece *pieces, uint32_t npieces,
                  fc_gather_column *cols, uint32_t ncols, uint64_t chunk)
{
    if ((npieces && !pieces) || (ncols && !cols))
        return -EINVAL;
    const uint64_t row_mask = (1ull << FC_ORDER_ROW_BITS) - 1;
    uint64_t total = 0, nbases = 0;
    for (uint32_t k = 0; k < npieces; k++) {
        const fc_gather_piece *pc = &pieces[k];
        nbases += pc->nparts;
        if (!pc->n)
            continue;
        if (!pc->lens || pc->nparts == 0)
            return -EINVAL;
        if (pc->order) {
            for (uint64_t e = 0; e < pc->n; e++)
                if ((pc->order[e] >> FC_ORDER_ROW_BITS) >= pc->nparts ||
                    (pc->order[e] & row_mask) >= pc->lens[pc->order[e] >> FC_ORDER_ROW_BITS])
                    return -EINVAL;
        } else if (pc->first > pc->lens[0] || pc->n > pc->lens[0] - pc->first) {
            return -EINVAL;
        }
        total += pc->n;
    }
    if (total > chunk)
        return -EINVAL;
    for (uint32_t c = 0; c < ncols; c++) {
        if (!size_ok(cols[c].itemsize) || (chunk && !cols[c].out) || (nbases && !cols[c].bases))
            return -EINVAL;
        for (uint64_t b = 0; b < nbases; b++)
            if (!cols[c].bases[b])
                return -EINVAL;
    }
    col_state *state = calloc(ncols ? ncols : 1, sizeof *state);
    if (!state)
        return -ENOMEM;
    for (uint32_t c = 0; c < ncols; c++)
        state[c].max = INT64_MIN;
    uint32_t pp[GATHER_BLOCK];
    uint64_t rr[GATHER_BLOCK];
    uint64_t boff = 0;           /* the piece's parts in the columns' bases */
    for (uint32_t k = 0; k < npieces; k++) {
        const fc_gather_piece *pc = &pieces[k];
        for (uint64_t lo = 0; lo < pc->n; lo += GATHER_BLOCK) {
            unsigned cnt = (unsigned)(pc->n - lo < GATHER_BLOCK ? pc->n - lo : GATHER_BLOCK);
            if (pc->order) {
                for (unsigned e = 0; e < cnt; e++) {
                    uint64_t v = pc->order[lo + e];
                    pp[e] = (uint32_t)(v >> FC_ORDER_ROW_BITS);
                    rr[e] = v & row_mask;
                }
            } else {
                for (unsigned e = 0; e < cnt; e++) {
                    pp[e] = 0;
                    rr[e] = pc->first + lo + e;
                }
            }
            for (uint32_t c = 0; c < ncols; c++) {
                const fc_gather_column *col = &cols[c];
                const void *const *bases = col->bases + boff;
                int sh = (col->flags & FC_GATHER_SHUFFLE) != 0;
                int mx = (col->flags & FC_GATHER_MAX) != 0;
                switch (col->itemsize * 4 + (unsigned)sh * 2 + (unsigned)(mx && col->itemsize == 8)) {
                case 35: gather_block(col, &state[c], bases, pp, rr, cnt, 8, 1, 1, chunk); break;
                case 34: gather_block(col, &state[c], bases, pp, rr, cnt, 8, 1, 0, chunk); break;
                case 33: gather_block(col, &state[c], bases, pp, rr, cnt, 8, 0, 1, chunk); break;
                case 32: gather_block(col, &state[c], bases, pp, rr, cnt, 8, 0, 0, chunk); break;
                case 18: gather_block(col, &state[c], bases, pp, rr, cnt, 4, 1, 0, chunk); break;
                case 16: gather_block(col, &state[c], bases, pp, rr, cnt, 4, 0, 0, chunk); break;
                case 10: gather_block(col, &state[c], bases, pp, rr, cnt, 2, 1, 0, chunk); break;
                case 8: gather_block(col, &state[c], bases, pp, rr, cnt, 2, 0, 0, chunk); break;
                case 6: gather_block(col, &state[c], bases, pp, rr, cnt, 1, 1, 0, chunk); break;
                default: gather_block(col, &state[c], bases, pp, rr, cnt, 1, 0, 0, chunk); break;
                }
            }
        }
        boff += pc->nparts;
    }
    for (uint32_t c = 0; c < ncols; c++) {
        fc_gather_column *col = &cols[c];
        col_state *s = &state[c];
        unsigned isz = col->itemsize;
        uint8_t *out = col->out;
        int sh = (col->flags & FC_GATHER_SHUFFLE) != 0;
        for (unsigned j = 0; j < s->m; j++, s->at++)     /* the last few, byte by byte */
            for (unsigned b = 0; b < isz; b++)
                out[(uint64_t)b * chunk + s->at] = (uint8_t)(s->v[j] >> (8 * b));
        if (s->at < chunk) {     /* zeros past the data */
            if (sh)
                for (unsigned b = 0; b < isz; b++)
                    memset(out + (uint64_t)b * chunk + s->at, 0, chunk - s->at);
            else
                memset(out + s->at * isz, 0, (chunk - s->at) * isz);
        }
        if (col->flags & FC_GATHER_MAX)
            col->max = isz == 8 ? s->max : 0;
    }
    free(state);
    return (int64_t)total;
}
