/*
 * ring.c -- the shared-memory MPSC ring: create/open/close, string table,
 * push (lock-free fast path, spill/block/drop slow paths), stats, release.
 * File layout: fc_format.h.  The spill policy's writer is spill.c.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define FC_LIKELY(x) __builtin_expect(!!(x), 1)
#define FC_UNLIKELY(x) __builtin_expect(!!(x), 0)

/* ------------------------------------------------------------------ */
/* Versions, layout, time                                              */
/* ------------------------------------------------------------------ */

uint32_t fc_version(void)
{
    return (uint32_t)FC_ABI_VERSION * 65536u + (uint32_t)FC_FORMAT_VERSION;
}

int fc_layout_describe(fc_field_desc *out, int cap)
{
#define FC_F(n, k) { #n, k, (uint8_t)sizeof(((fc_task_record *)0)->n), \
                     (uint16_t)offsetof(fc_task_record, n) }
    static const fc_field_desc fields[] = {
        FC_F(task_id, 'u'),     FC_F(parent_id, 'u'),  FC_F(workflow_id, 'u'),
        FC_F(start_ns, 'i'),    FC_F(end_ns, 'i'),     FC_F(rank, 'u'),
        FC_F(thread_id, 'u'),   FC_F(activity_id, 'u'), FC_F(payload_len, 'u'),
        FC_F(payload_off, 'u'), FC_F(status, 'u'),     FC_F(flags, 'u'),
    };
#undef FC_F
    int n = (int)(sizeof fields / sizeof fields[0]);
    for (int i = 0; out && i < n && i < cap; i++)
        out[i] = fields[i];
    return n;
}

int64_t fc_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ------------------------------------------------------------------ */
/* Options, create, open, close                                        */
/* ------------------------------------------------------------------ */

void fc_ring_options_init(fc_ring_options *opts)
{
    if (!opts)
        return;
    memset(opts, 0, sizeof *opts);
    opts->capacity = 1u << 20;
    opts->max_strings = 4096;
    opts->strings_bytes = 256u * 1024u;
    opts->full_policy = FC_FULL_SPILL;
    opts->block_timeout_ns = 100000000; /* 100 ms */
    opts->spill_path = NULL;
}

static uint64_t random_u64(void)
{
    uint64_t v = 0;
    ssize_t n = getrandom(&v, sizeof v, 0);
    if (n != (ssize_t)sizeof v) {
        int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            n = read(fd, &v, sizeof v);
            close(fd);
        }
        if (n != (ssize_t)sizeof v)
            v = (uint64_t)mono_ns() * 0x9E3779B97F4A7C15ull ^
                (uint64_t)getpid() << 32 ^ (uint64_t)(uintptr_t)&v;
    }
    return v;
}

static uint64_t strings_area(uint32_t max_strings, uint32_t strings_bytes)
{
    uint64_t s = (uint64_t)max_strings * 4u + strings_bytes;
    return (s + FC__PAGE - 1) & ~(uint64_t)(FC__PAGE - 1);
}

static struct fc_ring *handle_new(void *map, size_t len, int producer)
{
    struct fc_ring *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    struct fc_ring_shm *h = map;
    r->shm = h;
    r->map_len = len;
    r->data = (uint8_t *)map + h->data_off;
    r->str_offs = (uint32_t *)((uint8_t *)map + h->strings_off);
    r->str_bytes = (uint8_t *)r->str_offs + (size_t)h->max_strings * 4u;
    r->cap = h->capacity;
    r->mask = h->capacity - 1;
    r->key = h->stamp_key;
    r->is_producer = producer;
    r->full_policy = h->full_policy;
    r->block_timeout_ns = h->block_timeout_ns;
    r->spill_fd = -1;
    pthread_mutex_init(&r->spill_mu, NULL);
    memcpy(r->spill_path, h->spill_path, FC_SPILL_PATH_MAX);
    r->spill_path[FC_SPILL_PATH_MAX - 1] = 0;
    return r;
}

