/* ryu.c -- shortest round-trip digits of a double: the d2d step of Ryu
 * (github.com/ulfjack/ryu, ryu/d2s.c with its small tables,
 * RYU_OPTIMIZE_SIZE, on the 128-bit integer path), reduced to what the JSON
 * writer needs: digits and a decimal exponent, no text.
 *
 * Copyright 2018 Ulf Adams.  Used under the Boost Software License 1.0
 * (https://www.boost.org/LICENSE_1_0.txt): "Permission is hereby granted,
 * free of charge, to any person or organization obtaining a copy of the
 * software and accompanying documentation covered by this license ... to
 * use, reproduce, display, distribute, execute, and transmit the Software,
 * and to prepare derivative works of the Software ...  THE SOFTWARE IS
 * PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND."  The full text is in
 * csrc/LICENSE-ryu. */
#include "ryu.h"

#include <stdbool.h>
#include <string.h>

typedef unsigned __int128 u128;

#define DOUBLE_MANTISSA_BITS 52
#define DOUBLE_EXPONENT_BITS 11
#define DOUBLE_BIAS 1023
#define DOUBLE_POW5_INV_BITCOUNT 125
#define DOUBLE_POW5_BITCOUNT 125

static const uint64_t POW5_INV_SPLIT2[15][2] = {
    {1u, 2305843009213693952u},
    {5955668970331000884u, 1784059615882449851u},
    {8982663654677661702u, 1380349269358112757u},
    {7286864317269821294u, 2135987035920910082u},
    {7005857020398200553u, 1652639921975621497u},
    {17965325103354776697u, 1278668206209430417u},
    {8928596168509315048u, 1978643211784836272u},
    {10075671573058298858u, 1530901034580419511u},
    {597001226353042382u, 1184477304306571148u},
    {1527430471115325346u, 1832889850782397517u},
    {12533209867169019542u, 1418129833677084982u},
    {5577825024675947042u, 2194449627517475473u},
    {11006974540203867551u, 1697873161311732311u},
    {10313493231639821582u, 1313665730009899186u},
    {12701016819766672773u, 2032799256770390445u},
};
static const uint32_t POW5_INV_OFFSETS[19] = {
    0x54544554, 0x04055545, 0x10041000, 0x00400414, 0x40010000, 0x41155555, 0x00000454,
    0x00010044, 0x40000000, 0x44000041, 0x50454450, 0x55550054, 0x51655554, 0x40004000,
    0x01000001, 0x00010500, 0x51515411, 0x05555554, 0x00000000,
};
static const uint64_t POW5_SPLIT2[13][2] = {
    {0u, 1152921504606846976u},
    {0u, 1490116119384765625u},
    {1032610780636961552u, 1925929944387235853u},
    {7910200175544436838u, 1244603055572228341u},
    {16941905809032713930u, 1608611746708759036u},
    {13024893955298202172u, 2079081953128979843u},
    {6607496772837067824u, 1343575221513417750u},
    {17332926989895652603u, 1736530273035216783u},
    {13037379183483547984u, 2244412773384604712u},
    {1605989338741628675u, 1450417759929778918u},
    {9630225068416591280u, 1874621017369538693u},
    {665883850346957067u, 1211445438634777304u},
    {14931890668723713708u, 1565756531257009982u},
};
static const uint32_t POW5_OFFSETS[21] = {
    0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x40000000, 0x59695995, 0x55545555,
    0x56555515, 0x41150504, 0x40555410, 0x44555145, 0x44504540, 0x45555550, 0x40004000,
    0x96440440, 0x55565565, 0x54454045, 0x40154151, 0x55559155, 0x51405555, 0x00000105,
};
#define POW5_TABLE_SIZE 26
static const uint64_t POW5_TABLE[POW5_TABLE_SIZE] = {
    1ull, 5ull, 25ull, 125ull, 625ull, 3125ull, 15625ull, 78125ull, 390625ull,
    1953125ull, 9765625ull, 48828125ull, 244140625ull, 1220703125ull, 6103515625ull,
    30517578125ull, 152587890625ull, 762939453125ull, 3814697265625ull,
    19073486328125ull, 95367431640625ull, 476837158203125ull, 2384185791015625ull,
    11920928955078125ull, 59604644775390625ull, 298023223876953125ull,
};

