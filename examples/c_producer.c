/* A C program captured with flowcept's C API, for mpiexec/srun without any
 * MPI dependency of flowcept: the rank comes from the launcher's environment.
 *
 *   make -C csrc                      # build/libflowcept.a
 *   cc -O2 -Icsrc examples/c_producer.c csrc/build/libflowcept.a -lpthread -o c_producer
 *   flowcept drain myjob --exit-when-idle 2 &       # the node's leader
 *   FLOWCEPT_JOB_ID=myjob mpiexec -n 4 ./c_producer 1000000
 *
 * Each rank runs N "step" tasks, each with a nested "kernel" task carrying a
 * small payload, so records show parent links.  A fixed workflow id per job
 * (argument 2, hex) lets all ranks share one workflow without MPI.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "flowcept.h"

static uint32_t launcher_rank(void)
{
    const char *vars[] = {"FLOWCEPT_RANK", "PMI_RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK",
                          "PMIX_RANK"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *v = getenv(vars[i]);
        if (v && *v)
            return (uint32_t)strtoul(v, NULL, 10);
    }
    return 0;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 1000;
    uint64_t workflow = argc > 2 ? strtoull(argv[2], NULL, 16) : 0x5eed;
    uint32_t rank = launcher_rank();

    fc_ring_options opts;
    fc_ring_options_init(&opts);
    opts.capacity = 16u << 20;              /* 16 MiB per rank */
    int rc = fc_capture_init(NULL, &opts, workflow, rank);
    if (rc < 0) {
        fprintf(stderr, "c_producer: fc_capture_init: %s\n", strerror(-rc));
        return 1;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    double x = 0;
    for (long i = 0; i < n; i++) {
        fc_task_begin("step");
        fc_task_begin("kernel");
        x += (double)i * 0.5;
        /* msgpack {"i": <int32>} : 0x81 0xa1 'i' 0xd2 b3 b2 b1 b0 */
        unsigned char payload[8] = {0x81, 0xa1, 'i', 0xd2,
                                    (unsigned char)(i >> 24), (unsigned char)(i >> 16),
                                    (unsigned char)(i >> 8), (unsigned char)i};
        fc_task_end(FC_STATUS_FINISHED, payload, sizeof payload);
        fc_task_end(FC_STATUS_FINISHED, NULL, 0);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    fc_capture_finalize();
    double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("c_producer: rank %u, %ld records in %.3f s (x=%g)\n", rank, 2 * n, s, x);
    return 0;
}