int fc_ring_create(const char *path, const fc_ring_options *opts, fc_ring **out)
{
    fc_ring_options def;
    if (!path || !out)
        return -EINVAL;
    *out = NULL;
    if (!opts) {
        fc_ring_options_init(&def);
        opts = &def;
    }
    uint64_t cap = opts->capacity;
    if (cap < 4096 || (cap & (cap - 1)) || cap > FC__MAX_CAPACITY)
        return -EINVAL;
    if (opts->max_strings == 0 || opts->max_strings > (1u << 24) ||
        opts->strings_bytes < 2 || opts->strings_bytes > (1u << 30))
        return -EINVAL;
    if (opts->full_policy < FC_FULL_SPILL || opts->full_policy > FC_FULL_DROP ||
        opts->block_timeout_ns < 0)
        return -EINVAL;
    char spill[FC_SPILL_PATH_MAX];
    int sl = opts->spill_path
                 ? snprintf(spill, sizeof spill, "%s", opts->spill_path)
                 : snprintf(spill, sizeof spill, "%s.spill", path);
    if (sl < 0 || (size_t)sl >= sizeof spill)
        return -ENAMETOOLONG;

    uint64_t strings_off = FC_RING_HEADER_SIZE;
    uint64_t data_off = strings_off + strings_area(opts->max_strings,
                                                   opts->strings_bytes);
    uint64_t size = data_off + cap;

    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                  0600);
    if (fd < 0)
        return -errno;
    int err = 0;
    void *map = MAP_FAILED;
    /* allocate the blocks now: on a full tmpfs a sparse file would SIGBUS
     * at the first touch of a missing page instead */
    err = posix_fallocate(fd, 0, (off_t)size);
    if (err == EINVAL || err == EOPNOTSUPP) {
        /* a file system without fallocate: size it, then touch each page */
        err = ftruncate(fd, (off_t)size) != 0 ? errno : 0;
        for (off_t o = 0; !err && o < (off_t)size; o += FC_RING_PAGE)
            if (pwrite(fd, "", 1, o) != 1)
                err = errno ? errno : EIO;
    }
    if (err != 0) {
        err = -err;
        goto fail;
    }
    map = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) {
        err = -errno;
        goto fail;
    }
    close(fd);
    fd = -1;

    struct fc_ring_shm *h = map;
    h->format_version = FC_FORMAT_VERSION;
    h->header_size = FC_RING_HEADER_SIZE;
    h->capacity = cap;
    h->max_strings = opts->max_strings;
    h->strings_bytes = opts->strings_bytes;
    h->strings_off = strings_off;
    h->data_off = data_off;
    h->file_size = size;
    h->job_id = opts->job_id;
    h->workflow_id = opts->workflow_id;
    h->ring_uid = random_u64();
    do {
        h->stamp_key = random_u64();
    } while (h->stamp_key == 0);
    h->rank = opts->rank;
    h->producer_pid = (int32_t)getpid();
    h->full_policy = opts->full_policy;
    h->block_timeout_ns = opts->block_timeout_ns;
    memcpy(h->spill_path, spill, (size_t)sl + 1);
    atomic_store_explicit(&h->closed, 0, memory_order_relaxed);
    atomic_store_explicit(&h->head, 0, memory_order_relaxed);
    atomic_store_explicit(&h->tail, 0, memory_order_relaxed);
    atomic_store_explicit(&h->pending_end, 0, memory_order_relaxed);
    atomic_store_explicit(&h->string_count, 0, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    memcpy(h->magic, FC_RING_MAGIC, 8);

    struct fc_ring *r = handle_new(map, (size_t)size, 1);
    if (!r) {
        err = -ENOMEM;
        goto fail;
    }
    *out = r;
    return 0;
fail:
    if (map != MAP_FAILED)
        munmap(map, (size_t)size);
    if (fd >= 0)
        close(fd);
    unlink(path);
    return err;
}

