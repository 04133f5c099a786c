/* bench_ring.c -- throughput of push + pack/release, and C API begin/end.
 * 64-byte records with 0 and 16-byte payloads.  Machine-dependent numbers;
 * prints one line per measurement. */
#include "flowcept.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static char g_dir[] = "/dev/shm/fc_bench_XXXXXX";
static int g_seq;

static fc_ring *mk(uint64_t cap, char *path)
{
    sprintf(path, "%s/r%d", g_dir, g_seq++);
    fc_ring_options o;
    fc_ring_options_init(&o);
    o.capacity = cap;
    o.full_policy = FC_FULL_BLOCK;
    o.block_timeout_ns = 10ll * 1000000000;
    fc_ring *r;
    if (fc_ring_create(path, &o, &r) != 0) {
        perror("create");
        exit(1);
    }
    fc_ring_intern(r, "bench", 5);
    return r;
}

#define BUFCAP (1u << 20)

static uint64_t drain(fc_ring *r, uint8_t *buf)
{
    uint64_t consumed;
    int64_t n = fc_ring_pack(r, buf, BUFCAP, 100000, &consumed);
    if (n <= 0)
        return 0;
    const fc_batch_header *h = (const fc_batch_header *)buf;
    fc_ring_release(r, h->seq + consumed);
    return h->record_count;
}

/* one thread: push in chunks, pack+release */
static double bench_same_thread(uint32_t plen, uint64_t N)
{
    char path[256];
    fc_ring *r = mk(1 << 22, path);
    uint8_t *buf = malloc(BUFCAP);
    char pl[16] = "0123456789abcdef";
    uint64_t got = 0;
    double t0 = now_s();
    for (uint64_t i = 0; i < N; i++) {
        fc_ring_push_task(r, i, 0, 1, 2, 3, 0, 0, 0, 0, 0, pl, plen);
        if ((i & 4095) == 4095)
            got += drain(r, buf);
    }
    while (got < N)
        got += drain(r, buf);
    double dt = now_s() - t0;
    fc_ring_close(r);
    unlink(path);
    free(buf);
    return (double)N / dt / 1e6;
}

struct parg {
    fc_ring *r;
    uint32_t plen;
    uint64_t n;
};
static void *producer(void *p)
{
    struct parg *a = p;
    char pl[16] = "0123456789abcdef";
    for (uint64_t i = 0; i < a->n; i++)
        fc_ring_push_task(a->r, i, 0, 1, 2, 3, 0, 0, 0, 0, 0, pl, a->plen);
    return NULL;
}

/* nprod producer threads, the calling thread consumes */
static double bench_threads(int nprod, uint32_t plen, uint64_t N)
{
    char path[256];
    fc_ring *r = mk(1 << 22, path);
    uint8_t *buf = malloc(BUFCAP);
    pthread_t th[8];
    struct parg a = { r, plen, N / (uint64_t)nprod };
    double t0 = now_s();
    for (int i = 0; i < nprod; i++)
        pthread_create(&th[i], NULL, producer, &a);
    uint64_t got = 0, total = a.n * (uint64_t)nprod;
    while (got < total) {
        /* like a leader: drain, and nap while little is there (spinning on
         * a nearly empty ring only bounces cache lines between cores) */
        uint64_t k = drain(r, buf);
        if (k < 2048) {
            struct timespec ts = { 0, 50000 };
            nanosleep(&ts, NULL);
        }
        got += k;
    }
    double dt = now_s() - t0;
    for (int i = 0; i < nprod; i++)
        pthread_join(th[i], NULL);
    fc_ring_stats st;
    fc_ring_get_stats(r, &st);
    if (st.dropped)
        printf("  (dropped %llu)\n", (unsigned long long)st.dropped);
    fc_ring_close(r);
    unlink(path);
    free(buf);
    return (double)total / dt / 1e6;
}

static double bench_begin_end(uint64_t N)
{
    char path[256];
    sprintf(path, "%s/capture", g_dir);
    fc_ring_options o;
    fc_ring_options_init(&o);
    o.capacity = 1 << 24;
    o.full_policy = FC_FULL_DROP;
    fc_capture_init(path, &o, 1, 0);
    fc_ring *c;
    fc_ring_open(path, &c);
    uint8_t *buf = malloc(BUFCAP);
    double best = 1e9;
    for (int rep = 0; rep < 5; rep++) {
        double t0 = now_s();
        for (uint64_t i = 0; i < N; i++) {
            fc_task_begin("step");
            fc_task_end(0, NULL, 0);
        }
        double dt = now_s() - t0;
        if (dt / (double)N * 1e9 < best)
            best = dt / (double)N * 1e9;
        while (drain(c, buf))
            ;
    }
    fc_ring_close(c);
    fc_capture_finalize();
    unlink(path);
    free(buf);
    return best;
}

int main(void)
{
    if (!mkdtemp(g_dir)) {
        strcpy(g_dir, "/tmp/fc_bench_XXXXXX");
        if (!mkdtemp(g_dir))
            return 1;
    }
    /* best of 3: the machine is shared, the best run is the least
     * disturbed one */
    const uint64_t N = 10000000;
    for (int k = 0; k < 2; k++) {
        uint32_t plen = k ? 16 : 0;
        double a = 0, b = 0, c = 0;
        for (int rep = 0; rep < 3; rep++) {
            double x = bench_same_thread(plen, N);
            double y = bench_threads(1, plen, N);
            double z = bench_threads(2, plen, N);
            a = x > a ? x : a;
            b = y > b ? y : b;
            c = z > c ? z : c;
        }
        printf("push+pack 1 producer, same thread, payload %2u B: %.1f M records/s\n",
               plen, a);
        printf("push+pack 1 producer + consumer thread, payload %2u B: %.1f M records/s\n",
               plen, b);
        printf("2 producers + consumer thread, payload %2u B: %.1f M records/s\n",
               plen, c);
    }
    printf("begin/end pair: %.1f ns\n", bench_begin_end(5000000));
    struct timespec ts;
    double best = 1e9;
    for (int rep = 0; rep < 5; rep++) {
        double t0 = now_s();
        for (int i = 0; i < 2000000; i++)
            clock_gettime(CLOCK_REALTIME, &ts);
        double x = (now_s() - t0) / 2e6 * 1e9;
        best = x < best ? x : best;
    }
    printf("(clock_gettime(CLOCK_REALTIME): %.1f ns; a begin/end pair makes 2)\n", best);
    rmdir(g_dir);
    return 0;
}
