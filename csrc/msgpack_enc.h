/*
 * msgpack_enc.h -- a small msgpack encoder into a growable buffer, byte for
 * byte what msgpack-python writes with use_bin_type=True (smallest form of
 * every int, float64 for floats, str8..32 for text, bin8..32 for bytes).
 * No Python: pycapture.c adds the Python object walk on top, and C code or
 * tests can use it directly.
 *
 * Every encoder returns 1 on success and 0 when the buffer would exceed its
 * limit or memory runs out (the buffer then holds a prefix: discard it).
 * The buffer starts in its own inline storage (FC_MP_INLINE bytes, e.g. on
 * the stack) and moves to malloc'd memory when it outgrows it.
 * Header-only encoders (static inline: they are on pycapture's hot path);
 * msgpack_enc.c holds the growth slow path.
 */
#ifndef FC_MSGPACK_ENC_H
#define FC_MSGPACK_ENC_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define FC_MP_INLINE 1024

typedef struct fc_mp_buf {
    char *p;                 /* data: inl or malloc'd */
    size_t len, cap, limit;  /* limit: most bytes it may hold */
    char inl[FC_MP_INLINE];
} fc_mp_buf;

static inline void fc_mp_init(fc_mp_buf *b, size_t limit)
{
    b->p = b->inl;
    b->len = 0;
    /* a limit below the inline storage holds there too (growth checks it) */
    b->cap = limit < sizeof(b->inl) ? limit : sizeof(b->inl);
    b->limit = limit;
}

/* Frees malloc'd storage (the buffer can be initialised again). */
void fc_mp_free(fc_mp_buf *b);

/* Grows the buffer for n more bytes; 0 over the limit or out of memory. */
int fc_mp_grow(fc_mp_buf *b, size_t n);

#define FC_MP_RESERVE(b, n) \
    do { \
        if ((b)->len + (n) > (b)->cap && !fc_mp_grow((b), (n))) \
            return 0; \
    } while (0)

/* big-endian stores; the caller reserved the room */
static inline void fc_mp_put1(fc_mp_buf *b, uint8_t v) { b->p[b->len++] = (char)v; }
static inline void fc_mp_put2(fc_mp_buf *b, uint16_t v)
{
    b->p[b->len++] = (char)(v >> 8);
    b->p[b->len++] = (char)v;
}
static inline void fc_mp_put4(fc_mp_buf *b, uint32_t v)
{
    v = __builtin_bswap32(v);
    memcpy(b->p + b->len, &v, 4);
    b->len += 4;
}
static inline void fc_mp_put8(fc_mp_buf *b, uint64_t v)
{
    v = __builtin_bswap64(v);
    memcpy(b->p + b->len, &v, 8);
    b->len += 8;
}

static inline int fc_mp_nil(fc_mp_buf *b)
{
    FC_MP_RESERVE(b, 1);
    fc_mp_put1(b, 0xc0);
    return 1;
}

static inline int fc_mp_bool(fc_mp_buf *b, int v)
{
    FC_MP_RESERVE(b, 1);
    fc_mp_put1(b, v ? 0xc3 : 0xc2);
    return 1;
}

/* Container header: fix form (fix | n) below 16, else the 16- or 32-bit
 * form (marker16 and marker16 + 1). */
static inline int fc_mp_container_hdr(fc_mp_buf *b, size_t n, uint8_t fix,
                                      uint8_t marker16)
{
    FC_MP_RESERVE(b, 5);
    if (n < 16)
        fc_mp_put1(b, (uint8_t)(fix | n));
    else if (n < 65536) {
        fc_mp_put1(b, marker16);
        fc_mp_put2(b, (uint16_t)n);
    } else if (n <= 0xFFFFFFFFu) {
        fc_mp_put1(b, (uint8_t)(marker16 + 1));
        fc_mp_put4(b, (uint32_t)n);
    } else
        return 0;
    return 1;
}

/* A map of n pairs / an array of n items follows (the caller encodes them). */
static inline int fc_mp_map_hdr(fc_mp_buf *b, size_t n) { return fc_mp_container_hdr(b, n, 0x80, 0xde); }
static inline int fc_mp_arr_hdr(fc_mp_buf *b, size_t n) { return fc_mp_container_hdr(b, n, 0x90, 0xdc); }

