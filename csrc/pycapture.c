/*
 * pycapture.c -- flowcept._fastcapture: the @flowcept_task wrapper in C.
 *
 * A decorated sync function becomes a `Task` object (vectorcall, a method
 * descriptor like a plain function).  Per call, with the GIL held:
 *
 *   active State (or ensure-session callback) -> parent = ContextVar get ->
 *   task id from the State's atomic counter -> ContextVar set -> clock ->
 *   call -> ContextVar reset -> clock -> msgpack payload into a stack buffer
 *   -> fc_ring_push_task through the function pointer held by the State.
 *
 * The payload is encoded here for the common immutable types (None, bool,
 * int64/uint64, float, str, bytes and tuples/lists/dicts of those, a few
 * levels deep) and for plain numpy arrays (as payload.py describes them,
 * see "numpy arrays" below); for anything else, on an exception in the user's function or
 * an over-long payload it is built by the Python helper given at decoration
 * (the same code as the pure-Python wrapper), so both decode to the same
 * document.  The Python side (flowcept/runtime.py) creates one State per
 * session and registers the active one with set_active(); Session ids and
 * thread indexes come from the State too, so ids never collide between the
 * two paths.
 *
 * Single-phase module with process globals: one interpreter per process.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "flowcept.h"
#include "internal.h"   /* the record clock (fc__clock_ns) */
#include "msgpack_enc.h"

#include "pycompat.h"

static inline void keep_exc_chain(void) { (void)exc_chain; }   /* unused here now */

typedef int (*fc_push_fn)(fc_ring *, uint64_t, uint64_t, uint64_t, int64_t,
                          int64_t, uint32_t, uint32_t, uint32_t, uint16_t,
                          uint16_t, const char *, uint32_t);

#define MAX_DEPTH 8

/* ------------------------------------------------------------------ */
/* Module globals                                                       */
/* ------------------------------------------------------------------ */

typedef struct StateObject StateObject;

static StateObject *g_active;      /* owned, or NULL */
static PyObject *g_var;            /* the ContextVar current_task_id */
static PyObject *g_ensure;         /* () -> State | None */
static uint64_t g_generation;      /* last State generation handed out */
static PyObject *g_str_return;     /* "return" */
static uint64_t g_placeholders;    /* payloads replaced by PLACEHOLDER */

/* {"capture_error": "payload"}: the payload of a record whose own could not
 * be built (counted in g_placeholders). */
static const char PLACEHOLDER[] = "\x81\xad" "capture_error" "\xa7" "payload";
#define PLACEHOLDER_LEN (sizeof(PLACEHOLDER) - 1)

static _Thread_local uint64_t tls_gen;   /* State generation tls_idx is for */
static _Thread_local uint32_t tls_idx;

/* The C API's clock (internal.h): CLOCK_REALTIME nanoseconds, read from the
 * TSC between anchors where the TSC is invariant; about a third of the cost
 * of clock_gettime here. */
static _Thread_local struct fc__clock tls_clock;

static inline int64_t now_ns(void)
{
    return fc__clock_ns(&tls_clock);
}

/* The innermost task a compiled wrapper runs on this thread, and the
 * ContextVar's value when it began.  A wrapper does not set the ContextVar
 * (a set and a reset cost more than the rest of its call): its task is the
 * parent of whatever starts inside it while the ContextVar still holds that
 * value; a task opened through the ContextVar inside it (by the Python
 * wrappers) changes the value, and then the ContextVar's task wins.  The
 * value is held (a reference) while the task runs, so its identity cannot
 * be reused. */
static _Thread_local uint64_t tls_task;
static _Thread_local PyObject *tls_snap;