int fc_ring_open(const char *path, fc_ring **out)
{
    if (!path || !out)
        return -EINVAL;
    *out = NULL;
    int fd = open(path, O_RDWR | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return -errno;
    struct stat st;
    int err = 0;
    void *map = MAP_FAILED;
    size_t len = 0;
    if (fstat(fd, &st) != 0) {
        err = -errno;
        goto out;
    }
    if (!S_ISREG(st.st_mode) || st.st_uid != geteuid()) {
        err = -EPERM;
        goto out;
    }
    if ((uint64_t)st.st_size < FC_RING_HEADER_SIZE + FC__PAGE + 4096u) {
        err = -EBADMSG;
        goto out;
    }
    len = (size_t)st.st_size;
    map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) {
        err = -errno;
        goto out;
    }
    const struct fc_ring_shm *h = map;
    if (memcmp(h->magic, FC_RING_MAGIC, 8) != 0) {
        /* "FCRING" with other version digits: a ring of another format
         * (never openable); anything else: not (yet) a ring */
        err = memcmp(h->magic, FC_RING_MAGIC, FC_RING_MAGIC_PREFIX_LEN) == 0
                  ? -EPROTO : -EBADMSG;
        goto out;
    }
    atomic_thread_fence(memory_order_acquire);
    if (h->format_version != FC_FORMAT_VERSION) {
        err = -EPROTO;
        goto out;
    }
    uint64_t cap = h->capacity;
    if (h->header_size != FC_RING_HEADER_SIZE || cap < 4096 || (cap & (cap - 1)) ||
        cap > FC__MAX_CAPACITY || h->max_strings == 0 ||
        h->max_strings > (1u << 24) || h->strings_bytes < 2 ||
        h->strings_bytes > (1u << 30) || h->strings_off != FC_RING_HEADER_SIZE ||
        h->data_off != FC_RING_HEADER_SIZE + strings_area(h->max_strings,
                                                   h->strings_bytes) ||
        h->file_size != h->data_off + cap || h->file_size != (uint64_t)len ||
        h->full_policy < FC_FULL_SPILL || h->full_policy > FC_FULL_DROP ||
        memchr(h->spill_path, 0, FC_SPILL_PATH_MAX) == NULL) {
        err = -EBADMSG;
        goto out;
    }
    struct fc_ring *r = handle_new(map, len, 0);
    if (!r) {
        err = -ENOMEM;
        goto out;
    }
    *out = r;
    map = MAP_FAILED;
out:
    if (map != MAP_FAILED)
        munmap(map, len);
    close(fd);
    return err;
}

void fc_ring_close(fc_ring *r)
{
    if (!r)
        return;
    if (r->is_producer)
        atomic_store_explicit(&r->shm->closed, 1, memory_order_release);
    if (r->spill_fd >= 0)
        close(r->spill_fd);
    pthread_mutex_destroy(&r->spill_mu);
    munmap(r->shm, r->map_len);
    free(r);
}

/* ------------------------------------------------------------------ */
/* String table                                                        */
/* ------------------------------------------------------------------ */

uint32_t fc_name_cut(const char *name, uint32_t len)
{
    if (!name || len <= FC_NAME_MAX)
        return name ? len : 0;
    /* cut before the character that straddles FC_NAME_MAX: back off over
     * at most 3 continuation bytes (10xxxxxx) at the cut */
    const unsigned char *s = (const unsigned char *)name;
    uint32_t cut = FC_NAME_MAX;
    for (int k = 0; k < 3 && cut > 0 && (s[cut] & 0xC0) == 0x80; k++)
        cut--;
    if ((s[cut] & 0xC0) == 0x80)
        cut = FC_NAME_MAX; /* not UTF-8 there: cut at the cap */
    return cut;
}

int fc_name_in_payload(const char *name, uint32_t len, void *out,
                       uint32_t cap)
{
    if ((!name && len) || !out)
        return -EINVAL;
    uint32_t n = fc_name_cut(name, len);
    if (cap < 2u + n)
        return -ENOBUFS;
    uint8_t *o = out;
    o[0] = (uint8_t)(n & 0xff); /* little-endian u16 */
    o[1] = (uint8_t)(n >> 8);
    if (n)
        memcpy(o + 2, name, n);
    return (int)(2u + n);
}

static void str_lock(struct fc_ring_shm *h)
{
    unsigned spins = 0;
    for (;;) {
        uint32_t z = 0;
        if (atomic_compare_exchange_weak_explicit(&h->str_lock, &z, 1,
                memory_order_acquire, memory_order_relaxed))
            return;
        if (++spins > 64)
            sched_yield();
    }
}

static void str_unlock(struct fc_ring_shm *h)
{
    atomic_store_explicit(&h->str_lock, 0, memory_order_release);
}