/* Bytes copied as they are (already encoded msgpack). */
static inline int fc_mp_raw(fc_mp_buf *b, const void *s, size_t n)
{
    FC_MP_RESERVE(b, n);
    memcpy(b->p + b->len, s, n);
    b->len += n;
    return 1;
}

/* A bytes-like value with an 8/16/32-bit length: markers m8, m8+1, m8+2
 * (str8..str32 = 0xd9.., bin8..bin32 = 0xc4..). */
static inline int fc_mp_sized(fc_mp_buf *b, const void *s, size_t len,
                              uint8_t m8)
{
    FC_MP_RESERVE(b, 5 + len);
    if (len < 256) {
        fc_mp_put1(b, m8);
        fc_mp_put1(b, (uint8_t)len);
    } else if (len < 65536) {
        fc_mp_put1(b, (uint8_t)(m8 + 1));
        fc_mp_put2(b, (uint16_t)len);
    } else if (len <= 0xFFFFFFFFu) {
        fc_mp_put1(b, (uint8_t)(m8 + 2));
        fc_mp_put4(b, (uint32_t)len);
    } else
        return 0;
    if (len)
        memcpy(b->p + b->len, s, len);
    b->len += len;
    return 1;
}

/* UTF-8 text (not checked: the caller passes valid UTF-8). */
static inline int fc_mp_str(fc_mp_buf *b, const char *s, size_t len)
{
    if (len < 32) {
        FC_MP_RESERVE(b, 1 + len);
        fc_mp_put1(b, (uint8_t)(0xa0 | len));
        if (len)
            memcpy(b->p + b->len, s, len);
        b->len += len;
        return 1;
    }
    return fc_mp_sized(b, s, len, 0xd9);
}

static inline int fc_mp_bin(fc_mp_buf *b, const void *s, size_t len)
{
    return fc_mp_sized(b, s, len, 0xc4);
}

static inline int fc_mp_uint(fc_mp_buf *b, uint64_t v)
{
    FC_MP_RESERVE(b, 9);
    if (v < 128)
        fc_mp_put1(b, (uint8_t)v);
    else if (v < 256) {
        fc_mp_put1(b, 0xcc);
        fc_mp_put1(b, (uint8_t)v);
    } else if (v < 65536) {
        fc_mp_put1(b, 0xcd);
        fc_mp_put2(b, (uint16_t)v);
    } else if (v <= 0xFFFFFFFFull) {
        fc_mp_put1(b, 0xce);
        fc_mp_put4(b, (uint32_t)v);
    } else {
        fc_mp_put1(b, 0xcf);
        fc_mp_put8(b, v);
    }
    return 1;
}

/* Any int64: non-negative ones in the unsigned forms, as msgpack-python. */
static inline int fc_mp_int(fc_mp_buf *b, int64_t v)
{
    if (v >= 0)
        return fc_mp_uint(b, (uint64_t)v);
    FC_MP_RESERVE(b, 9);
    if (v >= -32)
        fc_mp_put1(b, (uint8_t)(int8_t)v);
    else if (v >= -128) {
        fc_mp_put1(b, 0xd0);
        fc_mp_put1(b, (uint8_t)(int8_t)v);
    } else if (v >= -32768) {
        fc_mp_put1(b, 0xd1);
        fc_mp_put2(b, (uint16_t)(int16_t)v);
    } else if (v >= -2147483648LL) {
        fc_mp_put1(b, 0xd2);
        fc_mp_put4(b, (uint32_t)(int32_t)v);
    } else {
        fc_mp_put1(b, 0xd3);
        fc_mp_put8(b, (uint64_t)v);
    }
    return 1;
}

/* float64 always (msgpack-python packs Python floats so). */
static inline int fc_mp_double(fc_mp_buf *b, double d)
{
    uint64_t u;
    memcpy(&u, &d, 8);
    FC_MP_RESERVE(b, 9);
    fc_mp_put1(b, 0xcb);
    fc_mp_put8(b, u);
    return 1;
}

/* Checks that buf holds exactly one well-formed msgpack value nested at
 * most max_depth deep whose map keys are all scalars (nil, bool, int,
 * float, str, bin, ext): what a reader can turn into a dict.  1 yes, 0 no. */
int fc_mp_check(const void *buf, size_t len, int max_depth);

#endif /* FC_MSGPACK_ENC_H */