/* The parent for the ContextVar value pv (a new reference or NULL). */
static inline uint64_t parent_of(PyObject *pv)
{
    if (tls_task != 0 && pv == tls_snap)
        return tls_task;
    if (pv != NULL && PyLong_Check(pv)) {
        uint64_t parent = PyLong_AsUnsignedLongLong(pv);
        if (parent == (uint64_t)-1 && PyErr_Occurred()) {
            PyErr_Clear();
            return 0;
        }
        return parent;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* numpy arrays, without numpy's headers                                */
/* ------------------------------------------------------------------ */
/*
 * An exact numpy.ndarray is encoded here as payload.py's _describe() does:
 * {"__ndarray__": True, "dtype": str(dtype), "shape": [...]} and then
 * "data" (numpy_mode "full", C-contiguous, nbytes <= max_payload_bytes),
 * min/max/mean (0 < size <= numpy_stats_max, bool/int/uint/float) or
 * "nbytes".  The fields are read through mirrors of the leading members of
 * numpy's PyArrayObject and PyArray_Descr (the same in numpy 1.x and 2.x),
 * checked once against numpy's own attributes before first use; if that
 * check fails the arrays go to the Python encoder.  Everything unusual
 * (subclasses, 0-d, non-native byte order, other dtypes, layouts whose
 * summation order is not the one below, NaN/inf, signed zeros that make
 * min/max ambiguous, sums that depend on numpy's buffer size) does too, so
 * the bytes are those of the Python encoder or the Python encoder runs.
 */

#include <float.h>
#include <math.h>

/* NP_FLOWCEPT: an array is the text "ndarray_instance_id_<id>", as Flowcept
 * (and payload.py's value_descriptions "flowcept") describe values JSON cannot hold. */
enum { NP_DEFER = 0, NP_SUMMARY, NP_SHAPE, NP_FULL, NP_FLOWCEPT };

typedef struct {
    int mode;                 /* NP_DEFER: arrays go to the Python encoder */
    Py_ssize_t stats_max;     /* numpy_stats_max */
    Py_ssize_t max_payload;   /* max_payload_bytes ("full" mode) */
} np_cfg;

typedef struct {              /* numpy's PyArrayObject, leading members */
    PyObject_HEAD
    char *data;
    int nd;
    Py_intptr_t *dimensions;
    Py_intptr_t *strides;
    PyObject *base;
    PyObject *descr;
} np_array_head;

typedef struct {              /* numpy's PyArray_Descr, leading members */
    PyObject_HEAD
    PyTypeObject *typeobj;
    char kind, type, byteorder, flags;
    int type_num;
} np_descr_head;

enum { NK_BOOL, NK_INT, NK_UINT, NK_FLOAT, NK_COMPLEX };

typedef struct {
    char code;                /* dtype.char */
    char kind;                /* dtype.kind */
    unsigned char size;       /* dtype.itemsize */
    unsigned char nk;         /* NK_* */
    char name[24];            /* str(dtype), from numpy at set-up; "" unusable */
    unsigned char name_len;
} np_type;

/* By type number (numpy's stable NPY_TYPES); long double types: Python. */
#define NP_NTYPES 24
static np_type g_np_types[NP_NTYPES] = {
    [0] = {'?', 'b', 1, NK_BOOL, "", 0},
    [1] = {'b', 'i', 1, NK_INT, "", 0},
    [2] = {'B', 'u', 1, NK_UINT, "", 0},
    [3] = {'h', 'i', sizeof(short), NK_INT, "", 0},
    [4] = {'H', 'u', sizeof(short), NK_UINT, "", 0},
    [5] = {'i', 'i', sizeof(int), NK_INT, "", 0},
    [6] = {'I', 'u', sizeof(int), NK_UINT, "", 0},
    [7] = {'l', 'i', sizeof(long), NK_INT, "", 0},
    [8] = {'L', 'u', sizeof(long), NK_UINT, "", 0},
    [9] = {'q', 'i', sizeof(long long), NK_INT, "", 0},
    [10] = {'Q', 'u', sizeof(long long), NK_UINT, "", 0},
    [11] = {'f', 'f', 4, NK_FLOAT, "", 0},
    [12] = {'d', 'f', 8, NK_FLOAT, "", 0},
    [14] = {'F', 'c', 8, NK_COMPLEX, "", 0},
    [15] = {'D', 'c', 16, NK_COMPLEX, "", 0},
    [23] = {'e', 'f', 2, NK_FLOAT, "", 0},
};

enum { NPS_UNKNOWN = 0, NPS_BUSY, NPS_READY, NPS_OFF };
static int g_np_state;               /* NPS_*: the mirrors checked yet? */
static int g_np_float_sums;          /* float32/64 means as numpy's (probed) */
static PyTypeObject *g_np_ndarray;   /* owned once NPS_READY */

static int np_attr_long(PyObject *o, const char *name, long *out)
{
    PyObject *v = PyObject_GetAttrString(o, name);
    if (v == NULL)
        return 0;
    *out = PyLong_AsLong(v);
    Py_DECREF(v);
    return !(*out == -1 && PyErr_Occurred());
}

static int np_attr_char(PyObject *o, const char *name, char *out)
{
    PyObject *v = PyObject_GetAttrString(o, name);
    if (v == NULL)
        return 0;
    int ok = PyUnicode_Check(v) && PyUnicode_GET_LENGTH(v) == 1 &&
             PyUnicode_READ_CHAR(v, 0) < 128;
    if (ok)
        *out = (char)PyUnicode_READ_CHAR(v, 0);
    Py_DECREF(v);
    return ok;
}

/* A tuple of ints equal to vals[0..n). */
static int np_same_ints(PyObject *t, const Py_intptr_t *vals, int n)
{
    if (t == NULL || !PyTuple_Check(t) || PyTuple_GET_SIZE(t) != n)
        return 0;
    for (int i = 0; i < n; i++) {
        Py_ssize_t v = PyLong_AsSsize_t(PyTuple_GET_ITEM(t, i));
        if (v == -1 && PyErr_Occurred())
            return 0;
        if (v != (Py_ssize_t)vals[i])
            return 0;
    }
    return 1;
}

/* The dtype names and the probe of the mirrors against numpy itself. */
static int np_check(PyObject *np)
{
    PyObject *nd = PyObject_GetAttrString(np, "ndarray");
    if (nd == NULL || !PyType_Check(nd) ||
        ((PyTypeObject *)nd)->tp_basicsize < (Py_ssize_t)sizeof(np_array_head)) {
        Py_XDECREF(nd);
        return 0;
    }
    PyObject *dtype_type = PyObject_GetAttrString(np, "dtype");
    int ok = dtype_type != NULL && PyType_Check(dtype_type) &&
             ((PyTypeObject *)dtype_type)->tp_basicsize >= (Py_ssize_t)sizeof(np_descr_head);
    for (int tn = 0; tn < NP_NTYPES && ok; tn++) {
        np_type *ty = &g_np_types[tn];
        if (ty->code == 0)
            continue;
        PyObject *d = PyObject_CallMethod(np, "dtype", "s#", &ty->code, (Py_ssize_t)1);
        long num = -1, size = -1;
        char kind = 0, code = 0;
        ok = d != NULL && PyObject_TypeCheck(d, (PyTypeObject *)dtype_type) &&
             np_attr_long(d, "num", &num) && num == tn &&
             np_attr_long(d, "itemsize", &size) && size == ty->size &&
             np_attr_char(d, "kind", &kind) && kind == ty->kind &&
             np_attr_char(d, "char", &code) && code == ty->code &&
             ((np_descr_head *)d)->type_num == tn &&
             ((np_descr_head *)d)->kind == kind && ((np_descr_head *)d)->type == code;
        PyObject *s = ok ? PyObject_Str(d) : NULL;
        Py_ssize_t n = 0;
        const char *u = s ? PyUnicode_AsUTF8AndSize(s, &n) : NULL;
        if (u == NULL || n <= 0 || n >= (Py_ssize_t)sizeof(ty->name))
            ok = 0;
        else {
            memcpy(ty->name, u, (size_t)n);
            ty->name_len = (unsigned char)n;
        }
        Py_XDECREF(s);
        Py_XDECREF(d);
    }
    Py_XDECREF(dtype_type);
    /* probe: base[::-1, 1:, ::2], a strided 3-d view with a negative stride */
    PyObject *base = ok ? PyObject_CallMethod(np, "zeros", "((iii)s)", 3, 4, 5, "i2") : NULL;
    PyObject *m1 = PyLong_FromLong(-1), *p1 = PyLong_FromLong(1), *p2 = PyLong_FromLong(2);
    PyObject *s0 = m1 ? PySlice_New(NULL, NULL, m1) : NULL;
    PyObject *s1 = p1 ? PySlice_New(p1, NULL, NULL) : NULL;
    PyObject *s2 = p2 ? PySlice_New(NULL, NULL, p2) : NULL;
    PyObject *key = base && s0 && s1 && s2 ? PyTuple_Pack(3, s0, s1, s2) : NULL;
    Py_XDECREF(m1);
    Py_XDECREF(p1);
    Py_XDECREF(p2);
    Py_XDECREF(s0);
    Py_XDECREF(s1);
    Py_XDECREF(s2);
    PyObject *probe = key ? PyObject_GetItem(base, key) : NULL;
    ok = probe != NULL && Py_TYPE(probe) == (PyTypeObject *)nd;
    if (ok) {
        np_array_head *a = (np_array_head *)probe;
        PyObject *shape = PyObject_GetAttrString(probe, "shape");
        PyObject *strides = PyObject_GetAttrString(probe, "strides");
        PyObject *dtype = PyObject_GetAttrString(probe, "dtype");
        PyObject *iface = PyObject_GetAttrString(probe, "__array_interface__");
        PyObject *data = iface && PyDict_Check(iface) ? PyDict_GetItemString(iface, "data") : NULL;
        void *ptr = data && PyTuple_Check(data) && PyTuple_GET_SIZE(data) >= 1
                        ? PyLong_AsVoidPtr(PyTuple_GET_ITEM(data, 0)) : NULL;
        ok = a->nd == 3 && np_same_ints(shape, a->dimensions, 3) &&
             np_same_ints(strides, a->strides, 3) && a->strides[0] < 0 &&
             dtype == a->descr && ptr != NULL && ptr == (void *)a->data &&
             ((np_descr_head *)dtype)->type_num == 3;
        Py_XDECREF(shape);
        Py_XDECREF(strides);
        Py_XDECREF(dtype);
        Py_XDECREF(iface);
    }
    Py_XDECREF(probe);
    Py_XDECREF(key);
    Py_XDECREF(base);
    if (ok && !PyErr_Occurred())
        g_np_ndarray = (PyTypeObject *)nd;   /* keeps the reference */
    else {
        ok = 0;
        Py_DECREF(nd);
    }
    PyErr_Clear();
    return ok;
}

static int np_check_sums(PyObject *np);

/* Sets up the array encoder once numpy is imported (it never imports numpy).
 * Runs Python code: call it only where that is safe (not while walking a
 * container).  Never raises. */
static void np_setup(void)
{
    if (g_np_state != NPS_UNKNOWN)
        return;
#if FLT_EVAL_METHOD != 0
    g_np_state = NPS_OFF;   /* excess precision: sums would differ from numpy's */
#else
    PyObject *name = PyUnicode_FromString("numpy");
    PyObject *np = name ? PyImport_GetModule(name) : NULL;
    Py_XDECREF(name);
    if (np == NULL) {
        PyErr_Clear();
        return;                       /* not imported (yet): no arrays either */
    }
    g_np_state = NPS_BUSY;            /* other threads defer meanwhile */
    if (np_check(np)) {
        g_np_float_sums = np_check_sums(np);
        g_np_state = NPS_READY;
    } else
        g_np_state = NPS_OFF;
    Py_DECREF(np);
#endif
}

/* -- numpy's summation order, for the means ------------------------------
 * np.mean sums in the result type with numpy's pairwise summation (blocks
 * of up to 128 in 8 interleaved accumulators, halves above that) starting
 * from 0, and divides by the count.  Integer and float16 inputs are summed
 * through a cast buffer whose size the user can change (np.setbufsize): they
 * are computed here only when every partial sum is exact, so that no order
 * can change the result. */

#define NP_PW_BLOCK 128

static inline double ld_f64(const char *p) { double v; memcpy(&v, p, 8); return v; }
static inline float ld_f32(const char *p) { float v; memcpy(&v, p, 4); return v; }

#define NP_INLINE static inline __attribute__((always_inline))

/* element i of a run (inside the macros below: p, stride in scope) */
#define NP_LD(LOAD, i) LOAD(p + (Py_intptr_t)(i) * stride)

/* The pairwise sum of n elements of type T at p + i * stride; fn##_c for
 * contiguous elements (the stride a constant the compiler can use). */
#define NP_PAIRWISE(fn, T, LOAD)                                              \
    NP_INLINE T fn##_block(const char *p, Py_ssize_t n, Py_intptr_t stride)    \
    {                                                                          \
        if (n < 8) {                                                           \
            T res = (T)-0.0;   /* keeps a sum of -0.0 values -0.0 */           \
            for (Py_ssize_t i = 0; i < n; i++)                                 \
                res += NP_LD(LOAD, i);                                         \
            return res;                                                        \
        }                                                                      \
        /* eight accumulators (in registers): element i goes to i % 8 */       \
        T r0 = NP_LD(LOAD, 0), r1 = NP_LD(LOAD, 1), r2 = NP_LD(LOAD, 2);       \
        T r3 = NP_LD(LOAD, 3), r4 = NP_LD(LOAD, 4), r5 = NP_LD(LOAD, 5);       \
        T r6 = NP_LD(LOAD, 6), r7 = NP_LD(LOAD, 7);                            \
        Py_ssize_t i;                                                          \
        for (i = 8; i < n - (n % 8); i += 8) {                                 \
            r0 += NP_LD(LOAD, i + 0);                                          \
            r1 += NP_LD(LOAD, i + 1);                                          \
            r2 += NP_LD(LOAD, i + 2);                                          \
            r3 += NP_LD(LOAD, i + 3);                                          \
            r4 += NP_LD(LOAD, i + 4);                                          \
            r5 += NP_LD(LOAD, i + 5);                                          \
            r6 += NP_LD(LOAD, i + 6);                                          \
            r7 += NP_LD(LOAD, i + 7);                                          \
        }                                                                      \
        T res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7));             \
        for (; i < n; i++)                                                     \
            res += NP_LD(LOAD, i);                                             \
        return res;                                                            \
    }                                                                          \
    static T fn##_c(const char *p, Py_ssize_t n)                               \
    {                                                                          \
        if (n <= NP_PW_BLOCK)                                                  \
            return fn##_block(p, n, (Py_intptr_t)sizeof(T));                   \
        Py_ssize_t n2 = n / 2;                                                 \
        n2 -= n2 % 8;                                                          \
        return fn##_c(p, n2) + fn##_c(p + n2 * (Py_intptr_t)sizeof(T), n - n2); \
    }                                                                          \
    static T fn##_s(const char *p, Py_ssize_t n, Py_intptr_t stride)           \
    {                                                                          \
        if (n <= NP_PW_BLOCK)                                                  \
            return fn##_block(p, n, stride);                                   \
        Py_ssize_t n2 = n / 2;                                                 \
        n2 -= n2 % 8;                                                          \
        return fn##_s(p, n2, stride) + fn##_s(p + n2 * stride, n - n2, stride); \
    }                                                                          \
    static T fn(const char *p, Py_ssize_t n, Py_intptr_t stride)               \
    {                                                                          \
        return stride == (Py_intptr_t)sizeof(T) ? fn##_c(p, n) : fn##_s(p, n, stride); \
    }

NP_PAIRWISE(np_pw_f64, double, ld_f64)
NP_PAIRWISE(np_pw_f32, float, ld_f32)

/* float16 <-> float, exactly as IEEE (round to nearest even). */
static double np_half_value(uint16_t h)
{
    int e = (h >> 10) & 0x1f, m = h & 0x3ff;
    double v = e == 0 ? ldexp((double)m, -24)
             : e == 31 ? (m ? NAN : INFINITY) : ldexp((double)(m + 1024), e - 25);
    return (h & 0x8000) ? -v : v;
}

