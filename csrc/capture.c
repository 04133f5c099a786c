/*
 * capture.c -- the C capture API (fc_capture_*, fc_task_*): a thread-local
 * stack of open tasks, pushed to the process's ring on fc_task_end.
 */
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <time.h>

#define FC__STACK_DEPTH 64
#define FC__NAME_CACHE 16
#define FC__ID_BLOCK 64  /* task id counters a thread takes at a time */

struct frame {
    uint64_t task_id;
    uint64_t parent;
    int64_t start_ns;
    uint32_t activity_id;
    uint32_t valid;     /* 0: begin failed (not recorded) */
    uint8_t *name_pfx;  /* FC_ACTIVITY_OVERFLOW: the payload prefix with
                           the name (malloc'd), else NULL */
    uint32_t pfx_len;
};

struct name_ent {
    const char *name;
    uint64_t gen;
    uint32_t id;
};

struct tstate {
    uint64_t gen;       /* capture generation the stack belongs to */
    uint32_t tid_plus1; /* 0 = not assigned yet */
    uint32_t depth;
    uint32_t overflow;  /* begins beyond FC__STACK_DEPTH (not recorded) */
    uint64_t id_next;   /* thread-local block of task id counters */
    uint64_t id_end;
    struct fc__clock clock;
    struct frame st[FC__STACK_DEPTH];
    struct name_ent cache[FC__NAME_CACHE];
};

static _Thread_local struct tstate tls;

/* Global capture state: written by init/attach/finalize (not concurrently
 * with fc_task_*), published through g_ring. */
static _Atomic(struct fc_ring *) g_ring;
static int g_owned;
static uint64_t g_workflow;
static uint32_t g_rank;
static _Atomic uint64_t g_gen;
static _Atomic uint32_t g_thread_counter;
static _Atomic uint64_t g_task_counter;
static _Atomic uint64_t g_origin_bits; /* origin << 40 */
static _Atomic int g_origin_set;

uint64_t fc_task_next_id(void)
{
    uint64_t c = atomic_fetch_add_explicit(&g_task_counter, 1,
                                           memory_order_relaxed) + 1;
    return atomic_load_explicit(&g_origin_bits, memory_order_relaxed) |
           (1ull << 39) | (c & ((1ull << 39) - 1));
}

void fc_task_set_origin(uint32_t origin)
{
    atomic_store_explicit(&g_origin_bits, (uint64_t)(origin & 0xFFFFFFu) << 40,
                          memory_order_relaxed);
    atomic_store_explicit(&g_origin_set, 1, memory_order_relaxed);
}

static int attach(struct fc_ring *r, uint64_t workflow_id, uint32_t rank,
                  int owned)
{
    if (!r)
        return -EINVAL;
    if (atomic_load_explicit(&g_ring, memory_order_acquire))
        return -EALREADY;
    g_owned = owned;
    g_workflow = workflow_id;
    g_rank = rank;
    if (!atomic_load_explicit(&g_origin_set, memory_order_relaxed))
        atomic_store_explicit(&g_origin_bits,
                              (uint64_t)(rank & 0xFFFFFFu) << 40,
                              memory_order_relaxed);
    if (fc__clock_uses_tsc()) /* what the batches of this ring say */
        atomic_fetch_or_explicit(&r->shm->clock_flags, FC_BATCH_FLAG_CLOCK_TSC,
                                 memory_order_relaxed);
    atomic_fetch_add_explicit(&g_gen, 1, memory_order_relaxed);
    atomic_store_explicit(&g_ring, r, memory_order_release);
    return 0;
}

/* mkdir that accepts an existing directory only if it is ours, not a
 * symlink, and private (the same rule as flowcept/osutil.py private_dir). */
static int private_dir(const char *path)
{
    if (mkdir(path, 0700) != 0 && errno != EEXIST)
        return -errno;
    struct stat st;
    if (lstat(path, &st) != 0)
        return -errno;
    if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid())
        return -EPERM;
    if ((st.st_mode & 0077) && chmod(path, 0700) != 0)
        return -errno;
    return 0;
}

static const char *env_or(const char *name, const char *fallback)
{
    const char *v = getenv(name);
    return v && *v ? v : fallback;
}

/* The ring path the Python runtime and the epilog use:
 * <FLOWCEPT_SHM_DIR or /dev/shm>/flowcept-<uid>/<job>/<rank>.<pid>.ring,
 * job = FLOWCEPT_JOB_ID, else SLURM_JOB_ID, else "local-<pid>". */