int fc_ring_intern(fc_ring *r, const char *name, uint32_t len)
{
    if (!r || (!name && len))
        return -EINVAL;
    len = fc_name_cut(name, len);
    struct fc_ring_shm *h = r->shm;
    str_lock(h);
    uint32_t n = atomic_load_explicit(&h->string_count, memory_order_relaxed);
    if (n > h->max_strings)
        n = h->max_strings; /* corrupt; be safe */
    for (uint32_t i = 0; i < n; i++) {
        uint32_t l;
        const uint8_t *s = fc__string_at(r, i, &l);
        if (s && l == len && (len == 0 || memcmp(s, name, len) == 0)) {
            str_unlock(h);
            return (int)i;
        }
    }
    uint32_t used = h->strings_used;
    if (n >= h->max_strings || used > h->strings_bytes ||
        h->strings_bytes - used < 2u + len) {
        str_unlock(h);
        return -ENOSPC;
    }
    uint16_t l16 = (uint16_t)len;
    memcpy(r->str_bytes + used, &l16, 2);
    if (len)
        memcpy(r->str_bytes + used + 2, name, len);
    r->str_offs[n] = used;
    h->strings_used = used + 2u + len;
    atomic_store_explicit(&h->string_count, n + 1, memory_order_release);
    str_unlock(h);
    return (int)n;
}

uint32_t fc_ring_string_count(const fc_ring *r)
{
    return r ? fc__string_count(r) : 0;
}

const char *fc_ring_string(const fc_ring *r, uint32_t id, uint32_t *len)
{
    if (!r || id >= fc_ring_string_count(r))
        return NULL;
    uint32_t l = 0;
    const uint8_t *s = fc__string_at(r, id, &l);
    if (!s)
        return NULL;
    if (len)
        *len = l;
    return (const char *)s;
}

/* ------------------------------------------------------------------ */
/* Push                                                                */
/* ------------------------------------------------------------------ */

/* Reserve `need` bytes (slot header + body, 8-aligned).  Returns the slot
 * pointer or NULL when full (per the non-blocking check). */
static inline fc_ring_slot *reserve(struct fc_ring *r, uint64_t need,
                                uint64_t *pos)
{
    struct fc_ring_shm *h = r->shm;
    uint64_t cap = r->cap;
    uint64_t hd = atomic_load_explicit(&h->head, memory_order_relaxed);
    for (;;) {
        uint64_t off = hd & r->mask, rem = cap - off;
        uint64_t total = FC_LIKELY(need <= rem) ? need : rem + need;
        uint64_t t = atomic_load_explicit(&h->tail, memory_order_acquire);
        if (FC_UNLIKELY(hd + total - t > cap))
            return NULL;
        if (FC_LIKELY(atomic_compare_exchange_weak_explicit(
                &h->head, &hd, hd + total, memory_order_relaxed,
                memory_order_relaxed))) {
            if (FC_UNLIKELY(total != need)) {
                fc_ring_slot *pad = (fc_ring_slot *)(r->data + off);
                if (rem >= FC_RING_SLOT_HDR) {
                    pad->len = (uint32_t)(rem - FC_RING_SLOT_HDR);
                    pad->type = FC_RING_SLOT_PAD;
                }
                atomic_store_explicit(&pad->stamp, fc__stamp(r, hd),
                                      memory_order_release);
                hd += rem;
            }
            *pos = hd;
            return (fc_ring_slot *)(r->data + (hd & r->mask));
        }
    }
}

static inline void commit(struct fc_ring *r, fc_ring_slot *s, uint64_t pos)
{
    atomic_store_explicit(&s->stamp, fc__stamp(r, pos), memory_order_release);
    atomic_fetch_add_explicit(&r->shm->pushed, 1, memory_order_relaxed);
}