static uint16_t np_half_of(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u)
        return (uint16_t)(sign | 0x7e00);          /* NaN */
    if (ax >= 0x477ff000u)                         /* >= 65520: rounds to inf */
        return (uint16_t)(sign | 0x7c00);
    if (ax < 0x38800000u) {                        /* below 2^-14: subnormal */
        if (ax <= 0x33000000u)                     /* <= 2^-25: to zero (tie: even) */
            return sign;
        uint32_t e = ax >> 23, m = (ax & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126 - e, h = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (h & 1)))
            h++;
        return (uint16_t)(sign | h);
    }
    uint32_t h = (ax - 0x38000000u) >> 13, rem = ax & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1)))
        h++;
    return (uint16_t)(sign | h);
}

typedef struct {
    int kind;                 /* NK_BOOL, NK_INT, NK_UINT, NK_FLOAT */
    int64_t imin, imax;
    uint64_t umin, umax;
    double fmin, fmax, mean;
} np_stats;

/* min, max and the sum (mod 2^64) of n integers of type T in one pass, in
 * two interleaved halves (shorter dependency chains). */
#define NP_INT_SCAN(fn, T, W)                                                  \
    NP_INLINE void fn##_at(const char *p, Py_ssize_t n, Py_intptr_t stride,    \
                           W *lo_out, W *hi_out, uint64_t *sum_out)            \
    {                                                                          \
        T v0, v1;                                                              \
        memcpy(&v0, p, sizeof(T));                                             \
        T lo0 = v0, hi0 = v0, lo1 = v0, hi1 = v0;                              \
        uint64_t s0 = 0, s1 = 0;                                               \
        Py_ssize_t i = 0;                                                      \
        for (; i + 1 < n; i += 2) {                                            \
            memcpy(&v0, p + i * stride, sizeof(T));                            \
            memcpy(&v1, p + (i + 1) * stride, sizeof(T));                      \
            lo0 = v0 < lo0 ? v0 : lo0;                                         \
            hi0 = v0 > hi0 ? v0 : hi0;                                         \
            lo1 = v1 < lo1 ? v1 : lo1;                                         \
            hi1 = v1 > hi1 ? v1 : hi1;                                         \
            s0 += (uint64_t)(W)v0;                                             \
            s1 += (uint64_t)(W)v1;                                             \
        }                                                                      \
        if (i < n) {                                                           \
            memcpy(&v0, p + i * stride, sizeof(T));                            \
            lo0 = v0 < lo0 ? v0 : lo0;                                         \
            hi0 = v0 > hi0 ? v0 : hi0;                                         \
            s0 += (uint64_t)(W)v0;                                             \
        }                                                                      \
        *lo_out = lo1 < lo0 ? lo1 : lo0;                                       \
        *hi_out = hi1 > hi0 ? hi1 : hi0;                                       \
        *sum_out = s0 + s1;                                                    \
    }                                                                          \
    static void fn(const char *p, Py_ssize_t n, Py_intptr_t stride, W *lo,     \
                   W *hi, uint64_t *sum)                                       \
    {                                                                          \
        if (stride == (Py_intptr_t)sizeof(T))                                  \
            fn##_at(p, n, (Py_intptr_t)sizeof(T), lo, hi, sum);                \
        else                                                                   \
            fn##_at(p, n, stride, lo, hi, sum);                                \
    }

NP_INT_SCAN(np_scan_i8, int8_t, int64_t)
NP_INT_SCAN(np_scan_i16, int16_t, int64_t)
NP_INT_SCAN(np_scan_i32, int32_t, int64_t)
NP_INT_SCAN(np_scan_i64, int64_t, int64_t)
NP_INT_SCAN(np_scan_u8, uint8_t, uint64_t)
NP_INT_SCAN(np_scan_u16, uint16_t, uint64_t)
NP_INT_SCAN(np_scan_u32, uint32_t, uint64_t)
NP_INT_SCAN(np_scan_u64, uint64_t, uint64_t)

/* min and max of n floats of type T (as double), and whether any is NaN or
 * inf (x - x is 0 only for finite x), in four interleaved quarters. */
#define NP_FLOAT_SCAN(fn, T)                                                   \
    NP_INLINE int fn##_at(const char *p, Py_ssize_t n, Py_intptr_t stride,     \
                          double *lo_out, double *hi_out)                      \
    {                                                                          \
        T v0, v1, v2, v3;                                                      \
        memcpy(&v0, p, sizeof(T));                                             \
        T lo0 = v0, lo1 = v0, lo2 = v0, lo3 = v0;                              \
        T hi0 = v0, hi1 = v0, hi2 = v0, hi3 = v0;                              \
        T c0 = 0, c1 = 0, c2 = 0, c3 = 0;                                      \
        Py_ssize_t i = 0;                                                      \
        for (; i + 3 < n; i += 4) {                                            \
            memcpy(&v0, p + (i + 0) * stride, sizeof(T));                      \
            memcpy(&v1, p + (i + 1) * stride, sizeof(T));                      \
            memcpy(&v2, p + (i + 2) * stride, sizeof(T));                      \
            memcpy(&v3, p + (i + 3) * stride, sizeof(T));                      \
            lo0 = v0 < lo0 ? v0 : lo0;                                         \
            lo1 = v1 < lo1 ? v1 : lo1;                                         \
            lo2 = v2 < lo2 ? v2 : lo2;                                         \
            lo3 = v3 < lo3 ? v3 : lo3;                                         \
            hi0 = v0 > hi0 ? v0 : hi0;                                         \
            hi1 = v1 > hi1 ? v1 : hi1;                                         \
            hi2 = v2 > hi2 ? v2 : hi2;                                         \
            hi3 = v3 > hi3 ? v3 : hi3;                                         \
            c0 += v0 - v0;                                                     \
            c1 += v1 - v1;                                                     \
            c2 += v2 - v2;                                                     \
            c3 += v3 - v3;                                                     \
        }                                                                      \
        for (; i < n; i++) {                                                   \
            memcpy(&v0, p + i * stride, sizeof(T));                            \
            lo0 = v0 < lo0 ? v0 : lo0;                                         \
            hi0 = v0 > hi0 ? v0 : hi0;                                         \
            c0 += v0 - v0;                                                     \
        }                                                                      \
        lo0 = lo1 < lo0 ? lo1 : lo0;                                           \
        lo2 = lo3 < lo2 ? lo3 : lo2;                                           \
        hi0 = hi1 > hi0 ? hi1 : hi0;                                           \
        hi2 = hi3 > hi2 ? hi3 : hi2;                                           \
        *lo_out = (double)(lo2 < lo0 ? lo2 : lo0);                             \
        *hi_out = (double)(hi2 > hi0 ? hi2 : hi0);                             \
        return (c0 + c1) + (c2 + c3) == 0;                                     \
    }                                                                          \
    static int fn(const char *p, Py_ssize_t n, Py_intptr_t stride, double *lo, \
                  double *hi)                                                  \
    {                                                                          \
        return stride == (Py_intptr_t)sizeof(T)                                \
                   ? fn##_at(p, n, (Py_intptr_t)sizeof(T), lo, hi)             \
                   : fn##_at(p, n, stride, lo, hi);                            \
    }

NP_FLOAT_SCAN(np_scan_f64, double)
NP_FLOAT_SCAN(np_scan_f32, float)

#define NP_EXACT (1ull << 53)   /* integers below are exact in a double */

/* Whether zeros of both signs are among n floats (size 2, 4 or 8 bytes). */
static int np_both_zeros(const char *p, Py_ssize_t n, Py_intptr_t stride, int size)
{
    int pos = 0, neg = 0;
    for (Py_ssize_t i = 0; i < n && !(pos && neg); i++) {
        const char *q = p + i * stride;
        uint64_t bits = 0, sign;
        if (size == 8) {
            memcpy(&bits, q, 8);
            sign = bits >> 63;
            bits &= ~(1ull << 63);
        } else if (size == 4) {
            uint32_t b;
            memcpy(&b, q, 4);
            sign = b >> 31;
            bits = b & 0x7fffffffu;
        } else {
            uint16_t b;
            memcpy(&b, q, 2);
            sign = b >> 15;
            bits = b & 0x7fffu;
        }
        if (bits == 0) {
            if (sign)
                neg = 1;
            else
                pos = 1;
        }
    }
    return pos && neg;
}

/* min, max and mean of n elements p + i * stride (numpy's order): 1, or 0
 * where numpy's result is not certain to be the one computed here. */