static int default_ring_path(uint32_t rank, char *out, size_t cap, uint64_t *job_id)
{
    char local[32];
    snprintf(local, sizeof local, "local-%ld", (long)getpid());
    const char *shm = env_or("FLOWCEPT_SHM_DIR", "/dev/shm");
    const char *job = env_or("FLOWCEPT_JOB_ID", env_or("SLURM_JOB_ID", local));
    if (strchr(job, '/') || strcmp(job, ".") == 0 || strcmp(job, "..") == 0)
        return -EINVAL;
    *job_id = fc_job_id_of(job); /* as flowcept/record/job.py job_id_of */
    int n = snprintf(out, cap, "%s/flowcept-%u", shm, (unsigned)geteuid());
    if (n < 0 || (size_t)n >= cap)
        return -ENAMETOOLONG;
    int e = private_dir(out);
    if (e)
        return e;
    n = snprintf(out, cap, "%s/flowcept-%u/%s", shm, (unsigned)geteuid(), job);
    if (n < 0 || (size_t)n >= cap)
        return -ENAMETOOLONG;
    if ((e = private_dir(out)))
        return e;
    n = snprintf(out, cap, "%s/flowcept-%u/%s/%06u.%ld.ring", shm, (unsigned)geteuid(), job,
                 rank, (long)getpid());
    return (n < 0 || (size_t)n >= cap) ? -ENAMETOOLONG : 0;
}

int fc_capture_init(const char *ring_path, const fc_ring_options *opts,
                    uint64_t workflow_id, uint32_t rank)
{
    if (atomic_load_explicit(&g_ring, memory_order_acquire))
        return -EALREADY;
    fc_ring_options o;
    if (opts)
        o = *opts;
    else
        fc_ring_options_init(&o);
    o.rank = rank;
    if (!o.workflow_id)
        o.workflow_id = workflow_id;
    char path[4096];
    if (!ring_path) {
        uint64_t job_id = 0;
        int e = default_ring_path(rank, path, sizeof path, &job_id);
        if (e)
            return e;
        if (!o.job_id)
            o.job_id = job_id;
        ring_path = path;
    }
    fc_ring *r;
    int e = fc_ring_create(ring_path, &o, &r);
    if (e)
        return e;
    /* String 0 names the node (flowcept/record/layout.py NODE_PREFIX), so that the
     * records of a C program say where they ran, like Python's. */
    char host[300] = "host:";
    if (gethostname(host + 5, sizeof host - 6) == 0) {
        host[sizeof host - 1] = '\0';
        char *dot = strchr(host + 5, '.');
        if (dot)
            *dot = '\0';
        fc_ring_intern(r, host, (uint32_t)strlen(host));
    }
    e = attach(r, workflow_id, rank, 1);
    if (e)
        fc_ring_close(r);
    return e;
}

int fc_capture_attach(fc_ring *ring, uint64_t workflow_id, uint32_t rank)
{
    return attach(ring, workflow_id, rank, 0);
}

int fc_capture_finalize(void)
{
    struct fc_ring *r = atomic_exchange_explicit(&g_ring, NULL,
                                                 memory_order_acq_rel);
    atomic_fetch_add_explicit(&g_gen, 1, memory_order_relaxed);
    if (r && g_owned)
        fc_ring_close(r);
    g_owned = 0;
    return 0;
}

static __attribute__((noinline)) void id_refill(struct tstate *t)
{
    t->id_next = atomic_fetch_add_explicit(&g_task_counter, FC__ID_BLOCK,
                                           memory_order_relaxed) + 1;
    t->id_end = t->id_next + FC__ID_BLOCK;
}

static inline uint64_t next_id(struct tstate *t)
{
    if (__builtin_expect(t->id_next == t->id_end, 0))
        id_refill(t);
    uint64_t c = t->id_next++;
    return atomic_load_explicit(&g_origin_bits, memory_order_relaxed) |
           (1ull << 39) | (c & ((1ull << 39) - 1));
}

/* Activity id of `name` in r: interned once per thread and name pointer
 * (cached), FC_ACTIVITY_OVERFLOW when the string table is full. */
static __attribute__((noinline)) int name_id(struct fc_ring *r,
                                             struct tstate *t, uint64_t gen,
                                             const char *name, uint32_t *id)
{
    size_t len = name ? strlen(name) : 0;
    /* FC_NAME_MAX + 4 bytes are enough for fc_ring_intern to cut */
    uint32_t n = (uint32_t)(len > FC_NAME_MAX + 4u ? FC_NAME_MAX + 4u : len);
    int k = fc_ring_intern(r, name ? name : "", n);
    uint32_t v;
    if (k >= 0)
        v = (uint32_t)k;
    else if (k == -ENOSPC)
        v = FC_ACTIVITY_OVERFLOW; /* the table stays full: cache that too */
    else
        return k;
    struct name_ent *e = &t->cache[((uintptr_t)name >> 3) % FC__NAME_CACHE];
    e->name = name;
    e->gen = gen;
    e->id = v;
    *id = v;
    return 0;
}

/* The payload prefix of an overflow task (its name), or NULL. */
static __attribute__((noinline)) uint8_t *name_prefix(const char *name,
                                                      uint32_t *plen)
{
    size_t len = name ? strlen(name) : 0;
    uint32_t n = (uint32_t)(len > FC_NAME_MAX + 4u ? FC_NAME_MAX + 4u : len);
    uint32_t cap = 2u + fc_name_cut(name, n);
    uint8_t *p = malloc(cap);
    if (!p)
        return NULL;
    int w = fc_name_in_payload(name ? name : "", n, p, cap);
    if (w < 0) {
        free(p);
        return NULL;
    }
    *plen = (uint32_t)w;
    return p;
}

