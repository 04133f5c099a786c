/*
 * jobid.c -- fc_job_id_of: the 64-bit id of a job name, the same rule as
 * Python's job_id_of (flowcept/record/job.py), with a small BLAKE2b
 * (RFC 7693: unkeyed, digest length 8) for non-numeric names.  A leaf.
 */
#include "flowcept.h"

#include <stdint.h>
#include <string.h>

static const uint64_t b2_iv[8] = {
    0x6A09E667F3BCC908ull, 0xBB67AE8584CAA73Bull,
    0x3C6EF372FE94F82Bull, 0xA54FF53A5F1D36F1ull,
    0x510E527FADE682D1ull, 0x9B05688C2B3E6C1Full,
    0x1F83D9ABFB41BD6Bull, 0x5BE0CD19137E2179ull,
};

/* message word schedule of rounds 0..9 (rounds 10, 11 reuse 0, 1) */
static const uint8_t b2_sigma[10][16] = {
    { 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15 },
    { 14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3 },
    { 11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4 },
    { 7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8 },
    { 9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13 },
    { 2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9 },
    { 12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11 },
    { 13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10 },
    { 6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5 },
    { 10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0 },
};

static inline uint64_t rotr64(uint64_t x, unsigned n)
{
    return (x >> n) | (x << (64 - n));
}

static inline uint64_t load_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

/* The mixing function G on v[a], v[b], v[c], v[d] with words x, y. */
#define B2_G(a, b, c, d, x, y) do { \
        v[a] = v[a] + v[b] + (x); v[d] = rotr64(v[d] ^ v[a], 32); \
        v[c] = v[c] + v[d];       v[b] = rotr64(v[b] ^ v[c], 24); \
        v[a] = v[a] + v[b] + (y); v[d] = rotr64(v[d] ^ v[a], 16); \
        v[c] = v[c] + v[d];       v[b] = rotr64(v[b] ^ v[c], 63); \
    } while (0)

/* Compression F: one 128-byte block, t = bytes hashed so far including
 * this block (fits 64 bits here), last = final block flag. */
static void b2_compress(uint64_t h[8], const uint8_t block[128], uint64_t t,
                        int last)
{
    uint64_t v[16], m[16];
    for (int i = 0; i < 16; i++)
        m[i] = load_le64(block + 8 * i);
    for (int i = 0; i < 8; i++) {
        v[i] = h[i];
        v[i + 8] = b2_iv[i];
    }
    v[12] ^= t;     /* low word of the counter; the high word is 0 */
    if (last)
        v[14] = ~v[14];
    for (int r = 0; r < 12; r++) {
        const uint8_t *s = b2_sigma[r % 10];
        B2_G(0, 4, 8, 12, m[s[0]], m[s[1]]);
        B2_G(1, 5, 9, 13, m[s[2]], m[s[3]]);
        B2_G(2, 6, 10, 14, m[s[4]], m[s[5]]);
        B2_G(3, 7, 11, 15, m[s[6]], m[s[7]]);
        B2_G(0, 5, 10, 15, m[s[8]], m[s[9]]);
        B2_G(1, 6, 11, 12, m[s[10]], m[s[11]]);
        B2_G(2, 7, 8, 13, m[s[12]], m[s[13]]);
        B2_G(3, 4, 9, 14, m[s[14]], m[s[15]]);
    }
    for (int i = 0; i < 8; i++)
        h[i] ^= v[i] ^ v[i + 8];
}

/* BLAKE2b with an 8-byte digest, returned as the little-endian u64 of
 * those 8 bytes (that is h[0]). */
static uint64_t blake2b64(const uint8_t *p, size_t n)
{
    uint64_t h[8];
    memcpy(h, b2_iv, sizeof h);
    h[0] ^= 0x01010000ull ^ 8u; /* depth 1, fanout 1, no key, nn = 8 */
    uint64_t t = 0;
    while (n > 128) {
        t += 128;
        b2_compress(h, p, t, 0);
        p += 128;
        n -= 128;
    }
    uint8_t last[128];
    memset(last, 0, sizeof last);
    if (n)
        memcpy(last, p, n);
    t += n;
    b2_compress(h, last, t, 1);
    return h[0];
}

uint64_t fc_job_id_of(const char *name)
{
    if (!name)
        return 0;
    size_t n = strlen(name);
    uint64_t v = 0;
    int numeric = n > 0;
    for (size_t i = 0; numeric && i < n; i++) {
        unsigned d = (unsigned char)name[i] - (unsigned)'0';
        if (d > 9 || v > ((1ull << 63) - 1 - d) / 10)
            numeric = 0; /* not a digit, or >= 2^63 */
        else
            v = v * 10 + d;
    }
    if (numeric)
        return v;
    return blake2b64((const uint8_t *)name, n) | (1ull << 63);
}
