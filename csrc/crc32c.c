/*
 * crc32c.c -- CRC32C (Castagnoli): fc_crc32c, fc_crc32c_force_soft.
 * A leaf: depends on nothing else of flowcept.  Slicing-by-8 tables, and the
 * SSE4.2 crc32 instruction (three interleaved streams) where the CPU has it.
 */
#include "flowcept.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <nmmintrin.h>
#define FC_HAVE_X86_CRC 1
#endif

/* ------------------------------------------------------------------ */
/* CRC32C                                                              */
/* ------------------------------------------------------------------ */

static uint32_t crc_table[8][256];
#define FC__CRC_BLK 2048u /* bytes per stream in the 3-stream loop */
static uint32_t crc_shift_blk; /* x^(8*FC__CRC_BLK) mod P, reflected */
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;
static int crc_hw; /* written once under crc_once */
static _Atomic int crc_force_soft; /* fc_crc32c_force_soft */

static uint32_t crc_sw(uint32_t c, const uint8_t *p, uint64_t n);

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^
                              crc_table[0][crc_table[t - 1][i] & 0xff];
    static const uint8_t zeros[FC__CRC_BLK];
    crc_shift_blk = crc_sw(1u << 31, zeros, FC__CRC_BLK);
#ifdef FC_HAVE_X86_CRC
    __builtin_cpu_init();
    crc_hw = __builtin_cpu_supports("sse4.2") ? 1 : 0;
#endif
}

static uint32_t crc_sw(uint32_t c, const uint8_t *p, uint64_t n)
{
    while (n && ((uintptr_t)p & 7)) {
        c = (c >> 8) ^ crc_table[0][(c ^ *p++) & 0xff];
        n--;
    }
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        w ^= c;
        c = crc_table[7][w & 0xff] ^ crc_table[6][(w >> 8) & 0xff] ^
            crc_table[5][(w >> 16) & 0xff] ^ crc_table[4][(w >> 24) & 0xff] ^
            crc_table[3][(w >> 32) & 0xff] ^ crc_table[2][(w >> 40) & 0xff] ^
            crc_table[1][(w >> 48) & 0xff] ^ crc_table[0][w >> 56];
        p += 8;
        n -= 8;
    }
    while (n--)
        c = (c >> 8) ^ crc_table[0][(c ^ *p++) & 0xff];
    return c;
}

/* a(x) * b(x) mod P, reflected representation (bit 31 = x^0) */
static uint32_t crc_mulmod(uint32_t a, uint32_t b)
{
    uint32_t m = 1u << 31, p = 0;
    for (;;) {
        if (a & m) {
            p ^= b;
            if ((a & (m - 1)) == 0)
                break;
        }
        m >>= 1;
        b = b & 1 ? (b >> 1) ^ 0x82F63B78u : b >> 1;
    }
    return p;
}

#ifdef FC_HAVE_X86_CRC
__attribute__((target("sse4.2")))
static uint32_t crc_hw_run(uint32_t c, const uint8_t *p, uint64_t n)
{
    while (n && ((uintptr_t)p & 7)) {
        c = _mm_crc32_u8(c, *p++);
        n--;
    }
    uint64_t c64 = c;
    /* three independent streams hide the instruction's latency; the
     * partial crcs are combined by multiplying with x^(8*BLK) mod P */
    while (n >= 3 * FC__CRC_BLK) {
        uint64_t a = c64, b = 0, d = 0;
        const uint8_t *pa = p, *pb = p + FC__CRC_BLK, *pd = p + 2 * FC__CRC_BLK;
        for (unsigned i = 0; i < FC__CRC_BLK; i += 8) {
            uint64_t x, y, z;
            memcpy(&x, pa + i, 8);
            memcpy(&y, pb + i, 8);
            memcpy(&z, pd + i, 8);
            a = _mm_crc32_u64(a, x);
            b = _mm_crc32_u64(b, y);
            d = _mm_crc32_u64(d, z);
        }
        uint32_t k = crc_shift_blk;
        c64 = crc_mulmod(k, crc_mulmod(k, (uint32_t)a) ^ (uint32_t)b) ^
              (uint32_t)d;
        p += 3 * FC__CRC_BLK;
        n -= 3 * FC__CRC_BLK;
    }
    while (n >= 8) {
        uint64_t a;
        memcpy(&a, p, 8);
        c64 = _mm_crc32_u64(c64, a);
        p += 8;
        n -= 8;
    }
    c = (uint32_t)c64;
    while (n--)
        c = _mm_crc32_u8(c, *p++);
    return c;
}
#endif

void fc_crc32c_force_soft(int force)
{
    atomic_store_explicit(&crc_force_soft, force ? 1 : 0,
                          memory_order_relaxed);
}

uint32_t fc_crc32c(uint32_t crc, const void *buf, uint64_t len)
{
    pthread_once(&crc_once, crc_init);
    if (!buf || !len)
        return crc;
    uint32_t c = ~crc;
#ifdef FC_HAVE_X86_CRC
    if (crc_hw && !atomic_load_explicit(&crc_force_soft, memory_order_relaxed))
        return ~crc_hw_run(c, buf, len);
#endif
    return ~crc_sw(c, buf, len);
}