/* fc_task_end of an overflow task: [name prefix][payload] in one push. */
static __attribute__((noinline)) int end_overflow(struct fc_ring *r,
        struct tstate *t, struct frame *f, int64_t end, int status,
        const void *payload, uint32_t payload_len)
{
    int res;
    uint64_t total = (uint64_t)f->pfx_len + payload_len;
    uint8_t *buf = total <= UINT32_MAX ? malloc(total ? total : 1) : NULL;
    if (!buf) {
        res = -ENOMEM;
    } else {
        memcpy(buf, f->name_pfx, f->pfx_len);
        if (payload_len)
            memcpy(buf + f->pfx_len, payload, payload_len);
        res = fc_ring_push_task(r, f->task_id, f->parent, g_workflow,
                                f->start_ns, end, g_rank, t->tid_plus1 - 1,
                                FC_ACTIVITY_OVERFLOW, (uint16_t)status,
                                FC_FLAG_C_API | FC_FLAG_NAME_IN_PAYLOAD,
                                (const char *)buf, (uint32_t)total);
        free(buf);
    }
    free(f->name_pfx);
    f->name_pfx = NULL;
    return res;
}

static __attribute__((noinline)) void thread_first(struct tstate *t,
                                                   uint64_t gen)
{
    if (!t->tid_plus1)
        t->tid_plus1 = atomic_fetch_add_explicit(&g_thread_counter, 1,
                                                 memory_order_relaxed) + 1;
    if (t->gen != gen) {
        for (uint32_t i = 0; i < t->depth && i < FC__STACK_DEPTH; i++) {
            free(t->st[i].name_pfx); /* tasks of an earlier capture */
            t->st[i].name_pfx = NULL;
        }
        t->gen = gen;
        t->depth = 0;
        t->overflow = 0;
    }
}

uint64_t fc_task_begin(const char *name)
{
    struct fc_ring *r = atomic_load_explicit(&g_ring, memory_order_acquire);
    if (__builtin_expect(!r, 0))
        return 0;
    struct tstate *t = &tls;
    uint64_t gen = atomic_load_explicit(&g_gen, memory_order_relaxed);
    if (__builtin_expect(t->gen != gen || !t->tid_plus1, 0))
        thread_first(t, gen);
    uint32_t d = t->depth;
    if (__builtin_expect(d >= FC__STACK_DEPTH, 0)) {
        t->overflow++;
        return 0;
    }
    struct frame *f = &t->st[d];
    struct name_ent *e = &t->cache[((uintptr_t)name >> 3) % FC__NAME_CACHE];
    uint32_t id;
    if (__builtin_expect(e->name == name && e->gen == gen, 1)) {
        id = e->id;
    } else if (name_id(r, t, gen, name, &id) != 0) {
        f->valid = 0; /* children attach to the enclosing task */
        f->name_pfx = NULL;
        f->task_id = d ? t->st[d - 1].task_id : 0;
        t->depth = d + 1;
        return 0;
    }
    f->name_pfx = NULL;
    if (__builtin_expect(id == FC_ACTIVITY_OVERFLOW, 0)) {
        f->name_pfx = name_prefix(name, &f->pfx_len);
        if (!f->name_pfx) {
            f->valid = 0;
            f->task_id = d ? t->st[d - 1].task_id : 0;
            t->depth = d + 1;
            return 0;
        }
    }
    f->valid = 1;
    f->activity_id = id;
    f->parent = d ? t->st[d - 1].task_id : 0;
    f->task_id = next_id(t);
    t->depth = d + 1;
    f->start_ns = fc__clock_ns(&t->clock);
    return f->task_id;
}

int fc_task_end(int status, const void *payload, uint32_t payload_len)
{
    struct fc_ring *r = atomic_load_explicit(&g_ring, memory_order_acquire);
    struct tstate *t = &tls;
    int64_t end = fc__clock_ns(&t->clock);
    if (__builtin_expect(!r, 0))
        return -ENOENT;
    uint64_t gen = atomic_load_explicit(&g_gen, memory_order_relaxed);
    if (__builtin_expect(t->gen != gen, 0))
        return -ENOENT; /* tasks begun before a re-init are gone */
    if (__builtin_expect(t->overflow != 0, 0)) {
        t->overflow--;
        return 0; /* its begin returned 0: not recorded */
    }
    uint32_t d = t->depth;
    if (__builtin_expect(d == 0, 0))
        return -ENOENT;
    struct frame *f = &t->st[d - 1];
    t->depth = d - 1;
    if (__builtin_expect(!f->valid, 0))
        return 0;
    if (__builtin_expect(end < f->start_ns, 0))
        end = f->start_ns; /* a realtime step back, or a re-anchor */
    if (__builtin_expect(f->name_pfx != NULL, 0))
        return end_overflow(r, t, f, end, status, payload, payload_len);
    return fc_ring_push_task(r, f->task_id, f->parent, g_workflow, f->start_ns,
                             end, g_rank, t->tid_plus1 - 1, f->activity_id,
                             (uint16_t)status, FC_FLAG_C_API,
                             (const char *)payload, payload_len);
}