static inline int32_t pow5bits(int32_t e)
{
    return (int32_t)((((uint32_t)e) * 1217359) >> 19) + 1;
}

static inline uint32_t log10Pow2(int32_t e)
{
    return (((uint32_t)e) * 78913) >> 18;
}

static inline uint32_t log10Pow5(int32_t e)
{
    return (((uint32_t)e) * 732923) >> 20;
}

static inline uint32_t pow5Factor(uint64_t value)
{
    const uint64_t m_inv_5 = 14757395258967641293u;   /* 5 * m_inv_5 = 1 (mod 2^64) */
    const uint64_t n_div_5 = 3689348814741910323u;    /* 2^64 / 5 */
    uint32_t count = 0;
    for (;;) {
        value *= m_inv_5;
        if (value > n_div_5)
            break;
        ++count;
    }
    return count;
}

static inline bool multipleOfPowerOf5(uint64_t value, uint32_t p)
{
    return pow5Factor(value) >= p;
}

static inline bool multipleOfPowerOf2(uint64_t value, uint32_t p)
{
    return (value & ((1ull << p) - 1)) == 0;
}

static inline void computePow5(uint32_t i, uint64_t *result)
{
    const uint32_t base = i / POW5_TABLE_SIZE;
    const uint32_t base2 = base * POW5_TABLE_SIZE;
    const uint32_t offset = i - base2;
    const uint64_t *mul = POW5_SPLIT2[base];
    if (offset == 0) {
        result[0] = mul[0];
        result[1] = mul[1];
        return;
    }
    const uint64_t m = POW5_TABLE[offset];
    const u128 b0 = ((u128)m) * mul[0];
    const u128 b2 = ((u128)m) * mul[1];
    const uint32_t delta = (uint32_t)(pow5bits((int32_t)i) - pow5bits((int32_t)base2));
    const u128 shiftedSum = (b0 >> delta) + (b2 << (64 - delta)) +
                            ((POW5_OFFSETS[i / 16] >> ((i % 16) << 1)) & 3);
    result[0] = (uint64_t)shiftedSum;
    result[1] = (uint64_t)(shiftedSum >> 64);
}

static inline void computeInvPow5(uint32_t i, uint64_t *result)
{
    const uint32_t base = (i + POW5_TABLE_SIZE - 1) / POW5_TABLE_SIZE;
    const uint32_t base2 = base * POW5_TABLE_SIZE;
    const uint32_t offset = base2 - i;
    const uint64_t *mul = POW5_INV_SPLIT2[base];
    if (offset == 0) {
        result[0] = mul[0];
        result[1] = mul[1];
        return;
    }
    const uint64_t m = POW5_TABLE[offset];
    const u128 b0 = ((u128)m) * (mul[0] - 1);
    const u128 b2 = ((u128)m) * mul[1];
    const uint32_t delta = (uint32_t)(pow5bits((int32_t)base2) - pow5bits((int32_t)i));
    const u128 shiftedSum = ((b0 >> delta) + (b2 << (64 - delta))) + 1 +
                            ((POW5_INV_OFFSETS[i / 16] >> ((i % 16) << 1)) & 3);
    result[0] = (uint64_t)shiftedSum;
    result[1] = (uint64_t)(shiftedSum >> 64);
}

static inline uint64_t mulShift64(uint64_t m, const uint64_t *mul, int32_t j)
{
    const u128 b0 = ((u128)m) * mul[0];
    const u128 b2 = ((u128)m) * mul[1];
    return (uint64_t)(((b0 >> 64) + b2) >> (j - 64));
}