static int np_stats_of(const np_type *ty, const char *p, Py_ssize_t n,
                       Py_intptr_t stride, np_stats *out)
{
    out->kind = ty->nk;
    if (ty->nk == NK_BOOL || ty->nk == NK_INT || ty->nk == NK_UINT) {
        uint64_t sum = 0, mag;
        if (ty->nk == NK_UINT) {
            switch (ty->size) {
            case 1: np_scan_u8(p, n, stride, &out->umin, &out->umax, &sum); break;
            case 2: np_scan_u16(p, n, stride, &out->umin, &out->umax, &sum); break;
            case 4: np_scan_u32(p, n, stride, &out->umin, &out->umax, &sum); break;
            default: np_scan_u64(p, n, stride, &out->umin, &out->umax, &sum);
            }
            mag = out->umax;
        } else {
            if (ty->nk == NK_BOOL) {
                uint64_t lo, hi;
                np_scan_u8(p, n, stride, &lo, &hi, &sum);
                if (hi > 1)            /* a bool byte other than 0/1 */
                    return 0;
                out->imin = (int64_t)lo;
                out->imax = (int64_t)hi;
            } else switch (ty->size) {
            case 1: np_scan_i8(p, n, stride, &out->imin, &out->imax, &sum); break;
            case 2: np_scan_i16(p, n, stride, &out->imin, &out->imax, &sum); break;
            case 4: np_scan_i32(p, n, stride, &out->imin, &out->imax, &sum); break;
            default: np_scan_i64(p, n, stride, &out->imin, &out->imax, &sum);
            }
            uint64_t mlo = out->imin < 0 ? (uint64_t)0 - (uint64_t)out->imin : (uint64_t)out->imin;
            uint64_t mhi = out->imax < 0 ? (uint64_t)0 - (uint64_t)out->imax : (uint64_t)out->imax;
            mag = mhi > mlo ? mhi : mlo;
        }
        /* every partial sum exact (below 2^53) whatever numpy's order; the
         * sum mod 2^64 is then the sum itself */
        if (mag != 0 && mag > (NP_EXACT - 1) / (uint64_t)n)
            return 0;
        out->mean = (ty->nk == NK_UINT ? (double)sum : (double)(int64_t)sum) / (double)n;
        return 1;
    }
    if (ty->nk != NK_FLOAT)
        return 0;
    /* floats: NaN and inf to Python (NaN payloads, inf - inf); +0.0 and
     * -0.0 both present with a zero extreme: which one numpy keeps is its
     * loop's business */
    double lo = INFINITY, hi = -INFINITY;
    if (ty->size == 2) {
        /* float16 sums in float32: exact when every value is a multiple of
         * 2^q and their magnitudes sum below 2^(q + 24); in units of 2^-24,
         * q is the lowest bit set in any value */
        int64_t sum = 0;
        uint64_t abs_sum = 0, bits = 0;
        if (n > (1 << 20))                           /* keeps the sums in range */
            return 0;
        for (Py_ssize_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + i * stride, 2);
            int e = (h >> 10) & 0x1f;
            if (e == 31)
                return 0;
            double v = np_half_value(h);
            if ((h & 0x7fff) != 0) {
                uint64_t units = e == 0 ? (uint64_t)(h & 0x3ff)
                                        : (uint64_t)((h & 0x3ff) + 1024) << (e - 1);
                bits |= units;
                abs_sum += units;
                sum += (h & 0x8000) ? -(int64_t)units : (int64_t)units;
            }
            lo = v < lo ? v : lo;
            hi = v > hi ? v : hi;
        }
        if (bits != 0 && abs_sum >= (1ull << (__builtin_ctzll(bits) + 24)))
            return 0;
        float s = (float)ldexp((double)sum, -24);    /* exact */
        if ((float)n != (double)n)
            return 0;
        out->mean = np_half_value(np_half_of(s / (float)n));
    } else if (!g_np_float_sums) {
        return 0;
    } else if (ty->size == 8) {
        if (!np_scan_f64(p, n, stride, &lo, &hi))
            return 0;
        double s = 0.0;
        s += np_pw_f64(p, n, stride);
        out->mean = s / (double)n;
    } else {
        if ((double)(float)n != (double)n || !np_scan_f32(p, n, stride, &lo, &hi))
            return 0;
        float s = 0.0f;
        s += np_pw_f32(p, n, stride);
        out->mean = (double)(s / (float)n);
    }
    if (isnan(out->mean))
        return 0;
    if ((lo == 0 || hi == 0) && np_both_zeros(p, n, stride, ty->size))
        return 0;
    out->fmin = lo;
    out->fmax = hi;
    return 1;
}

/* 1 if the array's elements in C order (fortran: Fortran order) are its
 * memory, else 0 (dims of 1 do not count). */
static int np_contiguous(const np_array_head *a, Py_intptr_t itemsize, int fortran)
{
    Py_intptr_t want = itemsize;
    for (int k = 0; k < a->nd; k++) {
        int i = fortran ? k : a->nd - 1 - k;
        if (a->dimensions[i] == 0)
            return 1;
        if (a->dimensions[i] != 1) {
            if (a->strides[i] != want)
                return 0;
            want *= a->dimensions[i];
        }
    }
    return 1;
}

/* The order numpy's reduction visits the elements in, as one run p + i *
 * stride: a single axis (dims of 1 aside) in index order, or a contiguous
 * array (C or Fortran) in memory order; 0 for other layouts. */
static int np_run(const np_array_head *a, Py_intptr_t itemsize, Py_intptr_t *stride)
{
    int axes = 0;
    Py_intptr_t s = itemsize;
    for (int i = 0; i < a->nd; i++)
        if (a->dimensions[i] != 1) {
            axes++;
            s = a->strides[i];
        }
    if (axes > 1) {
        if (!np_contiguous(a, itemsize, 0) && !np_contiguous(a, itemsize, 1))
            return 0;
        s = itemsize;
    }
    /* aligned: numpy would otherwise sum through a buffer */
    if ((uintptr_t)a->data % (uintptr_t)itemsize != 0 || s % itemsize != 0)
        return 0;
    *stride = s;
    return 1;
}

/* Whether the float32/float64 means computed here are numpy's, on probe
 * arrays of every layout taken (a numpy that sums in another order then
 * leaves those statistics to the Python encoder).  Runs Python code. */
static int np_check_sums(PyObject *np)
{
    static const char code[] =
        "views = []\n"
        "for dt in ('f8', 'f4'):\n"
        "    a = (np.sin(np.arange(1, 3004) * 0.7) * 1e3 + 1 / 3).astype(dt)\n"
        "    m = a.reshape(39, 77)\n"
        "    views += [a, a[::-1], a[::3], a[5:12], m, m.T, np.asfortranarray(m), m[:, 3:4]]\n"
        "means = [float(v.mean()) for v in views]\n";
    PyObject *ns = PyDict_New();
    if (ns == NULL || PyDict_SetItemString(ns, "np", np) < 0) {
        Py_XDECREF(ns);
        PyErr_Clear();
        return 0;
    }
    PyObject *r = PyRun_String(code, Py_file_input, ns, ns);
    PyObject *views = r ? PyDict_GetItemString(ns, "views") : NULL;
    PyObject *means = r ? PyDict_GetItemString(ns, "means") : NULL;
    int ok = views && means && PyList_Check(views) && PyList_Check(means) &&
             PyList_GET_SIZE(views) == PyList_GET_SIZE(means) && PyList_GET_SIZE(views) > 0;
    g_np_float_sums = 1;
    for (Py_ssize_t i = 0; ok && i < PyList_GET_SIZE(views); i++) {
        PyObject *v = PyList_GET_ITEM(views, i);
        double want = PyFloat_AsDouble(PyList_GET_ITEM(means, i));
        const np_array_head *a = (const np_array_head *)v;
        const np_descr_head *d = (const np_descr_head *)a->descr;
        np_stats st;
        Py_intptr_t stride;
        Py_intptr_t size = 1;
        ok = Py_TYPE(v) == g_np_ndarray && !PyErr_Occurred() && d->type_num >= 0 &&
             d->type_num < NP_NTYPES;
        if (!ok)
            break;
        const np_type *ty = &g_np_types[d->type_num];
        for (int k = 0; k < a->nd; k++)
            size *= a->dimensions[k];
        ok = np_run(a, ty->size, &stride) &&
             np_stats_of(ty, a->data, (Py_ssize_t)size, stride, &st) &&
             memcmp(&st.mean, &want, sizeof(double)) == 0;
    }
    Py_XDECREF(r);
    Py_DECREF(ns);
    PyErr_Clear();
    return ok;
}

/* A constant, already encoded (a string literal: its length without the NUL). */
#define ENC_CONST(b, lit) fc_mp_raw((b), (lit), sizeof(lit) - 1)

/* {"__ndarray__": True, "dtype": ... with 4 or 6 pairs; fixstr keys */
#define NP_HEAD_4 "\x84\xab__ndarray__\xc3\xa5" "dtype"
#define NP_HEAD_6 "\x86\xab__ndarray__\xc3\xa5" "dtype"

/* An exact ndarray (the caller checked the type): 1 encoded, 0 the Python
 * encoder decides.  Runs no Python code. */
static int enc_ndarray(fc_mp_buf *b, PyObject *o, const np_cfg *np)
{
    const np_array_head *a = (const np_array_head *)o;
    const np_descr_head *d = (const np_descr_head *)a->descr;
    if (d == NULL || d->type_num < 0 || d->type_num >= NP_NTYPES)
        return 0;
    const np_type *ty = &g_np_types[d->type_num];
    if (ty->name_len == 0 || d->type != ty->code || d->kind != ty->kind ||
        (d->byteorder != '=' && d->byteorder != '|'))
        return 0;
    int nd = a->nd;
    if (nd < 1 || nd > 64)
        return 0;
    Py_intptr_t size = 1;
    for (int i = 0; i < nd; i++) {
        if (a->dimensions[i] < 0)
            return 0;
        size *= a->dimensions[i];   /* numpy keeps sizes in range */
    }
    Py_intptr_t nbytes = size * ty->size;
    np_stats st = {0};
    int body;                      /* 0 nbytes, 1 data, 2 statistics */
    Py_intptr_t stride = 0;
    if (np->mode == NP_FULL && nbytes <= np->max_payload) {
        if (size != 0 && !np_contiguous(a, ty->size, 0))
            return 0;
        body = 1;
    } else if (np->mode != NP_SHAPE && size > 0 && size <= np->stats_max &&
               ty->nk != NK_COMPLEX) {
        if (!np_run(a, ty->size, &stride) ||
            !np_stats_of(ty, a->data, (Py_ssize_t)size, stride, &st))
            return 0;
        body = 2;
    } else
        body = 0;
    if (!(body == 2 ? ENC_CONST(b, NP_HEAD_6) : ENC_CONST(b, NP_HEAD_4)) ||
        !fc_mp_str(b, ty->name, ty->name_len) || !ENC_CONST(b, "\xa5shape") ||
        !fc_mp_arr_hdr(b, (size_t)nd))
        return 0;
    for (int i = 0; i < nd; i++)
        if (!fc_mp_int(b, (int64_t)a->dimensions[i]))
            return 0;
    if (body == 0)
        return ENC_CONST(b, "\xa6nbytes") && fc_mp_int(b, (int64_t)nbytes);
    if (body == 1)
        return ENC_CONST(b, "\xa4" "data") && fc_mp_bin(b, a->data, (size_t)nbytes);
    if (!ENC_CONST(b, "\xa3min"))
        return 0;
    switch (st.kind) {
    case NK_BOOL:
        if (!fc_mp_bool(b, (int)st.imin) || !ENC_CONST(b, "\xa3max") ||
            !fc_mp_bool(b, (int)st.imax))
            return 0;
        break;
    case NK_INT:
        if (!fc_mp_int(b, st.imin) || !ENC_CONST(b, "\xa3max") ||
            !fc_mp_int(b, st.imax))
            return 0;
        break;
    case NK_UINT:
        if (!fc_mp_uint(b, st.umin) || !ENC_CONST(b, "\xa3max") ||
            !fc_mp_uint(b, st.umax))
            return 0;
        break;
    default:
        if (!fc_mp_double(b, st.fmin) || !ENC_CONST(b, "\xa3max") ||
            !fc_mp_double(b, st.fmax))
            return 0;
    }
    return ENC_CONST(b, "\xa4mean") && fc_mp_double(b, st.mean);
}

