/* c_tasks.c -- the flowcept C capture API in a few lines.
 *
 *   c_tasks [ring-path]
 *
 * Captures a few nested tasks (one with a payload) into a ring, then plays
 * the node leader: reopens the ring as its consumer, packs a batch,
 * validates it and prints what it holds. */
#include "flowcept.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static double work(int n)
{
    double s = 0;
    for (int i = 1; i <= n; i++)
        s += 1.0 / i;
    return s;
}

int main(int argc, char **argv)
{
    const char *path = argc > 1 ? argv[1] : "/tmp/c_tasks.ring";
    unlink(path); /* a leftover from an earlier run */

    int e = fc_capture_init(path, NULL, /*workflow_id=*/0x5EED, /*rank=*/0);
    if (e) {
        fprintf(stderr, "fc_capture_init: %s\n", strerror(-e));
        return 1;
    }
    fc_task_begin("simulation");
    for (int step = 0; step < 3; step++) {
        fc_task_begin("timestep");
        fc_task_begin("solve");
        double r = work(1000 * (step + 1));
        fc_task_end(FC_STATUS_FINISHED, &r, sizeof r); /* opaque payload */
        fc_task_begin("checkpoint");
        fc_task_end(FC_STATUS_FINISHED, NULL, 0);
        fc_task_end(FC_STATUS_FINISHED, NULL, 0);
    }
    fc_task_end(FC_STATUS_FINISHED, NULL, 0);
    fc_capture_finalize(); /* closes the ring (clean end); file stays */

    /* the leader's side */
    fc_ring *ring;
    if ((e = fc_ring_open(path, &ring)) != 0) {
        fprintf(stderr, "fc_ring_open: %s\n", strerror(-e));
        return 1;
    }
    uint64_t cap = 1 << 20, consumed = 0;
    void *buf = malloc(cap);
    int64_t len = fc_ring_pack(ring, buf, cap, 10000, &consumed);
    if (len <= 0 || (e = fc_batch_validate(buf, (uint64_t)len)) != 0) {
        fprintf(stderr, "pack/validate failed: %lld / %d\n", (long long)len, e);
        return 1;
    }
    const fc_batch_header *h = buf;
    const fc_task_record *rec = (const fc_task_record *)((char *)buf + h->records_off);
    for (uint32_t i = 0; i < h->record_count; i++) {
        uint32_t nl = 0;
        const char *name = fc_ring_string(ring, rec[i].activity_id, &nl);
        printf("  task %#llx parent %#llx %-10.*s %8lld ns payload %u B\n",
               (unsigned long long)rec[i].task_id,
               (unsigned long long)rec[i].parent_id, (int)nl, name,
               (long long)(rec[i].end_ns - rec[i].start_ns), rec[i].payload_len);
    }
    printf("records: %u (batch %lld bytes, valid)\n", h->record_count,
           (long long)len);
    fc_ring_release(ring, h->seq + consumed);
    fc_ring_close(ring);
    free(buf);
    unlink(path);
    return 0;
}
