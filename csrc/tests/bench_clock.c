/* bench_clock.c -- what a timestamp costs: clock_gettime on each clock,
 * rdtsc/rdtscp, the record clock (fc__clock_ns), and a C API
 * fc_task_begin/fc_task_end pair.  Machine-dependent numbers: min and
 * median over repeats of the thread's CPU time per call (the pair also in
 * wall time), one line per measurement.
 *   cd csrc && make && gcc -std=c11 -D_GNU_SOURCE -O2 -pthread -I. \
 *       tests/bench_clock.c build/libflowcept.a -o build/bench_clock && \
 *       ./build/bench_clock [pair]
 * With "pair", only the begin/end pair (to alternate with another build). */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define REPS 21
#define N 1000000

static volatile uint64_t sink;

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* the thread's CPU time: on a shared machine, wall time also counts the
 * time others ran */
static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void report(const char *what, double *ns)
{
    qsort(ns, REPS, sizeof ns[0], cmp_d);
    printf("%-34s min %6.1f  median %6.1f ns\n", what, ns[0], ns[REPS / 2]);
}

static void bench_clockid(const char *what, clockid_t id)
{
    double ns[REPS];
    struct timespec ts;
    for (int k = 0; k < REPS; k++) {
        double t0 = cpu_s();
        for (int i = 0; i < N; i++) {
            clock_gettime(id, &ts);
            sink += (uint64_t)ts.tv_nsec;
        }
        ns[k] = (cpu_s() - t0) / N * 1e9;
    }
    report(what, ns);
}

#if FC__CLOCK_HAVE_TSC
static void bench_tsc(int which)
{
    double ns[REPS];
    unsigned aux;
    for (int k = 0; k < REPS; k++) {
        double t0 = cpu_s();
        if (which == 0)
            for (int i = 0; i < N; i++)
                sink += __rdtsc();
        else
            for (int i = 0; i < N; i++)
                sink += __rdtscp(&aux);
        ns[k] = (cpu_s() - t0) / N * 1e9;
    }
    report(which ? "__rdtscp" : "__rdtsc", ns);
}
#endif

#ifdef FC__CLOCK_SHIFT
static void bench_record_clock(void)
{
    static _Thread_local struct fc__clock c;
    double ns[REPS];
    double t_end = mono_s() + 0.03; /* past the calibration baseline */
    while (mono_s() < t_end)
        sink += (uint64_t)fc__clock_ns(&c);
    for (int k = 0; k < REPS; k++) {
        double t0 = cpu_s();
        for (int i = 0; i < N; i++)
            sink += (uint64_t)fc__clock_ns(&c);
        ns[k] = (cpu_s() - t0) / N * 1e9;
    }
    report(fc__clock_uses_tsc() ? "fc__clock_ns (TSC)" : "fc__clock_ns (clock_gettime)", ns);
}
#endif

/* Pairs in rounds that fit the ring (drained between rounds, untimed), so
 * that every pair takes the push path, not the full-ring path. */
static void bench_pair(void)
{
    char dir[] = "/dev/shm/fc_bclock_XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        exit(1);
    }
    char path[128];
    snprintf(path, sizeof path, "%s/capture", dir);
    fc_ring_options o;
    fc_ring_options_init(&o);
    o.capacity = 1u << 25;
    o.full_policy = FC_FULL_DROP;
    if (fc_capture_init(path, &o, 1, 0) != 0) {
        perror("fc_capture_init");
        exit(1);
    }
    fc_ring *c;
    fc_ring_open(path, &c);
    size_t cap = 1u << 22;
    uint8_t *buf = malloc(cap);
    const uint64_t per_round = 100000; /* 8 MB of 80-byte slots */
    double ns[REPS], cpu_ns[REPS];
    double t_end = mono_s() + 0.03;
    while (mono_s() < t_end) {
        fc_task_begin("step");
        fc_task_end(0, NULL, 0);
    }
    for (int k = -1; k < REPS; k++) {
        for (;;) { /* drain */
            uint64_t consumed;
            int64_t n = fc_ring_pack(c, buf, cap, 100000, &consumed);
            if (n <= 0)
                break;
            fc_ring_release(c, ((const fc_batch_header *)buf)->seq + consumed);
        }
        double c0 = cpu_s(), t0 = mono_s();
        for (uint64_t i = 0; i < per_round; i++) {
            fc_task_begin("step");
            fc_task_end(0, NULL, 0);
        }
        double t1 = mono_s(), c1 = cpu_s();
        if (k >= 0) {
            ns[k] = (t1 - t0) / (double)per_round * 1e9;
            cpu_ns[k] = (c1 - c0) / (double)per_round * 1e9;
        }
    }
    fc_ring_stats st;
    fc_ring_get_stats(c, &st);
    report("fc_task_begin + fc_task_end, wall", ns);
    report("fc_task_begin + fc_task_end, CPU", cpu_ns);
    if (st.dropped || st.spilled)
        printf("  (dropped %llu, spilled %llu)\n", (unsigned long long)st.dropped,
               (unsigned long long)st.spilled);
    fc_ring_close(c);
    fc_capture_finalize();
    unlink(path);
    rmdir(dir);
    free(buf);
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "pair") == 0) {
        bench_pair();
        return 0;
    }
    bench_clockid("clock_gettime(CLOCK_REALTIME)", CLOCK_REALTIME);
    bench_clockid("clock_gettime(CLOCK_MONOTONIC)", CLOCK_MONOTONIC);
    bench_clockid("clock_gettime(CLOCK_MONOTONIC_RAW)", CLOCK_MONOTONIC_RAW);
    bench_clockid("clock_gettime(CLOCK_REALTIME_COARSE)", CLOCK_REALTIME_COARSE);
    bench_clockid("clock_gettime(CLOCK_MONOTONIC_COARSE)", CLOCK_MONOTONIC_COARSE);
#if FC__CLOCK_HAVE_TSC
    bench_tsc(0);
    bench_tsc(1);
#endif
#ifdef FC__CLOCK_SHIFT
    bench_record_clock();
#endif
    struct timespec res;
    clock_getres(CLOCK_REALTIME_COARSE, &res);
    printf("(CLOCK_REALTIME_COARSE resolution: %ld ns)\n", res.tv_nsec);
    bench_pair();
    return 0;
}
