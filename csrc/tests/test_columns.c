/* test_columns.c -- the compaction's column functions (fc_columns.h) against
 * plain reference code: decoding records into columns, the k-way merge, the
 * duplicate rule, gather + shuffle; the same calls from several threads on
 * shared inputs (for ThreadSanitizer).  Prints "N passed, M failed". */
#include "fc_columns.h"
#include "harness.h"

#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint64_t rnd(void)
{
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}

/* A frame with n records (every `wf_every`-th a workflow record, 0: none);
 * only the header fields the decoder reads are set. */
static uint8_t *make_frame(uint32_t n, uint32_t wf_every, uint64_t *len)
{
    *len = FC_BATCH_HEADER_SIZE + (uint64_t)n * FC_RECORD_SIZE;
    uint8_t *buf = calloc(1, *len);
    fc_batch_header h;
    memset(&h, 0, sizeof h);
    h.magic = FC_BATCH_MAGIC;
    h.version = FC_FORMAT_VERSION;
    h.header_size = FC_BATCH_HEADER_SIZE;
    h.record_count = n;
    h.records_off = FC_BATCH_HEADER_SIZE;
    h.total_len = *len;
    memcpy(buf, &h, sizeof h);
    for (uint32_t i = 0; i < n; i++) {
        fc_task_record r;
        memset(&r, 0, sizeof r);
        r.task_id = 1000 + i;
        r.parent_id = rnd();
        r.workflow_id = 77;
        r.start_ns = -5 + (int64_t)i * 3;
        r.end_ns = (int64_t)(rnd() >> 2);
        r.rank = i % 5;
        r.thread_id = 2;
        r.activity_id = (i % 7 == 6) ? FC_ACTIVITY_OVERFLOW : i % 6;
        r.payload_len = i;
        r.payload_off = i * 8;
        r.status = (uint16_t)(i % 3);
        r.flags = (wf_every && i % wf_every == 1) ? FC_FLAG_WORKFLOW : 1;
        memcpy(buf + FC_BATCH_HEADER_SIZE + (uint64_t)i * FC_RECORD_SIZE, &r, sizeof r);
    }
    return buf;
}