/* ------------------------------------------------------------------ */
/* State: one capture session                                          */
/* ------------------------------------------------------------------ */

struct StateObject {
    PyObject_HEAD
    fc_push_fn push;
    fc_ring *ring;              /* NULL once invalidated */
    uint64_t origin_bits;
    uint64_t workflow_id;
    uint64_t generation;
    uint64_t counter;           /* atomic: last task number handed out */
    uint32_t threads;           /* atomic: thread indexes handed out */
    uint32_t rank;
    int capture_args;
    Py_ssize_t max_payload;
    np_cfg np;                  /* numpy arrays, as payload.configure() */
    PyObject *intern;           /* name -> activity id (session.activity_id) */
};

static PyTypeObject State_Type;

static inline uint32_t state_thread_index(StateObject *st)
{
    if (tls_gen != st->generation) {
        tls_idx = __atomic_fetch_add(&st->threads, 1, __ATOMIC_RELAXED);
        tls_gen = st->generation;
    }
    return tls_idx;
}

static inline uint64_t state_next_id(StateObject *st)
{
    return st->origin_bits |
           __atomic_add_fetch(&st->counter, 1, __ATOMIC_RELAXED);
}

/* numpy_mode as payload.py compares it ("full", "shape", anything else is
 * the summary); NULL is the default, "summary". */
static int np_mode_of(PyObject *mode)
{
    if (mode == NULL)
        return NP_SUMMARY;
    if (!PyUnicode_CheckExact(mode))
        return NP_DEFER;          /* an odd object: let Python compare it */
    if (PyUnicode_CompareWithASCIIString(mode, "full") == 0)
        return NP_FULL;
    if (PyUnicode_CompareWithASCIIString(mode, "shape") == 0)
        return NP_SHAPE;
    if (PyUnicode_CompareWithASCIIString(mode, "flowcept") == 0)
        return NP_FLOWCEPT;
    return NP_SUMMARY;
}

static PyObject *State_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"push", "ring", "origin_bits", "workflow_id",
                             "rank", "capture_args", "max_payload", "intern",
                             "numpy_mode", "numpy_stats_max", NULL};
    unsigned long long push, ring, origin_bits, workflow_id;
    unsigned int rank;
    int capture_args;
    Py_ssize_t max_payload, stats_max = 4096;
    PyObject *intern, *numpy_mode = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "KKKKIpnO|$On:State", kwlist,
                                     &push, &ring, &origin_bits, &workflow_id,
                                     &rank, &capture_args, &max_payload,
                                     &intern, &numpy_mode, &stats_max))
        return NULL;
    if (push == 0 || ring == 0) {
        PyErr_SetString(PyExc_ValueError, "State: push and ring must be set");
        return NULL;
    }
    if (!PyCallable_Check(intern)) {
        PyErr_SetString(PyExc_TypeError, "State: intern must be callable");
        return NULL;
    }
    StateObject *st = (StateObject *)type->tp_alloc(type, 0);
    if (st == NULL)
        return NULL;
    st->push = (fc_push_fn)(uintptr_t)push;
    st->ring = (fc_ring *)(uintptr_t)ring;
    st->origin_bits = origin_bits;
    st->workflow_id = workflow_id;
    st->rank = rank;
    st->capture_args = capture_args;
    st->max_payload = max_payload < 0 ? 0 : max_payload;
    st->np.mode = np_mode_of(numpy_mode);
    st->np.stats_max = stats_max;
    st->np.max_payload = max_payload;
    st->generation = ++g_generation;
    np_setup();   /* numpy imported by now: the first array takes the C path */
    Py_INCREF(intern);
    st->intern = intern;
    return (PyObject *)st;
}

static int State_traverse(StateObject *st, visitproc visit, void *arg)
{
    Py_VISIT(st->intern);
    return 0;
}

static int State_clear(StateObject *st)
{
    Py_CLEAR(st->intern);
    return 0;
}

static void State_dealloc(StateObject *st)
{
    PyObject_GC_UnTrack(st);
    State_clear(st);
    Py_TYPE(st)->tp_free((PyObject *)st);
}

static PyObject *State_next_id(StateObject *st, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromUnsignedLongLong(state_next_id(st));
}

static PyObject *State_thread_index(StateObject *st,
                                    PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromUnsignedLong(state_thread_index(st));
}

static PyObject *State_invalidate(StateObject *st,
                                  PyObject *Py_UNUSED(ignored))
{
    st->ring = NULL;
    if (g_active == st) {
        g_active = NULL;
        Py_DECREF(st);
    }
    Py_CLEAR(st->intern);
    Py_RETURN_NONE;
}

static PyObject *State_get_workflow_id(StateObject *st, void *Py_UNUSED(c))
{
    return PyLong_FromUnsignedLongLong(st->workflow_id);
}