/* Ring full (or record too large): apply the full policy. */
static __attribute__((noinline)) int push_slow(struct fc_ring *r,
        const fc_task_record *rec, const void *payload, uint32_t plen,
        int too_big)
{
    switch (r->full_policy) {
    case FC_FULL_SPILL:
        return fc__spill_append(r, rec, payload, plen);
    case FC_FULL_BLOCK:
        if (!too_big) {
            uint64_t need = FC_RING_SLOT_HDR + FC_RECORD_SIZE + FC__ALIGN8(plen);
            int64_t deadline = mono_ns() + r->block_timeout_ns;
            unsigned spins = 0;
            for (;;) {
                uint64_t pos;
                fc_ring_slot *s = reserve(r, need, &pos);
                if (s) {
                    s->len = (uint32_t)(FC_RECORD_SIZE + plen);
                    s->type = FC_RING_SLOT_RECORD;
                    fc_task_record *d = (fc_task_record *)(s + 1);
                    *d = *rec;
                    d->payload_off = 0;
                    if (plen)
                        memcpy(d + 1, payload, plen);
                    commit(r, s, pos);
                    return 0;
                }
                if (++spins < 32) {
                    sched_yield();
                } else {
                    if (mono_ns() >= deadline)
                        break;
                    struct timespec ts = { 0, 20000 }; /* 20 us */
                    nanosleep(&ts, NULL);
                }
            }
            atomic_fetch_add_explicit(&r->shm->dropped, 1,
                                      memory_order_relaxed);
            return -ETIMEDOUT;
        }
        /* a record that can never fit: dropped at once */
        /* fall through */
    default:
        atomic_fetch_add_explicit(&r->shm->dropped, 1, memory_order_relaxed);
        return -ENOSPC;
    }
}

static inline int check_push(const struct fc_ring *r, uint32_t activity_id,
                             uint16_t flags, const void *payload,
                             uint32_t plen)
{
    if (FC_UNLIKELY(!r || (plen && !payload) || plen > FC__MAX_PAYLOAD))
        return -EINVAL;
    if (FC_UNLIKELY(activity_id >= atomic_load_explicit(
            &r->shm->string_count, memory_order_relaxed)))
        return activity_id == FC_ACTIVITY_OVERFLOW &&
                       fc__name_prefix_ok(flags, payload, plen)
                   ? 0 : -EINVAL;
    return 0;
}

int fc_ring_push(fc_ring *r, const fc_task_record *rec, const void *payload,
                 uint32_t plen)
{
    if (FC_UNLIKELY(!rec || rec->payload_len != plen))
        return -EINVAL;
    int e = check_push(r, rec->activity_id, rec->flags, payload, plen);
    if (FC_UNLIKELY(e))
        return e;
    uint64_t need = FC_RING_SLOT_HDR + FC_RECORD_SIZE + FC__ALIGN8(plen);
    if (FC_UNLIKELY(need > r->cap / 2))
        return push_slow(r, rec, payload, plen, 1);
    uint64_t pos;
    fc_ring_slot *s = reserve(r, need, &pos);
    if (FC_UNLIKELY(!s))
        return push_slow(r, rec, payload, plen, 0);
    s->len = (uint32_t)(FC_RECORD_SIZE + plen);
    s->type = FC_RING_SLOT_RECORD;
    fc_task_record *d = (fc_task_record *)(s + 1);
    memcpy(d, rec, sizeof *d);
    d->payload_off = 0;
    if (plen)
        memcpy(d + 1, payload, plen);
    commit(r, s, pos);
    return 0;
}

int fc_ring_push_task(fc_ring *r, uint64_t task_id, uint64_t parent_id,
                      uint64_t workflow_id, int64_t start_ns, int64_t end_ns,
                      uint32_t rank, uint32_t thread_id, uint32_t activity_id,
                      uint16_t status, uint16_t flags,
                      const char *payload, uint32_t plen)
{
    int e = check_push(r, activity_id, flags, payload, plen);
    if (FC_UNLIKELY(e))
        return e;
    uint64_t need = FC_RING_SLOT_HDR + FC_RECORD_SIZE + FC__ALIGN8(plen);
    uint64_t pos;
    fc_ring_slot *s = FC_LIKELY(need <= r->cap / 2) ? reserve(r, need, &pos)
                                                : NULL;
    fc_task_record tmp, *d = s ? (fc_task_record *)(s + 1) : &tmp;
    d->task_id = task_id;
    d->parent_id = parent_id;
    d->workflow_id = workflow_id;
    d->start_ns = start_ns;
    d->end_ns = end_ns;
    d->rank = rank;
    d->thread_id = thread_id;
    d->activity_id = activity_id;
    d->payload_len = plen;
    d->payload_off = 0;
    d->status = status;
    d->flags = flags;
    if (FC_UNLIKELY(!s))
        return push_slow(r, &tmp, payload, plen, need > r->cap / 2);
    s->len = (uint32_t)(FC_RECORD_SIZE + plen);
    s->type = FC_RING_SLOT_RECORD;
    if (plen)
        memcpy(d + 1, payload, plen);
    commit(r, s, pos);
    return 0;
}

