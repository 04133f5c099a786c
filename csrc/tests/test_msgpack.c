/* test_msgpack.c -- msgpack_enc.h against bytes written by msgpack-python
 * (use_bin_type=True): every int form, float64, str/bin length forms,
 * nested maps and arrays, growth past the inline buffer and the limit.
 * Prints "N passed, M failed". */
#include "msgpack_enc.h"
#include "harness.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* hex string -> bytes; returns the length */
static size_t unhex(const char *h, uint8_t *out)
{
    size_t n = 0;
    for (; h[0] && h[1]; h += 2) {
        unsigned v;
        sscanf(h, "%2x", &v);
        out[n++] = (uint8_t)v;
    }
    return n;
}

static int same(const fc_mp_buf *b, const char *hex)
{
    uint8_t want[256];
    size_t n = unhex(hex, want);
    if (b->len != n || memcmp(b->p, want, n) != 0) {
        fprintf(stderr, "  want %s, got", hex);
        for (size_t i = 0; i < b->len && i < 64; i++)
            fprintf(stderr, "%02x", (uint8_t)b->p[i]);
        fprintf(stderr, "\n");
        return 0;
    }
    return 1;
}

static void t_ints(void)
{
    static const struct { int64_t v; const char *hex; } s[] = {
        { 0, "00" }, { 1, "01" }, { 127, "7f" }, { 128, "cc80" },
        { 255, "ccff" }, { 256, "cd0100" }, { 65535, "cdffff" },
        { 65536, "ce00010000" }, { 4294967295LL, "ceffffffff" },
        { 4294967296LL, "cf0000000100000000" },
        { -1, "ff" }, { -32, "e0" }, { -33, "d0df" }, { -128, "d080" },
        { -129, "d1ff7f" }, { -32768, "d18000" }, { -32769, "d2ffff7fff" },
        { -2147483648LL, "d280000000" },
        { -2147483649LL, "d3ffffffff7fffffff" },
        { INT64_MIN, "d38000000000000000" },
    };
    fc_mp_buf b;
    for (size_t i = 0; i < sizeof s / sizeof s[0]; i++) {
        fc_mp_init(&b, 1 << 20);
        CHECK(fc_mp_int(&b, s[i].v));
        CHECK(same(&b, s[i].hex));
        fc_mp_free(&b);
    }
    fc_mp_init(&b, 1 << 20);
    CHECK(fc_mp_uint(&b, UINT64_MAX) && same(&b, "cfffffffffffffffff"));
    fc_mp_free(&b);
}

static void t_floats_nil_bool(void)
{
    fc_mp_buf b;
    fc_mp_init(&b, 1 << 20);
    CHECK(fc_mp_double(&b, 1.5) && same(&b, "cb3ff8000000000000"));
    b.len = 0;
    CHECK(fc_mp_double(&b, -2.25) && same(&b, "cbc002000000000000"));
    b.len = 0;
    CHECK(fc_mp_nil(&b) && fc_mp_bool(&b, 1) && fc_mp_bool(&b, 0) &&
          same(&b, "c0c3c2"));
    fc_mp_free(&b);
}

/* header bytes of a str/bin of length n of byte c, then the bytes */
static void t_str_bin(void)
{
    static const struct { int bin; size_t n; const char *hdr; } s[] = {
        { 0, 0, "a0" }, { 0, 1, "a1" }, { 0, 31, "bf" }, { 0, 32, "d920" },
        { 0, 255, "d9ff" }, { 0, 256, "da0100" }, { 0, 65536, "db00010000" },
        { 1, 0, "c400" }, { 1, 2, "c402" }, { 1, 256, "c50100" },
        { 1, 65536, "c600010000" },
    };
    char *data = malloc(65536);
    CHECK(data);
    memset(data, 'x', 65536);
    for (size_t i = 0; i < sizeof s / sizeof s[0]; i++) {
        fc_mp_buf b;
        fc_mp_init(&b, 1 << 20);
        int ok = s[i].bin ? fc_mp_bin(&b, data, s[i].n)
                          : fc_mp_str(&b, data, s[i].n);
        uint8_t hdr[8];
        size_t hn = unhex(s[i].hdr, hdr);
        int good = ok && b.len == hn + s[i].n &&
                   memcmp(b.p, hdr, hn) == 0 &&
                   (s[i].n == 0 || (b.p[hn] == 'x' && b.p[b.len - 1] == 'x'));
        fc_mp_free(&b);
        if (!good)
            free(data);
        CHECK(good);
    }
    free(data);
}

/* {"used": {"x": 1, "y": [1.5, None, True, False, b"\x01"]},
 *  "generated": {}} as msgpack-python packs it */
static void t_maps(void)
{
    fc_mp_buf b;
    fc_mp_init(&b, 1 << 20);
    CHECK(fc_mp_map_hdr(&b, 2) && fc_mp_str(&b, "used", 4) &&
          fc_mp_map_hdr(&b, 2) && fc_mp_str(&b, "x", 1) && fc_mp_int(&b, 1) &&
          fc_mp_str(&b, "y", 1) && fc_mp_arr_hdr(&b, 5) &&
          fc_mp_double(&b, 1.5) && fc_mp_nil(&b) && fc_mp_bool(&b, 1) &&
          fc_mp_bool(&b, 0) && fc_mp_bin(&b, "\x01", 1) &&
          fc_mp_str(&b, "generated", 9) && fc_mp_map_hdr(&b, 0));
    CHECK(same(&b, "82a47573656482a17801a17995cb3ff8000000000000c0c3c2c401"
                   "01a967656e65726174656480"));
    b.len = 0;
    CHECK(fc_mp_map_hdr(&b, 16) && fc_mp_arr_hdr(&b, 16) &&
          fc_mp_map_hdr(&b, 65536) && same(&b, "de0010dc0010df00010000"));
    fc_mp_free(&b);
}

static void t_growth_and_limit(void)
{
    fc_mp_buf b;
    fc_mp_init(&b, 1 << 20);
    for (int i = 0; i < 1000; i++) /* 9 bytes each: outgrows the inline 1 KiB */
        CHECK(fc_mp_double(&b, (double)i));
    CHECK(b.len == 9000 && b.p != b.inl);
    CHECK((uint8_t)b.p[8991] == 0xcb);
    fc_mp_free(&b);
    CHECK(b.p == b.inl && b.len == 0);
    fc_mp_init(&b, 2000);
    char big[1500];
    memset(big, 'q', sizeof big);
    CHECK(fc_mp_bin(&b, big, 1000));
    CHECK(!fc_mp_bin(&b, big, 1000)); /* would pass the 2000-byte limit */
    CHECK(b.len == 1003);
    fc_mp_free(&b);
}

int main(void)
{
    static const fc_test tests[] = {
        { "ints", t_ints },
        { "floats_nil_bool", t_floats_nil_bool },
        { "str_bin", t_str_bin },
        { "maps", t_maps },
        { "growth_and_limit", t_growth_and_limit },
    };
    return FC_RUN_TESTS(tests);
}
