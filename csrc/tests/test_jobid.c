/* test_jobid.c -- fc_job_id_of against ids computed with Python's
 * flowcept job_id_of (hashlib.blake2b, digest_size=8), including the
 * numeric rule's edges and names across BLAKE2b's 128-byte blocks.
 * Prints "N passed, M failed". */
#include "flowcept.h"
#include "harness.h"

#include <stdint.h>
#include <string.h>

static void t_vectors(void)
{
    static const struct { const char *name; uint64_t id; } v[] = {
        { "", 0xb4b2797457a0a6e4ull },
        { "abc", 0xd995d533d814bbd8ull },
        { "local-20261201-131800-1234-beef", 0xa3b15c9543c6fcd3ull },
        { "12345", 12345ull },
        { "007", 7ull },
        { "9223372036854775807", 0x7fffffffffffffffull },
        { "9223372036854775808", 0xc26ce80d029a408aull },
        { "99999999999999999999999", 0xc3cdfada41f5010eull },
        { "+5", 0xa6c864d0b7c099b5ull },
        { " 5", 0xe5e94a813c7e07e7ull },
        { "h\xc3\xa9llo", 0xcbaf31c26ed35d13ull },
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        if (fc_job_id_of(v[i].name) != v[i].id)
            fprintf(stderr, "  name \"%s\"\n", v[i].name);
        CHECK(fc_job_id_of(v[i].name) == v[i].id);
    }
    CHECK(fc_job_id_of(NULL) == 0);
}

static void t_block_edges(void)
{
    static const struct { char c; size_t n; uint64_t id; } v[] = {
        { 'x', 127, 0xfc4f7c44afa0708eull },
        { 'x', 128, 0x8224e1e874e31c90ull },
        { 'x', 129, 0xa3a5eed8b914de18ull },
        { 'y', 300, 0xf92b9aeb8a9349ffull },
    };
    char buf[301];
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        memset(buf, v[i].c, v[i].n);
        buf[v[i].n] = '\0';
        CHECK(fc_job_id_of(buf) == v[i].id);
    }
}

int main(void)
{
    static const fc_test tests[] = {
        { "vectors", t_vectors },
        { "block_edges", t_block_edges },
    };
    return FC_RUN_TESTS(tests);
}
