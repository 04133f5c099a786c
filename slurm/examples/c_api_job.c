/*
 * c_api_job.c -- a C (MPI or not) code captured with flowcept's C API under SLURM, with no
 * Python in the job: each task writes its records into its own ring in node-local shared
 * memory, at the place the epilog looks (<FLOWCEPT_SHM_DIR>/flowcept-<uid>/<SLURM_JOB_ID>/),
 * and the flowcept epilog drains every ring into the job's store after the job -- also when
 * the job was killed (committed records survive in the ring).
 *
 *   gcc -O2 -I csrc slurm/examples/c_api_job.c csrc/build/libflowcept.a -pthread -o c_api_job
 *   srun -n 4 ./c_api_job 1000          (see c_api.sbatch)
 *
 * Tasks: per process one "c_solve" task with N "c_step" children.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "flowcept.h"

static int mkdir_private(const char *path)
{
    if (mkdir(path, 0700) == 0 || errno == EEXIST)
        return 0;
    perror(path);
    return -1;
}

int main(int argc, char **argv)
{
    long steps = argc > 1 ? atol(argv[1]) : 1000;
    const char *shm = getenv("FLOWCEPT_SHM_DIR");
    const char *job = getenv("SLURM_JOB_ID");
    const char *procid = getenv("SLURM_PROCID");
    unsigned rank = procid ? (unsigned)atoi(procid) : 0;
    char dir[512], path[600];
    if (!shm || !*shm)
        shm = "/dev/shm";
    if (!job) {
        fprintf(stderr, "c_api_job: SLURM_JOB_ID is not set (run me under srun)\n");
        return 2;
    }
    /* <shm>/flowcept-<uid>/<job>/<rank>.<pid>.ring, every directory 0700 */
    snprintf(dir, sizeof dir, "%s/flowcept-%u", shm, (unsigned)geteuid());
    if (mkdir_private(dir))
        return 1;
    snprintf(dir, sizeof dir, "%s/flowcept-%u/%s", shm, (unsigned)geteuid(), job);
    if (mkdir_private(dir))
        return 1;
    snprintf(path, sizeof path, "%s/%06u.%ld.ring", dir, rank, (long)getpid());

    fc_ring_options opts;
    fc_ring_options_init(&opts);
    opts.job_id = strtoull(job, NULL, 10);  /* numeric SLURM ids: the batch ids' job part */
    opts.rank = rank;
    uint64_t workflow_id = opts.job_id ? opts.job_id : 1;
    int rc = fc_capture_init(path, &opts, workflow_id, rank);
    if (rc < 0) {
        fprintf(stderr, "c_api_job: fc_capture_init(%s): %s\n", path, strerror(-rc));
        return 1;
    }
    fc_task_set_origin(rank);

    double x = 1.0;
    fc_task_begin("c_solve");
    for (long i = 0; i < steps; i++) {
        fc_task_begin("c_step");
        x = x * 0.999 + 1e-3;
        fc_task_end(FC_STATUS_FINISHED, NULL, 0);
    }
    fc_task_end(FC_STATUS_FINISHED, NULL, 0);
    fc_capture_finalize();  /* closes the ring: the epilog may drain it */
    printf("c_api_job: rank %u, %ld steps, x=%.6f, ring %s\n", rank, steps, x, path);
    return 0;
}