static inline uint64_t mulShiftAll64(uint64_t m, const uint64_t *mul, int32_t j, uint64_t *vp,
                                     uint64_t *vm, uint32_t mmShift)
{
    *vp = mulShift64(4 * m + 2, mul, j);
    *vm = mulShift64(4 * m - 1 - mmShift, mul, j);
    return mulShift64(4 * m, mul, j);
}

static inline int decimal_length17(uint64_t v)
{
    int n = 1;
    while (v >= 10) {
        v /= 10;
        n++;
    }
    return n;
}

/* d2d of ryu/d2s.c: the shortest, closest digits in the rounding interval. */
static void d2d(uint64_t ieeeMantissa, uint32_t ieeeExponent, uint64_t *out, int32_t *out_exp)
{
    int32_t e2;
    uint64_t m2;
    if (ieeeExponent == 0) {
        e2 = 1 - DOUBLE_BIAS - DOUBLE_MANTISSA_BITS - 2;
        m2 = ieeeMantissa;
    } else {
        e2 = (int32_t)ieeeExponent - DOUBLE_BIAS - DOUBLE_MANTISSA_BITS - 2;
        m2 = (1ull << DOUBLE_MANTISSA_BITS) | ieeeMantissa;
    }
    const bool even = (m2 & 1) == 0;
    const bool acceptBounds = even;
    const uint64_t mv = 4 * m2;
    const uint32_t mmShift = ieeeMantissa != 0 || ieeeExponent <= 1;
    uint64_t vr, vp, vm;
    int32_t e10;
    bool vmIsTrailingZeros = false;
    bool vrIsTrailingZeros = false;
    if (e2 >= 0) {
        const uint32_t q = log10Pow2(e2) - (e2 > 3);
        e10 = (int32_t)q;
        const int32_t k = DOUBLE_POW5_INV_BITCOUNT + pow5bits((int32_t)q) - 1;
        const int32_t i = -e2 + (int32_t)q + k;
        uint64_t pow5[2];
        computeInvPow5(q, pow5);
        vr = mulShiftAll64(m2, pow5, i, &vp, &vm, mmShift);
        if (q <= 21) {
            const uint32_t mvMod5 = ((uint32_t)mv) - 5 * ((uint32_t)(mv / 5));
            if (mvMod5 == 0)
                vrIsTrailingZeros = multipleOfPowerOf5(mv, q);
            else if (acceptBounds)
                vmIsTrailingZeros = multipleOfPowerOf5(mv - 1 - mmShift, q);
            else
                vp -= multipleOfPowerOf5(mv + 2, q);
        }
    } else {
        const uint32_t q = log10Pow5(-e2) - (-e2 > 1);
        e10 = (int32_t)q + e2;
        const int32_t i = -e2 - (int32_t)q;
        const int32_t k = pow5bits(i) - DOUBLE_POW5_BITCOUNT;
        const int32_t j = (int32_t)q - k;
        uint64_t pow5[2];
        computePow5((uint32_t)i, pow5);
        vr = mulShiftAll64(m2, pow5, j, &vp, &vm, mmShift);
        if (q <= 1) {
            vrIsTrailingZeros = true;
            if (acceptBounds)
                vmIsTrailingZeros = mmShift == 1;
            else
                --vp;
        } else if (q < 63) {
            vrIsTrailingZeros = multipleOfPowerOf2(mv, q);
        }
    }
    int32_t removed = 0;
    uint8_t lastRemovedDigit = 0;
    uint64_t output;
    if (vmIsTrailingZeros || vrIsTrailingZeros) {
        for (;;) {
            const uint64_t vpDiv10 = vp / 10;
            const uint64_t vmDiv10 = vm / 10;
            if (vpDiv10 <= vmDiv10)
                break;
            const uint32_t vmMod10 = ((uint32_t)vm) - 10 * ((uint32_t)vmDiv10);
            const uint64_t vrDiv10 = vr / 10;
            const uint32_t vrMod10 = ((uint32_t)vr) - 10 * ((uint32_t)vrDiv10);
            vmIsTrailingZeros &= vmMod10 == 0;
            vrIsTrailingZeros &= lastRemovedDigit == 0;
            lastRemovedDigit = (uint8_t)vrMod10;
            vr = vrDiv10;
            vp = vpDiv10;
            vm = vmDiv10;
            ++removed;
        }
        if (vmIsTrailingZeros) {
            for (;;) {
                const uint64_t vmDiv10 = vm / 10;
                const uint32_t vmMod10 = ((uint32_t)vm) - 10 * ((uint32_t)vmDiv10);
                if (vmMod10 != 0)
                    break;
                const uint64_t vpDiv10 = vp / 10;
                const uint64_t vrDiv10 = vr / 10;
                const uint32_t vrMod10 = ((uint32_t)vr) - 10 * ((uint32_t)vrDiv10);
                vrIsTrailingZeros &= lastRemovedDigit == 0;
                lastRemovedDigit = (uint8_t)vrMod10;
                vr = vrDiv10;
                vp = vpDiv10;
                vm = vmDiv10;
                ++removed;
            }
        }
        if (vrIsTrailingZeros && lastRemovedDigit == 5 && vr % 2 == 0)
            lastRemovedDigit = 4;   /* round even if the exact number is .....50..0 */
        output = vr + ((vr == vm && (!acceptBounds || !vmIsTrailingZeros)) || lastRemovedDigit >= 5);
    } else {
        bool roundUp = false;
        const uint64_t vpDiv100 = vp / 100;
        const uint64_t vmDiv100 = vm / 100;
        if (vpDiv100 > vmDiv100) {
            const uint64_t vrDiv100 = vr / 100;
            const uint32_t vrMod100 = ((uint32_t)vr) - 100 * ((uint32_t)vrDiv100);
            roundUp = vrMod100 >= 50;
            vr = vrDiv100;
            vp = vpDiv100;
            vm = vmDiv100;
            removed += 2;
        }
        for (;;) {
            const uint64_t vpDiv10 = vp / 10;
            const uint64_t vmDiv10 = vm / 10;
            if (vpDiv10 <= vmDiv10)
                break;
            const uint64_t vrDiv10 = vr / 10;
            const uint32_t vrMod10 = ((uint32_t)vr) - 10 * ((uint32_t)vrDiv10);
            roundUp = vrMod10 >= 5;
            vr = vrDiv10;
            vp = vpDiv10;
            vm = vmDiv10;
            ++removed;
        }
        output = vr + (vr == vm || roundUp);
    }
    *out = output;
    *out_exp = e10 + removed;
}

