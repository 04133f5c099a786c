/*
 * msgpack_enc.c -- the slow paths of msgpack_enc.h: buffer growth and
 * release.  A leaf (plain malloc; nothing of Python or of the ring).
 */
#include "msgpack_enc.h"

#include <stdlib.h>

void fc_mp_free(fc_mp_buf *b)
{
    if (b->p != b->inl)
        free(b->p);
    b->p = b->inl;
    b->len = 0;
    b->cap = b->limit < sizeof(b->inl) ? b->limit : sizeof(b->inl);
}

int fc_mp_grow(fc_mp_buf *b, size_t n)
{
    if (n > b->limit || b->len > b->limit - n)
        return 0;
    size_t need = b->len + n;
    size_t cap = b->cap * 2;
    if (cap < need)
        cap = need;
    char *p;
    if (b->p == b->inl) {
        p = malloc(cap);
        if (p != NULL)
            memcpy(p, b->inl, b->len);
    } else {
        p = realloc(b->p, cap);
    }
    if (p == NULL)
        return 0;
    b->p = p;
    b->cap = cap;
    return 1;
}

/* ------------------------------------------------------------------ */
/* Checking (fc_mp_check)                                              */
/* ------------------------------------------------------------------ */

static uint64_t rd_be(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

/* Skips one value at p; NULL when malformed, too deep or a map key is not a
 * scalar.  *scalar is set to whether the value is not an array or map. */
static const uint8_t *mp_skip(const uint8_t *p, const uint8_t *end, int depth,
                              int *scalar)
{
    if (p >= end)
        return NULL;
    uint8_t b = *p++;
    uint64_t n = 0;       /* payload bytes (scalars) or items (containers) */
    int kind = 0;         /* 0 scalar, 1 array, 2 map */
    if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) {
        n = 0;
    } else if (b <= 0x8f) {
        kind = 2, n = b & 0x0f;
    } else if (b <= 0x9f) {
        kind = 1, n = b & 0x0f;
    } else if (b <= 0xbf) {
        n = b & 0x1f;
    } else {
        static const int8_t lenw[] = {      /* 0xc4..0xdf: width of a length field */
            1, 2, 4, 1, 2, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            0, 0, 0, 0, 0, 1, 2, 4, 2, 4, 2, 4};
        static const int8_t fixw[] = {      /* 0xc4..0xdf: fixed payload bytes */
            0, 0, 0, 0, 0, 0, 4, 8, 1, 2, 4, 8, 1, 2, 4, 8,
            2, 3, 5, 9, 17, 0, 0, 0, 0, 0, 0, 0};
        if (b == 0xc1)
            return NULL;
        int i = b - 0xc4;
        int w = lenw[i];
        if (w) {
            if ((size_t)(end - p) < (size_t)w)
                return NULL;
            n = rd_be(p, w);
            p += w;
            if (b >= 0xc7 && b <= 0xc9)
                n += 1;                      /* ext: the type byte */
            if (b == 0xdc || b == 0xdd)
                kind = 1;
            else if (b == 0xde || b == 0xdf)
                kind = 2;
        } else {
            n = (uint64_t)fixw[i];
        }
    }
    *scalar = kind == 0;
    if (kind == 0) {
        if ((uint64_t)(end - p) < n)
            return NULL;
        return p + n;
    }
    if (depth <= 0)
        return NULL;
    for (uint64_t k = 0; k < n; k++) {
        int sc;
        if (kind == 2) {
            p = mp_skip(p, end, depth - 1, &sc);
            if (p == NULL || !sc)
                return NULL;
        }
        p = mp_skip(p, end, depth - 1, &sc);
        if (p == NULL)
            return NULL;
    }
    return p;
}

int fc_mp_check(const void *buf, size_t len, int max_depth)
{
    const uint8_t *p = buf, *end = p + len;
    int sc;
    p = mp_skip(p, end, max_depth, &sc);
    return p != NULL && p == end;
}