/* ------------------------------------------------------------------ */
/* Stats, spill path, release                                          */
/* ------------------------------------------------------------------ */

void fc_ring_get_stats(const fc_ring *r, fc_ring_stats *o)
{
    if (!r || !o)
        return;
    const struct fc_ring_shm *h = r->shm;
    memset(o, 0, sizeof *o);
    o->capacity = h->capacity;
    o->head = atomic_load_explicit(&h->head, memory_order_relaxed);
    o->tail = atomic_load_explicit(&h->tail, memory_order_relaxed);
    o->pushed = atomic_load_explicit(&h->pushed, memory_order_relaxed);
    o->spilled = atomic_load_explicit(&h->spilled, memory_order_relaxed);
    o->dropped = atomic_load_explicit(&h->dropped, memory_order_relaxed);
    o->torn = atomic_load_explicit(&h->torn, memory_order_relaxed);
    o->job_id = h->job_id;
    o->workflow_id = h->workflow_id;
    o->ring_uid = h->ring_uid;
    o->rank = h->rank;
    o->producer_pid = h->producer_pid;
    o->closed = (int)atomic_load_explicit(&h->closed, memory_order_acquire);
    o->max_strings = h->max_strings;
    o->strings_bytes = h->strings_bytes;
    o->string_count = fc__string_count(r);
}

int fc_ring_slot_task(const fc_ring *r, uint64_t *pos, uint64_t *task_id)
{
    if (!r || !pos || (*pos & 7))
        return -EINVAL;
    uint64_t p = *pos;
    uint64_t hd = atomic_load_explicit(&r->shm->head, memory_order_acquire);
    for (int step = 0; step < 2; step++) {   /* a padding slot, then the record */
        if (p >= hd)
            return 0;
        if (hd - p > r->cap)
            return -EINVAL;
        uint64_t off = p & r->mask, rem = r->cap - off;
        const fc_ring_slot *s = (const fc_ring_slot *)(r->data + off);
        if (atomic_load_explicit(&s->stamp, memory_order_acquire) != fc__stamp(r, p))
            return 0;
        if (rem < FC_RING_SLOT_HDR || s->type == FC_RING_SLOT_PAD) {
            p += rem;
            continue;
        }
        if (s->type != FC_RING_SLOT_RECORD || s->len < FC_RECORD_SIZE ||
            s->len > rem - FC_RING_SLOT_HDR)
            return 0;
        if (task_id)
            *task_id = ((const fc_task_record *)(s + 1))->task_id;
        *pos = p + FC_RING_SLOT_HDR + FC__ALIGN8((uint64_t)s->len);
        return 1;
    }
    return 0;
}

const char *fc_ring_spill_path(const fc_ring *r)
{
    return r ? r->spill_path : NULL;
}

void fc_ring_note_clock(fc_ring *r, uint32_t flags)
{
    if (r)
        atomic_fetch_or_explicit(&r->shm->clock_flags, flags & FC_BATCH_FLAG_CLOCK_TSC,
                                 memory_order_relaxed);
}

int fc_ring_release(fc_ring *r, uint64_t pos)
{
    if (!r)
        return -EINVAL;
    struct fc_ring_shm *h = r->shm;
    uint64_t t = atomic_load_explicit(&h->tail, memory_order_relaxed);
    uint64_t pe = atomic_load_explicit(&h->pending_end, memory_order_acquire);
    uint64_t lim = pe > t ? pe
                          : atomic_load_explicit(&h->head, memory_order_acquire);
    if (pos < t || pos > lim || (pos & 7))
        return -EINVAL;
    atomic_store_explicit(&h->tail, pos, memory_order_release);
    if (pe && pos >= pe)
        atomic_store_explicit(&h->pending_end, 0, memory_order_release);
    return 0;
}