static void t_decode(void)
{
    for (int wf = 0; wf < 2; wf++) {
        uint64_t len;
        uint32_t n = 300;
        uint8_t *frame = make_frame(n, wf ? 10 : 0, &len);
        uint64_t cap = 1000, at = 17;
        uint64_t *tid = calloc(cap, 8), *off = calloc(cap, 8), *seq = calloc(cap, 8);
        int64_t *start = calloc(cap, 8);
        uint32_t *act = calloc(cap, 4), *node = calloc(cap, 4);
        uint16_t *status = calloc(cap, 2);
        uint32_t lut[4] = {40, 41, 42, 43};
        fc_column cols[7];
        memset(cols, 0, sizeof cols);
        cols[0] = (fc_column){ tid, offsetof(fc_task_record, task_id), 8, 8, FC_COL_COPY, 0, NULL, 0 };
        cols[1] = (fc_column){ start, offsetof(fc_task_record, start_ns), 8, 8, FC_COL_COPY, 0, NULL, 0 };
        cols[2] = (fc_column){ act, offsetof(fc_task_record, activity_id), 4, 4, FC_COL_LUT, 4, lut, 0 };
        cols[3] = (fc_column){ off, offsetof(fc_task_record, payload_off), 4, 8, FC_COL_ADD, 0, NULL,
                               (1ull << 33) };
        cols[4] = (fc_column){ status, offsetof(fc_task_record, status), 2, 2, FC_COL_COPY, 0, NULL, 0 };
        cols[5] = (fc_column){ node, 0, 0, 4, FC_COL_CONST, 0, NULL, 9 };
        cols[6] = (fc_column){ seq, 0, 0, 8, FC_COL_SEQ, 0, NULL, 500 };
        int64_t got = fc_batch_columns(frame, len, cols, 7, at, cap);
        uint64_t r = at;
        for (uint32_t i = 0; i < n; i++) {
            fc_task_record rec;
            memcpy(&rec, frame + FC_BATCH_HEADER_SIZE + (uint64_t)i * FC_RECORD_SIZE, sizeof rec);
            if (rec.flags & FC_FLAG_WORKFLOW)
                continue;
            CHECK(tid[r] == rec.task_id && start[r] == rec.start_ns);
            CHECK(act[r] == lut[rec.activity_id < 3 ? rec.activity_id : 3]);
            CHECK(off[r] == rec.payload_off + (1ull << 33));
            CHECK(status[r] == rec.status && node[r] == 9 && seq[r] == 500 + (r - at));
            r++;
        }
        CHECK(got == (int64_t)(r - at));
        CHECK(tid[at - 1] == 0 && tid[r] == 0);          /* nothing outside the rows */
        CHECK(got == (wf ? 270 : 300));
        /* errors */
        CHECK(fc_batch_columns(frame, len, cols, 7, at, at + (uint64_t)got - 1) == -ENOSPC);
        CHECK(fc_batch_columns(frame, len - 1, cols, 7, 0, cap) == -EBADMSG);
        CHECK(fc_batch_columns(frame, 10, cols, 7, 0, cap) == -EBADMSG);
        CHECK(fc_batch_columns(NULL, 0, cols, 7, 0, cap) == -EBADMSG);
        fc_column bad = cols[3];
        bad.dst_size = 2;                                 /* narrower than the field */
        CHECK(fc_batch_columns(frame, len, &bad, 1, 0, cap) == -EINVAL);
        bad = cols[0];
        bad.src_off = 60;                                 /* past the record */
        CHECK(fc_batch_columns(frame, len, &bad, 1, 0, cap) == -EINVAL);
        bad = cols[2];
        bad.lut_len = 0;
        CHECK(fc_batch_columns(frame, len, &bad, 1, 0, cap) == -EINVAL);
        bad = cols[0];
        bad.kind = 99;
        CHECK(fc_batch_columns(frame, len, &bad, 1, 0, cap) == -EINVAL);
        free(frame);
        free(tid); free(off); free(seq); free(start); free(act); free(node); free(status);
    }
}

/* ---------------------------------------------------------------- merge */

typedef struct ref_row {
    int64_t key, seq;
    uint64_t part, row;
} ref_row;

static int seqs_on;