static int State_set_workflow_id(StateObject *st, PyObject *v,
                                 void *Py_UNUSED(c))
{
    if (v == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete workflow_id");
        return -1;
    }
    unsigned long long w = PyLong_AsUnsignedLongLong(v);
    if (w == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    st->workflow_id = w;
    return 0;
}

static PyObject *State_get_generation(StateObject *st, void *Py_UNUSED(c))
{
    return PyLong_FromUnsignedLongLong(st->generation);
}

static PyObject *State_get_closed(StateObject *st, void *Py_UNUSED(c))
{
    return PyBool_FromLong(st->ring == NULL);
}

static PyObject *State_get_counter(StateObject *st, void *Py_UNUSED(c))
{
    return PyLong_FromUnsignedLongLong(
        __atomic_load_n(&st->counter, __ATOMIC_RELAXED));
}

static PyMethodDef State_methods[] = {
    {"next_id", (PyCFunction)(void (*)(void))State_next_id, METH_NOARGS,
     "origin_bits | next task number (shared with the C wrapper)."},
    {"thread_index", (PyCFunction)(void (*)(void))State_thread_index,
     METH_NOARGS, "Index of the calling thread in this session."},
    {"invalidate", (PyCFunction)(void (*)(void))State_invalidate, METH_NOARGS,
     "Stops all pushes through this state (the ring is about to close)."},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef State_getset[] = {
    {"workflow_id", (getter)State_get_workflow_id,
     (setter)State_set_workflow_id, NULL, NULL},
    {"generation", (getter)State_get_generation, NULL, NULL, NULL},
    {"closed", (getter)State_get_closed, NULL, NULL, NULL},
    {"counter", (getter)State_get_counter, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL}};

static PyTypeObject State_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "flowcept._fastcapture.State",
    .tp_basicsize = sizeof(StateObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Capture state of one session, read by Task calls.",
    .tp_new = State_new,
    .tp_dealloc = (destructor)State_dealloc,
    .tp_traverse = (traverseproc)State_traverse,
    .tp_clear = (inquiry)State_clear,
    .tp_methods = State_methods,
    .tp_getset = State_getset,
};

/* ------------------------------------------------------------------ */
/* Python objects to msgpack (the primitives: msgpack_enc.h)         */
/* ------------------------------------------------------------------ */

static int enc_str(fc_mp_buf *b, PyObject *o)
{
    const char *s;
    Py_ssize_t n;
    if (PyUnicode_IS_COMPACT_ASCII(o)) {
        s = (const char *)PyUnicode_DATA(o);
        n = PyUnicode_GET_LENGTH(o);
    } else {
        s = PyUnicode_AsUTF8AndSize(o, &n);
        if (s == NULL) {          /* e.g. lone surrogates: Python decides */
            PyErr_Clear();
            return 0;
        }
    }
    return fc_mp_str(b, s, (size_t)n);
}

static int enc_int(fc_mp_buf *b, PyObject *o)
{
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (overflow == 0) {
        if (v == -1 && PyErr_Occurred()) {
            PyErr_Clear();
            return 0;
        }
        return fc_mp_int(b, (int64_t)v);
    }
    if (overflow < 0)
        return 0;   /* below int64: msgpack raises, Python records the error */
    unsigned long long u = PyLong_AsUnsignedLongLong(o);
    if (u == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    return fc_mp_uint(b, (uint64_t)u);
}

static inline int enc_float(fc_mp_buf *b, PyObject *o)
{
    return fc_mp_double(b, PyFloat_AS_DOUBLE(o));
}

/* 1: encoded; 0: not a type handled here (or too deep/long): nothing is
 * raised, the caller falls back to the Python encoder. */
static int enc_obj(fc_mp_buf *b, PyObject *o, int depth, const np_cfg *np)
{
    PyTypeObject *t = Py_TYPE(o);
    if (o == Py_None)
        return fc_mp_nil(b);
    if (o == Py_True || o == Py_False)
        return fc_mp_bool(b, o == Py_True);
    if (t == &PyLong_Type)
        return enc_int(b, o);
    if (t == &PyUnicode_Type)
        return enc_str(b, o);
    if (t == &PyFloat_Type)
        return enc_float(b, o);
    if (t == &PyBytes_Type)
        return fc_mp_bin(b, PyBytes_AS_STRING(o), (size_t)PyBytes_GET_SIZE(o));
    if (depth >= MAX_DEPTH)
        return 0;
    if (t == &PyDict_Type) {
        Py_ssize_t pos = 0;
        PyObject *k, *v;
        if (!fc_mp_map_hdr(b, (size_t)PyDict_GET_SIZE(o)))
            return 0;
        while (PyDict_Next(o, &pos, &k, &v)) {
            /* a key a reader can hash: scalars only (else Python decides) */
            PyTypeObject *kt = Py_TYPE(k);
            if (!(k == Py_None || kt == &PyUnicode_Type || kt == &PyLong_Type ||
                  kt == &PyBool_Type || kt == &PyFloat_Type || kt == &PyBytes_Type))
                return 0;
            if (!enc_obj(b, k, depth + 1, np) || !enc_obj(b, v, depth + 1, np))
                return 0;
        }
        return 1;
    }
    if (t == &PyTuple_Type) {
        Py_ssize_t n = PyTuple_GET_SIZE(o);
        if (!fc_mp_arr_hdr(b, (size_t)n))
            return 0;
        for (Py_ssize_t i = 0; i < n; i++)
            if (!enc_obj(b, PyTuple_GET_ITEM(o, i), depth + 1, np))
                return 0;
        return 1;
    }
    if (t == &PyList_Type) {
        Py_ssize_t n = PyList_GET_SIZE(o);
        if (!fc_mp_arr_hdr(b, (size_t)n))
            return 0;
        for (Py_ssize_t i = 0; i < n; i++)   /* no Python code runs here */
            if (!enc_obj(b, PyList_GET_ITEM(o, i), depth + 1, np))
                return 0;
        return 1;
    }
    if (t == g_np_ndarray && np != NULL && np->mode == NP_FLOWCEPT) {
        char text[48];   /* id(o) is the object's address, as in Python */
        int n = snprintf(text, sizeof text, "ndarray_instance_id_%llu",
                         (unsigned long long)(uintptr_t)o);
        return n > 0 && fc_mp_str(b, text, (size_t)n);
    }
    if (t == g_np_ndarray && np != NULL && np->mode != NP_DEFER &&
        g_np_state == NPS_READY)
        return enc_ndarray(b, o, np);
    return 0;
}

/* ------------------------------------------------------------------ */
/* Task: the decorated function                                        */
/* ------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *func;
    PyObject *activity;       /* str */
    PyObject *names;          /* tuple of parameter names (str) */
    PyObject *outnames;       /* tuple of str, or NULL */
    PyObject *extra;          /* bytes: pre-encoded tags/custom_metadata pairs */
    PyObject *used_of;        /* (args, kwargs) -> used dict */
    PyObject *payload_of;     /* (want, args, kwargs, result, exc) -> bytes */
    PyObject *dict;
    PyObject *weakreflist;
    Py_ssize_t n_extra;       /* pairs in extra; -1: always use payload_of */
    int simple;               /* positional-or-keyword params only */
    int skip_first;           /* first param is self/cls */
    int outnames_fast;        /* outnames are distinct str */
    int capture_args;         /* -1 session default, 0 off, 1 on */
    uint64_t act_gen;         /* State generation act_id was interned for */
    uint32_t act_id;
} TaskObject;

static PyTypeObject Task_Type;

static PyObject *args_tuple(PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *t = PyTuple_New(nargs);
    if (t == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < nargs; i++) {
        Py_INCREF(args[i]);
        PyTuple_SET_ITEM(t, i, args[i]);
    }
    return t;
}

static PyObject *kwargs_dict(PyObject *const *args, Py_ssize_t nargs,
                             PyObject *kwnames)
{
    PyObject *d = PyDict_New();
    if (d == NULL || kwnames == NULL)
        return d;
    Py_ssize_t nkw = PyTuple_GET_SIZE(kwnames);
    for (Py_ssize_t i = 0; i < nkw; i++)
        if (PyDict_SetItem(d, PyTuple_GET_ITEM(kwnames, i), args[nargs + i]) < 0) {
            Py_DECREF(d);
            return NULL;
        }
    return d;
}

/* payload_of(want, args, kwargs, result, exc): the Python path's bytes. */
static PyObject *slow_payload(TaskObject *w, int want, PyObject *const *args,
                              Py_ssize_t nargs, PyObject *kwnames,
                              PyObject *result, PyObject *exc)
{
    PyObject *a = args_tuple(args, nargs);
    if (a == NULL)
        return NULL;
    PyObject *k = kwargs_dict(args, nargs, kwnames);
    if (k == NULL) {
        Py_DECREF(a);
        return NULL;
    }
    PyObject *r = PyObject_CallFunctionObjArgs(
        w->payload_of, want ? Py_True : Py_False, a, k,
        result ? result : Py_None, exc ? exc : Py_None, NULL);
    Py_DECREF(a);
    Py_DECREF(k);
    if (r != NULL && !PyBytes_Check(r)) {
        Py_DECREF(r);
        PyErr_SetString(PyExc_TypeError, "payload_of must return bytes");
        return NULL;
    }
    return r;
}

static inline int same_str(PyObject *a, PyObject *b)
{
    return a == b || (PyUnicode_GET_LENGTH(a) == PyUnicode_GET_LENGTH(b) &&
                      PyUnicode_Compare(a, b) == 0);
}

/* The "used" value: 1 encoded, 0 fall back to the Python path, -1 error. */
static int enc_used(TaskObject *w, fc_mp_buf *b, PyObject *const *args,
                    Py_ssize_t nargs, PyObject *kwnames, const np_cfg *np)
{
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs == 0 && w->simple) {          /* used = kwargs (no defaults to apply) */
        if (!fc_mp_map_hdr(b, (size_t)nkw))
            return 0;
        for (Py_ssize_t i = 0; i < nkw; i++)
            if (!enc_str(b, PyTuple_GET_ITEM(kwnames, i)) ||
                !enc_obj(b, args[i], 1, np))
                return 0;
        return 1;
    }
    if (w->simple && nargs <= PyTuple_GET_SIZE(w->names)) {
        for (Py_ssize_t j = 0; j < nkw; j++)   /* f(1, x=2): Python decides */
            for (Py_ssize_t i = 0; i < nargs; i++)
                if (same_str(PyTuple_GET_ITEM(kwnames, j),
                             PyTuple_GET_ITEM(w->names, i)))
                    return 0;
        Py_ssize_t first = w->skip_first ? 1 : 0;
        if (!fc_mp_map_hdr(b, (size_t)(nargs - first + nkw)))
            return 0;
        for (Py_ssize_t i = first; i < nargs; i++)
            if (!enc_str(b, PyTuple_GET_ITEM(w->names, i)) ||
                !enc_obj(b, args[i], 1, np))
                return 0;
        for (Py_ssize_t i = 0; i < nkw; i++)
            if (!enc_str(b, PyTuple_GET_ITEM(kwnames, i)) ||
                !enc_obj(b, args[nargs + i], 1, np))
                return 0;
        return 1;
    }
    /* signature binding: let Python build the dict, encode it here */
    PyObject *a = args_tuple(args, nargs);
    if (a == NULL)
        return -1;
    PyObject *k = kwargs_dict(args, nargs, kwnames);
    if (k == NULL) {
        Py_DECREF(a);
        return -1;
    }
    PyObject *used = PyObject_CallFunctionObjArgs(w->used_of, a, k, NULL);
    Py_DECREF(a);
    Py_DECREF(k);
    if (used == NULL)
        return -1;
    int ok = enc_obj(b, used, 0, np);
    Py_DECREF(used);
    return ok;
}

static PyObject *g_str_used, *g_str_generated;

/* Whole payload of a call that returned: 1 encoded, 0 fall back, -1 error. */
static int enc_doc(TaskObject *w, fc_mp_buf *b, int want, PyObject *const *args,
                   Py_ssize_t nargs, PyObject *kwnames, PyObject *result,
                   const np_cfg *np)
{
    if (w->n_extra < 0)
        return 0;
    if (!want) {
        if (!fc_mp_map_hdr(b, (size_t)w->n_extra))
            return 0;
    } else {
        /* generated, as capture.task._generated(): kind 0 none, 1 {name: r},
         * 2 dict(zip(names, r)), 3 r itself, 4 {"return": r} */
        int kind;
        Py_ssize_t nout = w->outnames ? PyTuple_GET_SIZE(w->outnames) : 0;
        PyTypeObject *rt = Py_TYPE(result);
        if (nout && !w->outnames_fast)
            return 0;
        /* Flowcept's order: no result, a mapping, a sequence of the names'
         * length, one name, else the value itself */
        if (result == Py_None)
            kind = 0;
        else if (PyDict_Check(result))
            kind = 3;
        else if (nout && (rt == &PyTuple_Type || rt == &PyList_Type) &&
                 Py_SIZE(result) == nout)
            kind = 2;
        else if (nout && (PyTuple_Check(result) || PyList_Check(result)))
            return 0;   /* a tuple/list subclass: Python zips it */
        else if (nout == 1)
            kind = 1;
        else
            kind = 4;
        if (!fc_mp_map_hdr(b, (size_t)(1 + (kind != 0) + w->n_extra)))
            return 0;
        if (!enc_str(b, g_str_used))
            return 0;
        int u = enc_used(w, b, args, nargs, kwnames, np);
        if (u <= 0)
            return u;
        if (kind) {
            if (!enc_str(b, g_str_generated))
                return 0;
            switch (kind) {
            case 1:
                if (!fc_mp_map_hdr(b, 1) ||
                    !enc_str(b, PyTuple_GET_ITEM(w->outnames, 0)) ||
                    !enc_obj(b, result, 1, np))
                    return 0;
                break;
            case 2: {
                PyObject **items = rt == &PyTuple_Type
                                       ? &PyTuple_GET_ITEM(result, 0)
                                       : ((PyListObject *)result)->ob_item;
                if (!fc_mp_map_hdr(b, (size_t)nout))
                    return 0;
                for (Py_ssize_t i = 0; i < nout; i++)
                    if (!enc_str(b, PyTuple_GET_ITEM(w->outnames, i)) ||
                        !enc_obj(b, items[i], 1, np))
                        return 0;
                break;
            }
            case 3:
                if (!enc_obj(b, result, 0, np))
                    return 0;
                break;
            default:
                if (!fc_mp_map_hdr(b, 1) || !enc_str(b, g_str_return) ||
                    !enc_obj(b, result, 1, np))
                    return 0;
            }
        }
    }
    if (w->n_extra > 0 &&
        !fc_mp_raw(b, PyBytes_AS_STRING(w->extra),
                 (size_t)PyBytes_GET_SIZE(w->extra)))
        return 0;
    return 1;
}

/* Activity id of w in st's ring (interned once per session), or
 * FC_ACTIVITY_OVERFLOW when the name table is full or interning failed
 * (the record then carries the name in its payload).  Never raises. */
static uint32_t task_activity(TaskObject *w, StateObject *st)
{
    if (w->act_gen != st->generation) {
        if (st->intern == NULL)
            return FC_ACTIVITY_OVERFLOW;
        PyObject *r = PyObject_CallOneArg(st->intern, w->activity);
        if (r == NULL) {
            PyErr_Clear();
            return FC_ACTIVITY_OVERFLOW;   /* not cached: may work next time */
        }
        unsigned long v = PyLong_AsUnsignedLong(r);
        Py_DECREF(r);
        if ((v == (unsigned long)-1 && PyErr_Occurred()) || v > 0xFFFFFFFFul) {
            PyErr_Clear();
            return FC_ACTIVITY_OVERFLOW;
        }
        w->act_id = (uint32_t)v;
        w->act_gen = st->generation;
    }
    return w->act_id;
}

/* Length of s cut to FC_NAME_MAX bytes at a UTF-8 boundary (as fc_name_cut). */
static uint32_t name_cut(const char *s, size_t len)
{
    if (len <= FC_NAME_MAX)
        return (uint32_t)len;
    const unsigned char *u = (const unsigned char *)s;
    uint32_t cut = FC_NAME_MAX;
    for (int k = 0; k < 3 && cut > 0 && (u[cut] & 0xC0) == 0x80; k++)
        cut--;
    if ((u[cut] & 0xC0) == 0x80)
        cut = FC_NAME_MAX;
    return cut;
}

/* Pushes one record of w.  An activity beyond the name table goes with
 * FC_FLAG_NAME_IN_PAYLOAD and [u16 LE n][name] in front of the payload.
 * Never raises. */
static void push_record(StateObject *st, TaskObject *w, uint64_t tid,
                        uint64_t parent, int64_t start, int64_t end,
                        uint16_t status, const char *data, size_t len)
{
    uint32_t act = task_activity(w, st);
    if (st->ring == NULL)   /* interning ran Python code: the session may have ended */
        return;
    if (act != FC_ACTIVITY_OVERFLOW) {
        st->push(st->ring, tid, parent, st->workflow_id, start, end, st->rank,
                 state_thread_index(st), act, status, FC_FLAG_PAYLOAD_MSGPACK,
                 data, (uint32_t)len);
        return;
    }
    PyObject *nb = PyUnicode_AsEncodedString(w->activity, "utf-8", "backslashreplace");
    if (nb == NULL) {
        PyErr_Clear();
        nb = PyBytes_FromStringAndSize("?", 1);
        if (nb == NULL) {
            PyErr_Clear();
            return;
        }
    }
    uint32_t n = name_cut(PyBytes_AS_STRING(nb), (size_t)PyBytes_GET_SIZE(nb));
    char *buf = malloc(2 + (size_t)n + len);
    if (buf != NULL) {
        buf[0] = (char)(n & 0xff);
        buf[1] = (char)(n >> 8);
        memcpy(buf + 2, PyBytes_AS_STRING(nb), n);
        if (len)
            memcpy(buf + 2 + n, data, len);
        st->push(st->ring, tid, parent, st->workflow_id, start, end, st->rank,
                 state_thread_index(st), FC_ACTIVITY_OVERFLOW, status,
                 FC_FLAG_PAYLOAD_MSGPACK | FC_FLAG_NAME_IN_PAYLOAD, buf,
                 (uint32_t)(2 + n + len));
        free(buf);
    }
    Py_DECREF(nb);
}

static PyObject *Task_vectorcall(PyObject *self, PyObject *const *args,
                                 size_t nargsf, PyObject *kwnames)
{
    TaskObject *w = (TaskObject *)self;
    StateObject *st = g_active;
    if (g_var == NULL)   /* capture.py not imported: nothing to link to */
        return PyObject_Vectorcall(w->func, args, nargsf, kwnames);
    if (st != NULL && st->ring != NULL) {
        Py_INCREF(st);
    } else {
        PyObject *r = g_ensure ? PyObject_CallNoArgs(g_ensure) : Py_NewRef(Py_None);
        if (r == NULL) {   /* capture could not start: the call goes on uncaptured */
            PyErr_Clear();
            return PyObject_Vectorcall(w->func, args, nargsf, kwnames);
        }
        if (!PyObject_TypeCheck(r, &State_Type) || ((StateObject *)r)->ring == NULL) {
            Py_DECREF(r);   /* capture disabled: just call */
            return PyObject_Vectorcall(w->func, args, nargsf, kwnames);
        }
        st = (StateObject *)r;
    }

    PyObject *pv = NULL;
    if (PyContextVar_Get(g_var, NULL, &pv) < 0)
        goto uncaptured;
    uint64_t parent = parent_of(pv);
    uint64_t tid = state_next_id(st);
    uint64_t outer_task = tls_task;
    PyObject *outer_snap = tls_snap;
    tls_task = tid;
    tls_snap = pv;
    int64_t start = now_ns();
    PyObject *result = PyObject_Vectorcall(w->func, args, nargsf, kwnames);
    tls_task = outer_task;
    tls_snap = outer_snap;
    Py_XDECREF(pv);
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);

    if (result == NULL) {
        /* error: record through the Python path, then re-raise unchanged */
        saved_exc se;
        PyObject *exc = exc_save(&se);
        int64_t end = now_ns();
        if (st->ring != NULL) {
            int want = w->capture_args >= 0 ? w->capture_args : st->capture_args;
            PyObject *data = slow_payload(w, want, args, nargs, kwnames, NULL, exc);
            if (data == NULL) {   /* never replaces the user's exception */
                PyErr_Clear();
                g_placeholders++;
                push_record(st, w, tid, parent, start, end, FC_STATUS_ERROR,
                            PLACEHOLDER, PLACEHOLDER_LEN);
            } else {
                push_record(st, w, tid, parent, start, end, FC_STATUS_ERROR,
                            PyBytes_AS_STRING(data), (size_t)PyBytes_GET_SIZE(data));
                Py_DECREF(data);
            }
        }
        Py_DECREF(st);
        exc_restore(&se);
        return NULL;
    }

    int64_t end = now_ns();
    if (st->ring == NULL) {   /* the session ended during the call */
        Py_DECREF(st);
        return result;
    }
    int want = w->capture_args >= 0 ? w->capture_args : st->capture_args;
    fc_mp_buf b;
    fc_mp_init(&b, (size_t)st->max_payload);
    PyObject *slow = NULL;
    const char *data;
    size_t len;
    int ok = enc_doc(w, &b, want, args, nargs, kwnames, result, &st->np);
    if (ok > 0) {
        data = b.p;
        len = b.len;
    } else {
        if (ok < 0)   /* e.g. a signature that would not bind: Python decides */
            PyErr_Clear();
        np_setup();   /* numpy imported since the session started? (once) */
        slow = slow_payload(w, want, args, nargs, kwnames, result, NULL);
        if (slow == NULL) {   /* never replaces the user's result */
            PyErr_Clear();
            g_placeholders++;
            data = PLACEHOLDER;
            len = PLACEHOLDER_LEN;
        } else {
            data = PyBytes_AS_STRING(slow);
            len = (size_t)PyBytes_GET_SIZE(slow);
        }
    }
    push_record(st, w, tid, parent, start, end, FC_STATUS_FINISHED, data, len);
    Py_XDECREF(slow);
    fc_mp_free(&b);
    Py_DECREF(st);
    return result;

uncaptured:   /* capture could not set up this call: run it as is */
    PyErr_Clear();
    Py_DECREF(st);
    return PyObject_Vectorcall(w->func, args, nargsf, kwnames);
}