int fc_ryu_shortest(double v, uint64_t *digits, int32_t *exponent)
{
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    const uint64_t ieeeMantissa = bits & ((1ull << DOUBLE_MANTISSA_BITS) - 1);
    const uint32_t ieeeExponent =
        (uint32_t)((bits >> DOUBLE_MANTISSA_BITS) & ((1u << DOUBLE_EXPONENT_BITS) - 1));
    uint64_t m;
    int32_t e;
    /* integers in [1, 2^53): exact, trailing zeros moved into the exponent */
    const int32_t e2 = (int32_t)ieeeExponent - DOUBLE_BIAS - DOUBLE_MANTISSA_BITS;
    const uint64_t m2 = (1ull << DOUBLE_MANTISSA_BITS) | ieeeMantissa;
    if (ieeeExponent != 0 && e2 <= 0 && e2 >= -52 && (m2 & ((1ull << -e2) - 1)) == 0) {
        m = m2 >> -e2;
        e = 0;
    } else {
        d2d(ieeeMantissa, ieeeExponent, &m, &e);
    }
    while (m >= 10 && m % 10 == 0) {   /* (a rounded-up last digit can leave a zero) */
        m /= 10;
        e++;
    }
    *digits = m;
    *exponent = e;
    return decimal_length17(m);
}
