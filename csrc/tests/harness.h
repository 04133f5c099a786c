/*
 * harness.h -- the C tests' harness: CHECK macros and a runner that prints
 * one line per test and "N passed, M failed" (what tests/native/
 * test_c_suite.py looks for).  Header-only; one test program per file.
 *
 *   CHECK(c)   on failure: report file:line and return from the test
 *   CHECKX(c)  on failure in a forked child or thread: report and _exit(1)
 *   SKIP(why)  end the test as skipped (counts as passed, says why)
 */
#ifndef FC_TEST_HARNESS_H
#define FC_TEST_HARNESS_H

#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static int g_fail_checks;

#define CHECK(c) do { if (!(c)) { fprintf(stderr, "%s:%d: CHECK failed: %s\n", \
    __FILE__, __LINE__, #c); g_fail_checks++; return; } } while (0)
#define CHECKX(c) do { if (!(c)) { fprintf(stderr, "%s:%d: CHECK failed: %s\n", \
    __FILE__, __LINE__, #c); _exit(1); } } while (0)
#define SKIP(why) do { fprintf(stderr, "  skip: %s\n", why); return; } while (0)

typedef struct fc_test {
    const char *name;
    void (*fn)(void);
} fc_test;

/* Runs the tests in order; returns the exit status for main. */
static inline int fc_run_tests(const fc_test *tests, size_t n)
{
    int passed = 0, failed = 0;
    for (size_t i = 0; i < n; i++) {
        int before = g_fail_checks;
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        tests[i].fn();
        clock_gettime(CLOCK_MONOTONIC, &b);
        double ms = (double)(b.tv_sec - a.tv_sec) * 1e3 +
                    (double)(b.tv_nsec - a.tv_nsec) / 1e6;
        if (g_fail_checks == before) {
            passed++;
            fprintf(stderr, "  ok   %-24s %8.1f ms\n", tests[i].name, ms);
        } else {
            failed++;
            fprintf(stderr, "  FAIL %s\n", tests[i].name);
        }
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}

#define FC_RUN_TESTS(arr) fc_run_tests((arr), sizeof(arr) / sizeof((arr)[0]))

#endif /* FC_TEST_HARNESS_H */