static PyObject *Task_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"func", "activity", "names", "simple",
                             "skip_first", "output_names", "outnames_fast",
                             "extra", "n_extra", "capture_args", "used_of",
                             "payload_of", NULL};
    PyObject *func, *activity, *names, *outnames, *extra, *used_of, *payload_of;
    int simple, skip_first, outnames_fast, capture_args;
    Py_ssize_t n_extra;
    if (!PyArg_ParseTupleAndKeywords(
            args, kw, "OUO!ppOpOniOO:Task", kwlist, &func, &activity,
            &PyTuple_Type, &names, &simple, &skip_first, &outnames,
            &outnames_fast, &extra, &n_extra, &capture_args, &used_of,
            &payload_of))
        return NULL;
    if (!PyCallable_Check(func) || !PyCallable_Check(used_of) ||
        !PyCallable_Check(payload_of)) {
        PyErr_SetString(PyExc_TypeError, "Task: func, used_of and payload_of must be callable");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(names); i++)
        if (!PyUnicode_Check(PyTuple_GET_ITEM(names, i))) {
            PyErr_SetString(PyExc_TypeError, "Task: names must be str");
            return NULL;
        }
    if (outnames == Py_None || (PyTuple_Check(outnames) && PyTuple_GET_SIZE(outnames) == 0))
        outnames = NULL;
    else if (!PyTuple_Check(outnames)) {
        PyErr_SetString(PyExc_TypeError, "Task: output_names must be a tuple or None");
        return NULL;
    }
    if (outnames_fast && outnames)
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(outnames); i++)
            if (!PyUnicode_CheckExact(PyTuple_GET_ITEM(outnames, i)))
                outnames_fast = 0;
    if (extra == Py_None)
        extra = NULL;
    else if (!PyBytes_Check(extra)) {
        PyErr_SetString(PyExc_TypeError, "Task: extra must be bytes or None");
        return NULL;
    }
    if (n_extra > 0 && extra == NULL)
        n_extra = -1;
    if (n_extra == 0)
        extra = NULL;
    TaskObject *w = (TaskObject *)type->tp_alloc(type, 0);
    if (w == NULL)
        return NULL;
    w->vectorcall = Task_vectorcall;
    Py_INCREF(func);
    w->func = func;
    Py_INCREF(activity);
    w->activity = activity;
    Py_INCREF(names);
    w->names = names;
    Py_XINCREF(outnames);
    w->outnames = outnames;
    Py_XINCREF(extra);
    w->extra = extra;
    Py_INCREF(used_of);
    w->used_of = used_of;
    Py_INCREF(payload_of);
    w->payload_of = payload_of;
    w->n_extra = n_extra;
    w->simple = simple;
    w->skip_first = skip_first;
    w->outnames_fast = outnames_fast;
    w->capture_args = capture_args < 0 ? -1 : (capture_args ? 1 : 0);
    return (PyObject *)w;
}