static int ref_cmp(const void *a, const void *b)
{
    const ref_row *x = a, *y = b;
    if (x->key != y->key)
        return x->key < y->key ? -1 : 1;
    if (seqs_on && x->seq != y->seq)
        return x->seq < y->seq ? -1 : 1;
    if (x->part != y->part)
        return x->part < y->part ? -1 : 1;
    return x->row < y->row ? -1 : x->row > y->row;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static int merge_case(uint32_t k, uint64_t maxlen, int64_t spread, int with_seqs)
{
    int64_t **keys = calloc(k + 1, sizeof *keys), **seqs = calloc(k + 1, sizeof *seqs);
    uint64_t *lens = calloc(k + 1, sizeof *lens), total = 0;
    int64_t next_seq = 0;
    for (uint32_t p = 0; p < k; p++) {
        lens[p] = maxlen ? rnd() % (maxlen + 1) : 0;
        keys[p] = malloc((lens[p] + 1) * sizeof(int64_t));
        seqs[p] = malloc((lens[p] + 1) * sizeof(int64_t));
        for (uint64_t i = 0; i < lens[p]; i++)
            keys[p][i] = (int64_t)(rnd() % (uint64_t)spread) - spread / 2;
        qsort(keys[p], lens[p], sizeof(int64_t), cmp_i64);
        total += lens[p];
    }
    /* seqs: unique, increasing within a part among equal keys */
    for (uint32_t p = 0; p < k; p++)
        for (uint64_t i = 0; i < lens[p]; i++)
            seqs[p][i] = next_seq++ * 7919 % 1000003 + (int64_t)(i * 1000003);
    ref_row *ref = malloc((total + 1) * sizeof *ref);
    uint64_t t = 0;
    for (uint32_t p = 0; p < k; p++)
        for (uint64_t i = 0; i < lens[p]; i++)
            ref[t++] = (ref_row){ keys[p][i], seqs[p][i], p, i };
    seqs_on = with_seqs;
    qsort(ref, total, sizeof *ref, ref_cmp);
    uint64_t *order = malloc((total + 1) * 8);
    int64_t *mk = malloc((total + 1) * 8);
    int64_t got = fc_merge_order(k, (const int64_t *const *)keys,
                                 with_seqs ? (const int64_t *const *)seqs : NULL, lens, order, mk);
    int ok = got == (int64_t)total;
    for (uint64_t i = 0; ok && i < total; i++)
        ok = order[i] == ((ref[i].part << FC_ORDER_ROW_BITS) | ref[i].row) && mk[i] == ref[i].key;
    for (uint32_t p = 0; p < k; p++) {
        free(keys[p]);
        free(seqs[p]);
    }
    free(keys); free(seqs); free(lens); free(ref); free(order); free(mk);
    return ok;
}

/* seqs sorted within equal keys of a part: the merge's contract */
static void t_merge(void)
{
    CHECK(merge_case(1, 100, 50, 0));
    CHECK(merge_case(0, 0, 1, 0));
    for (int rep = 0; rep < 30; rep++) {
        CHECK(merge_case(1 + (uint32_t)(rnd() % 20), 200, 1 + (int64_t)(rnd() % 400), 0));
        CHECK(merge_case(1 + (uint32_t)(rnd() % 20), 200, 1 + (int64_t)(rnd() % 400), 1));
    }
    CHECK(merge_case(600, 30, 100, 0));
    CHECK(merge_case(3, 5000, 3, 0));           /* long runs of ties */
    /* heads equal to a finished part's sentinel, beside empty parts */
    int64_t big[3] = {INT64_MAX, INT64_MAX, INT64_MAX}, bigs[3] = {INT64_MAX - 2, INT64_MAX - 1, INT64_MAX};
    const int64_t *kb[4] = {big, NULL, big, NULL}, *sb[4] = {bigs, NULL, bigs, NULL};
    uint64_t lb[4] = {3, 0, 2, 0}, ob[5];
    int64_t mb[5];
    CHECK(fc_merge_order(4, kb, sb, lb, ob, mb) == 5);
    CHECK(ob[0] == 0 && ob[1] == ((2ull << FC_ORDER_ROW_BITS) | 0) && ob[2] == 1 &&
          ob[3] == ((2ull << FC_ORDER_ROW_BITS) | 1) && ob[4] == 2);
    CHECK(fc_merge_order(4, kb, NULL, lb, ob, mb) == 5 && ob[0] == 0 && ob[2] == 2 &&
          ob[3] == (2ull << FC_ORDER_ROW_BITS) && ob[4] == ((2ull << FC_ORDER_ROW_BITS) | 1));
    int64_t a[2] = {1, 2};
    const int64_t *ka[1] = {a};
    uint64_t l1[1] = {2}, o[2];
    CHECK(fc_merge_order(FC_ORDER_MAX_PARTS + 1, ka, NULL, l1, o, NULL) == -EINVAL);
    const int64_t *kn[1] = {NULL};
    CHECK(fc_merge_order(1, kn, NULL, l1, o, NULL) == -EINVAL);
    uint64_t lbig[1] = {1ull << FC_ORDER_ROW_BITS};
    CHECK(fc_merge_order(1, ka, NULL, lbig, o, NULL) == -EINVAL);
}

/* ---------------------------------------------------------------- duplicates */

static void t_duplicates(void)
{
    for (int rep = 0; rep < 40; rep++) {
        uint32_t k = 1 + (uint32_t)(rnd() % 4);
        uint64_t n = 1 + rnd() % 400;
        uint64_t *wf[4], *tid[4];
        uint16_t *status[4];
        for (uint32_t p = 0; p < k; p++) {
            wf[p] = malloc(n * 8);
            tid[p] = malloc(n * 8);
            status[p] = malloc(n * 2);
            for (uint64_t i = 0; i < n; i++) {
                wf[p][i] = rnd() % 2;
                tid[p][i] = rnd() % 6;
                status[p][i] = (uint16_t)(rnd() % 3);
            }
        }
        /* an order over random rows, keys non-decreasing with long ties */
        uint64_t *order = malloc(n * 8);
        int64_t *keys = malloc(n * 8);
        int64_t key = 0;
        for (uint64_t i = 0; i < n; i++) {
            order[i] = ((rnd() % k) << FC_ORDER_ROW_BITS) | (rnd() % n);
            key += rnd() % 4 == 0;
            keys[i] = key;
        }
        /* the reference: a row is kept unless an earlier kept... by the rule */
        uint8_t *keep = malloc(n);
        for (uint64_t i = 0; i < n; i++) {
            uint64_t p = order[i] >> FC_ORDER_ROW_BITS, r = order[i] & ((1ull << FC_ORDER_ROW_BITS) - 1);
            /* the row kept for this task in this key group: first non-running, else first */
            uint64_t best = UINT64_MAX;
            for (uint64_t j = 0; j < n; j++) {
                if (keys[j] != keys[i])
                    continue;
                uint64_t pj = order[j] >> FC_ORDER_ROW_BITS, rj = order[j] & ((1ull << FC_ORDER_ROW_BITS) - 1);
                if (wf[pj][rj] != wf[p][r] || tid[pj][rj] != tid[p][r])
                    continue;
                if (best == UINT64_MAX) {
                    best = j;
                    continue;
                }
                uint64_t pb = order[best] >> FC_ORDER_ROW_BITS,
                         rb = order[best] & ((1ull << FC_ORDER_ROW_BITS) - 1);
                if (status[pb][rb] == FC_STATUS_RUNNING && status[pj][rj] != FC_STATUS_RUNNING)
                    best = j;
            }
            keep[i] = best == i;
        }
        uint64_t *o2 = malloc(n * 8);
        int64_t *k2 = malloc(n * 8);
        memcpy(o2, order, n * 8);
        memcpy(k2, keys, n * 8);
        uint64_t lens[4] = {n, n, n, n};
        int64_t got = fc_drop_duplicates(o2, k2, n, k, lens, (const uint64_t *const *)wf,
                                         (const uint64_t *const *)tid,
                                         (const uint16_t *const *)status, FC_STATUS_RUNNING);
        uint64_t w = 0;
        int ok = got >= 0;
        for (uint64_t i = 0; ok && i < n; i++)
            if (keep[i]) {
                ok = w < (uint64_t)got && o2[w] == order[i] && k2[w] == keys[i];
                w++;
            }
        CHECK(ok && (int64_t)w == got);
        if (n > 1) {
            keys[0] = keys[n - 1] + 1;                   /* not sorted */
            CHECK(fc_drop_duplicates(order, keys, n, k, lens, (const uint64_t *const *)wf,
                                     (const uint64_t *const *)tid,
                                     (const uint16_t *const *)status, 2) == -EINVAL);
        }
        keys[0] = INT64_MIN;
        order[0] = (uint64_t)k << FC_ORDER_ROW_BITS;   /* a part past nparts */
        CHECK(fc_drop_duplicates(order, keys, n, k, lens, (const uint64_t *const *)wf,
                                 (const uint64_t *const *)tid,
                                 (const uint16_t *const *)status, 2) == -EINVAL);
        order[0] = n;                                  /* a row past its part */
        CHECK(fc_drop_duplicates(order, keys, n, k, lens, (const uint64_t *const *)wf,
                                 (const uint64_t *const *)tid,
                                 (const uint16_t *const *)status, 2) == -EINVAL);
        for (uint32_t p = 0; p < k; p++) {
            free(wf[p]);
            free(tid[p]);
            free(status[p]);
        }
        free(order); free(keys); free(keep); free(o2); free(k2);
    }
}

/* ---------------------------------------------------------------- gather */

/* pieces over 3 parts of 500 elements; columns of every item size, some
 * shuffled; checked element by element against a plain copy */
static int gather_case(int shuffle, uint64_t extra)
{
    enum { P = 3, N = 500, C = 4 };
    static const unsigned sizes[C] = {8, 4, 2, 1};
    uint8_t *parts[C][P];
    const void *bases[C][2 * P];
    for (int c = 0; c < C; c++)
        for (int p = 0; p < P; p++) {
            parts[c][p] = malloc(N * sizes[c]);
            for (unsigned i = 0; i < N * sizes[c]; i++)
                parts[c][p][i] = (uint8_t)rnd();
        }
    /* piece 0: one part (part 1), contiguous; piece 1: the three parts, ordered */
    for (int c = 0; c < C; c++) {
        bases[c][0] = parts[c][1];
        for (int p = 0; p < P; p++)
            bases[c][1 + p] = parts[c][p];
    }
    const uint64_t lens[P] = {N, N, N};
    uint64_t n1 = rnd() % 100, n2 = rnd() % 150, first = rnd() % 300;
    uint64_t *ord = malloc((n2 + 1) * 8);
    for (uint64_t i = 0; i < n2; i++)
        ord[i] = ((rnd() % P) << FC_ORDER_ROW_BITS) | (rnd() % N);
    fc_gather_piece pcs[2] = {
        { lens, NULL, first, n1, 1 },
        { lens, ord, 0, n2, P },
    };
    uint64_t total = n1 + n2, chunk = total + extra;
    fc_gather_column cols[C];
    uint8_t *want[C];
    int64_t want_mx = INT64_MIN;
    for (int c = 0; c < C; c++) {
        cols[c] = (fc_gather_column){ bases[c], malloc(chunk * sizes[c] + 1), sizes[c],
                                      (shuffle || c == 1 ? FC_GATHER_SHUFFLE : 0) | FC_GATHER_MAX, 7 };
        want[c] = calloc(chunk * sizes[c] + 1, 1);
        int sh = (cols[c].flags & FC_GATHER_SHUFFLE) != 0;
        for (uint64_t e = 0; e < total; e++) {
            const uint8_t *src = e < n1 ? parts[c][1] + (first + e) * sizes[c]
                : parts[c][ord[e - n1] >> FC_ORDER_ROW_BITS] +
                  (ord[e - n1] & 0xFFFFFFFFFFull) * sizes[c];
            for (unsigned b = 0; b < sizes[c]; b++)
                want[c][sh ? b * chunk + e : e * sizes[c] + b] = src[b];
            if (c == 0) {
                int64_t v;
                memcpy(&v, src, 8);
                if (v > want_mx)
                    want_mx = v;
            }
        }
    }
    int64_t got = fc_gather(pcs, 2, cols, C, chunk);
    int ok = got == (int64_t)total && cols[0].max == want_mx && cols[1].max == 0;
    for (int c = 0; c < C; c++) {
        ok = ok && memcmp(cols[c].out, want[c], chunk * sizes[c]) == 0;
        free(cols[c].out);
        free(want[c]);
        for (int p = 0; p < P; p++)
            free(parts[c][p]);
    }
    free(ord);
    return ok;
}

static void t_gather(void)
{
    for (int rep = 0; rep < 40; rep++)
        for (int sh = 0; sh < 2; sh++) {
            CHECK(gather_case(sh, 0));
            CHECK(gather_case(sh, rnd() % 100));
        }
    uint64_t v[4] = {1, 2, 3, 4}, o[1] = {5ull << FC_ORDER_ROW_BITS}, l4[1] = {4};
    const void *b[1] = {v};
    uint8_t out[64];
    fc_gather_column col = { b, out, 8, FC_GATHER_SHUFFLE | FC_GATHER_MAX, 0 };
    fc_gather_piece bad = { l4, o, 0, 1, 1 };
    CHECK(fc_gather(&bad, 1, &col, 1, 4) == -EINVAL);            /* part past nparts */
    o[0] = 4;
    CHECK(fc_gather(&bad, 1, &col, 1, 4) == -EINVAL);            /* row past its part */
    fc_gather_piece past = { l4, NULL, 1, 4, 1 };
    CHECK(fc_gather(&past, 1, &col, 1, 4) == -EINVAL);           /* rows past the part */
    fc_gather_piece ok1 = { l4, NULL, 0, 4, 1 };
    CHECK(fc_gather(&ok1, 1, &col, 1, 3) == -EINVAL);            /* more than chunk */
    col.itemsize = 3;
    CHECK(fc_gather(&ok1, 1, &col, 1, 4) == -EINVAL);            /* itemsize */
    col.itemsize = 8;
    const void *nb[1] = {NULL};
    fc_gather_column nul = { nb, out, 8, 0, 0 };
    CHECK(fc_gather(&ok1, 1, &nul, 1, 4) == -EINVAL);            /* a missing array */
    CHECK(fc_gather(&ok1, 1, &col, 1, 4) == 4 && col.max == 4);
    memset(out, 0xAA, sizeof out);
    fc_gather_piece none = { l4, NULL, 0, 0, 1 };
    CHECK(fc_gather(&none, 1, &col, 1, 4) == 0 && col.max == INT64_MIN);
    for (int i = 0; i < 32; i++)
        CHECK(out[i] == 0);
}

/* ---------------------------------------------------------------- threads */

enum { TN = 20000, TK = 8 };
static int64_t *t_keys[TK];
static uint64_t t_lens[TK];
static uint64_t t_want[TN * TK];

static void *merge_thread(void *arg)
{
    (void)arg;
    uint64_t *order = malloc(sizeof t_want);
    int64_t got = fc_merge_order(TK, (const int64_t *const *)t_keys, NULL, t_lens, order, NULL);
    int ok = got == TN * TK && memcmp(order, t_want, sizeof t_want) == 0;
    uint8_t *out = malloc((size_t)TN * TK * 8);
    const void *bases[TK];
    for (int p = 0; p < TK; p++)
        bases[p] = t_keys[p];
    fc_gather_piece pc = { t_lens, order, 0, (uint64_t)TN * TK, TK };
    fc_gather_column col = { bases, out, 8, FC_GATHER_SHUFFLE | FC_GATHER_MAX, 0 };
    ok = ok && fc_gather(&pc, 1, &col, 1, (uint64_t)TN * TK) == TN * TK &&
         col.max == (int64_t)(TN - 1) * TK + TK - 1;
    free(order);
    free(out);
    return (void *)(intptr_t)ok;
}

static void t_threads(void)
{
    for (int p = 0; p < TK; p++) {
        t_lens[p] = TN;
        t_keys[p] = malloc(TN * sizeof(int64_t));
        for (int i = 0; i < TN; i++)
            t_keys[p][i] = (int64_t)i * TK + (TK - 1 - p);    /* interleaved */
    }
    CHECK(fc_merge_order(TK, (const int64_t *const *)t_keys, NULL, t_lens, t_want, NULL) == TN * TK);
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        CHECK(pthread_create(&th[i], NULL, merge_thread, NULL) == 0);
    int ok = 1;
    for (int i = 0; i < 4; i++) {
        void *r;
        pthread_join(th[i], &r);
        ok &= (int)(intptr_t)r;
    }
    for (int p = 0; p < TK; p++)
        free(t_keys[p]);
    CHECK(ok);
    CHECK(t_want[0] == ((uint64_t)(TK - 1) << FC_ORDER_ROW_BITS));
}

int main(void)
{
    static const fc_test tests[] = {
        { "decode", t_decode },
        { "merge", t_merge },
        { "duplicates", t_duplicates },
        { "gather", t_gather },
        { "threads", t_threads },
    };
    return FC_RUN_TESTS(tests);
}
