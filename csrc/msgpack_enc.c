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
    b->cap = sizeof(b->inl);
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