static int Task_traverse(TaskObject *w, visitproc visit, void *arg)
{
    Py_VISIT(w->func);
    Py_VISIT(w->activity);
    Py_VISIT(w->names);
    Py_VISIT(w->outnames);
    Py_VISIT(w->extra);
    Py_VISIT(w->used_of);
    Py_VISIT(w->payload_of);
    Py_VISIT(w->dict);
    return 0;
}

static int Task_clear(TaskObject *w)
{
    Py_CLEAR(w->func);
    Py_CLEAR(w->activity);
    Py_CLEAR(w->names);
    Py_CLEAR(w->outnames);
    Py_CLEAR(w->extra);
    Py_CLEAR(w->used_of);
    Py_CLEAR(w->payload_of);
    Py_CLEAR(w->dict);
    return 0;
}

static void Task_dealloc(TaskObject *w)
{
    PyObject_GC_UnTrack(w);
    if (w->weakreflist != NULL)
        PyObject_ClearWeakRefs((PyObject *)w);
    Task_clear(w);
    Py_TYPE(w)->tp_free((PyObject *)w);
}

/* A function is a non-data descriptor: bind to instances, like def. */
static PyObject *Task_descr_get(PyObject *self, PyObject *obj,
                                PyObject *Py_UNUSED(type))
{
    if (obj == NULL || obj == Py_None) {
        Py_INCREF(self);
        return self;
    }
    return PyMethod_New(self, obj);
}

static PyObject *Task_repr(TaskObject *w)
{
    return PyUnicode_FromFormat("<flowcept_task %R>", w->func ? w->func : Py_None);
}

/* Pickled by reference, like the function it replaces. */
static PyObject *Task_reduce(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    return PyObject_GetAttrString(self, "__qualname__");
}

static PyObject *Task_get_func(TaskObject *w, void *Py_UNUSED(c))
{
    return Py_NewRef(w->func ? w->func : Py_None);
}

static PyMethodDef Task_methods[] = {
    {"__reduce__", (PyCFunction)(void (*)(void))Task_reduce, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef Task_getset[] = {
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL, NULL},
    {"__flowcept_func__", (getter)Task_get_func, NULL,
     "the undecorated function", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

static PyTypeObject Task_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "flowcept._fastcapture.Task",
    .tp_basicsize = sizeof(TaskObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC |
                Py_TPFLAGS_HAVE_VECTORCALL | Py_TPFLAGS_METHOD_DESCRIPTOR,
    .tp_doc = "A function decorated by @flowcept_task (compiled wrapper).",
    .tp_new = Task_new,
    .tp_dealloc = (destructor)Task_dealloc,
    .tp_traverse = (traverseproc)Task_traverse,
    .tp_clear = (inquiry)Task_clear,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(TaskObject, vectorcall),
    .tp_descr_get = Task_descr_get,
    .tp_repr = (reprfunc)Task_repr,
    .tp_dictoffset = offsetof(TaskObject, dict),
    .tp_weaklistoffset = offsetof(TaskObject, weakreflist),
    .tp_methods = Task_methods,
    .tp_getset = Task_getset,
};

/* ------------------------------------------------------------------ */
/* Module                                                              */
/* ------------------------------------------------------------------ */

static PyObject *mod_set_active(PyObject *Py_UNUSED(m), PyObject *st)
{
    if (st != Py_None && !PyObject_TypeCheck(st, &State_Type)) {
        PyErr_SetString(PyExc_TypeError, "set_active takes a State or None");
        return NULL;
    }
    StateObject *old = g_active;
    if (st == Py_None || ((StateObject *)st)->ring == NULL) {
        g_active = NULL;
    } else {
        Py_INCREF(st);
        g_active = (StateObject *)st;
    }
    Py_XDECREF(old);
    Py_RETURN_NONE;
}

static PyObject *mod_check(PyObject *Py_UNUSED(m), PyObject *args)
{
    Py_buffer view;
    int max_depth;
    if (!PyArg_ParseTuple(args, "y*i:check", &view, &max_depth))
        return NULL;
    int ok = fc_mp_check(view.buf, (size_t)view.len, max_depth);
    PyBuffer_Release(&view);
    return PyBool_FromLong(ok);
}

static PyObject *mod_placeholders(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(a))
{
    return PyLong_FromUnsignedLongLong(g_placeholders);
}

static PyObject *mod_get_active(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(a))
{
    return Py_NewRef(g_active ? (PyObject *)g_active : Py_None);
}

static PyObject *mod_configure(PyObject *Py_UNUSED(m), PyObject *args)
{
    PyObject *var, *ensure;
    if (!PyArg_ParseTuple(args, "O!O:configure", &PyContextVar_Type, &var, &ensure))
        return NULL;
    if (!PyCallable_Check(ensure)) {
        PyErr_SetString(PyExc_TypeError, "configure: ensure must be callable");
        return NULL;
    }
    Py_INCREF(var);
    Py_XSETREF(g_var, var);
    Py_INCREF(ensure);
    Py_XSETREF(g_ensure, ensure);
    Py_RETURN_NONE;
}

static PyObject *mod_encode(PyObject *Py_UNUSED(m), PyObject *args, PyObject *kw)
{
    /* The C encoder alone (tests): bytes, or None where it defers.  numpy
     * arrays only with a numpy_mode (as in payload.configure()). */
    static char *kwlist[] = {"value", "numpy_mode", "numpy_stats_max",
                             "max_payload_bytes", NULL};
    PyObject *o, *mode = Py_None;
    np_cfg np = {NP_DEFER, 4096, 65536};
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|$Onn:encode", kwlist, &o, &mode,
                                     &np.stats_max, &np.max_payload))
        return NULL;
    if (mode != Py_None) {
        np.mode = np_mode_of(mode);
        np_setup();
    }
    fc_mp_buf b;
    fc_mp_init(&b, (size_t)PY_SSIZE_T_MAX);
    PyObject *r;
    if (enc_obj(&b, o, 0, &np))
        r = PyBytes_FromStringAndSize(b.p, (Py_ssize_t)b.len);
    else
        r = Py_NewRef(Py_None);
    fc_mp_free(&b);
    return r;
}

static PyObject *mod_numpy_ready(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(a))
{
    np_setup();
    return PyBool_FromLong(g_np_state == NPS_READY);
}

/* current_parent(): the innermost open task here (see tls_task). */
static PyObject *mod_current_parent(PyObject *m, PyObject *noargs)
{
    (void)m;
    (void)noargs;
    PyObject *pv = NULL;
    if (g_var == NULL)
        return PyLong_FromLong(0);
    if (PyContextVar_Get(g_var, NULL, &pv) < 0)
        return NULL;
    if (tls_task != 0 && pv == tls_snap) {
        Py_XDECREF(pv);
        return PyLong_FromUnsignedLongLong(tls_task);
    }
    return pv != NULL ? pv : PyLong_FromLong(0);
}

/* clock_flags(): FC_BATCH_FLAG_CLOCK_TSC when this module's timestamps
 * come from the TSC (what a session notes in its ring), else 0. */
static PyObject *mod_clock_flags(PyObject *m, PyObject *noargs)
{
    (void)m;
    (void)noargs;
#if FC__CLOCK_HAVE_TSC
    return PyLong_FromLong(fc__clock_uses_tsc() ? FC_BATCH_FLAG_CLOCK_TSC : 0);
#else
    return PyLong_FromLong(0);
#endif
}

static PyMethodDef mod_methods[] = {
    {"current_parent", mod_current_parent, METH_NOARGS,
     "The id of the innermost open task of this thread / asyncio task (0: none)."},
    {"clock_flags", mod_clock_flags, METH_NOARGS,
     "FC_BATCH_FLAG_CLOCK_TSC when the wrappers' timestamps come from the TSC."},
    {"set_active", mod_set_active, METH_O,
     "set_active(state | None): the session State decorated calls use."},
    {"get_active", mod_get_active, METH_NOARGS, "The active State, or None."},
    {"check", mod_check, METH_VARARGS,
     "check(data, max_depth): data is one msgpack value, nested at most "
     "max_depth deep, whose map keys are all scalars."},
    {"placeholders", mod_placeholders, METH_NOARGS,
     "Payloads the compiled wrapper replaced by a placeholder, so far."},
    {"configure", mod_configure, METH_VARARGS,
     "configure(contextvar, ensure): the parent-task ContextVar and the "
     "callback returning a State (starting a session) or None."},
    {"encode", (PyCFunction)(void (*)(void))mod_encode, METH_VARARGS | METH_KEYWORDS,
     "encode(value, *, numpy_mode=None, numpy_stats_max=4096, "
     "max_payload_bytes=65536): msgpack bytes of a value by the C encoder, or "
     "None where it defers (numpy arrays always without a numpy_mode)."},
    {"numpy_ready", mod_numpy_ready, METH_NOARGS,
     "Whether numpy arrays are encoded here (numpy imported and its layout "
     "checked)."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT,
    .m_name = "flowcept._fastcapture",
    .m_doc = "Compiled @flowcept_task wrapper for sync functions.",
    .m_size = -1,
    .m_methods = mod_methods,
};

PyMODINIT_FUNC PyInit__fastcapture(void)
{
    if (PyType_Ready(&State_Type) < 0 || PyType_Ready(&Task_Type) < 0)
        return NULL;
    if (g_str_return == NULL) {
        g_str_return = PyUnicode_InternFromString("return");
        g_str_used = PyUnicode_InternFromString("used");
        g_str_generated = PyUnicode_InternFromString("generated");
        if (!g_str_return || !g_str_used || !g_str_generated)
            return NULL;
    }
    PyObject *m = PyModule_Create(&moduledef);
    if (m == NULL)
        return NULL;
    Py_INCREF(&State_Type);
    if (PyModule_AddObject(m, "State", (PyObject *)&State_Type) < 0) {
        Py_DECREF(&State_Type);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&Task_Type);
    if (PyModule_AddObject(m, "Task", (PyObject *)&Task_Type) < 0) {
        Py_DECREF(&Task_Type);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "MAX_DEPTH", MAX_DEPTH) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
