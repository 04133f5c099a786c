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
 * levels deep); for anything else, on an exception in the user's function or
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

static inline int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
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

static PyObject *State_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"push", "ring", "origin_bits", "workflow_id",
                             "rank", "capture_args", "max_payload", "intern",
                             NULL};
    unsigned long long push, ring, origin_bits, workflow_id;
    unsigned int rank;
    int capture_args;
    Py_ssize_t max_payload;
    PyObject *intern;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "KKKKIpnO:State", kwlist,
                                     &push, &ring, &origin_bits, &workflow_id,
                                     &rank, &capture_args, &max_payload,
                                     &intern))
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
    st->generation = ++g_generation;
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
static int enc_obj(fc_mp_buf *b, PyObject *o, int depth)
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
            if (!enc_obj(b, k, depth + 1) || !enc_obj(b, v, depth + 1))
                return 0;
        }
        return 1;
    }
    if (t == &PyTuple_Type) {
        Py_ssize_t n = PyTuple_GET_SIZE(o);
        if (!fc_mp_arr_hdr(b, (size_t)n))
            return 0;
        for (Py_ssize_t i = 0; i < n; i++)
            if (!enc_obj(b, PyTuple_GET_ITEM(o, i), depth + 1))
                return 0;
        return 1;
    }
    if (t == &PyList_Type) {
        Py_ssize_t n = PyList_GET_SIZE(o);
        if (!fc_mp_arr_hdr(b, (size_t)n))
            return 0;
        for (Py_ssize_t i = 0; i < n; i++)   /* no Python code runs here */
            if (!enc_obj(b, PyList_GET_ITEM(o, i), depth + 1))
                return 0;
        return 1;
    }
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
                    Py_ssize_t nargs, PyObject *kwnames)
{
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs == 0) {                       /* used = kwargs */
        if (!fc_mp_map_hdr(b, (size_t)nkw))
            return 0;
        for (Py_ssize_t i = 0; i < nkw; i++)
            if (!enc_str(b, PyTuple_GET_ITEM(kwnames, i)) ||
                !enc_obj(b, args[i], 1))
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
                !enc_obj(b, args[i], 1))
                return 0;
        for (Py_ssize_t i = 0; i < nkw; i++)
            if (!enc_str(b, PyTuple_GET_ITEM(kwnames, i)) ||
                !enc_obj(b, args[nargs + i], 1))
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
    int ok = enc_obj(b, used, 0);
    Py_DECREF(used);
    return ok;
}

static PyObject *g_str_used, *g_str_generated;

/* Whole payload of a call that returned: 1 encoded, 0 fall back, -1 error. */
static int enc_doc(TaskObject *w, fc_mp_buf *b, int want, PyObject *const *args,
                   Py_ssize_t nargs, PyObject *kwnames, PyObject *result)
{
    if (w->n_extra < 0)
        return 0;
    if (!want) {
        if (!fc_mp_map_hdr(b, (size_t)w->n_extra))
            return 0;
    } else {
        /* generated, as _generated(): kind 0 none, 1 {name: r},
         * 2 dict(zip(names, r)), 3 r itself, 4 {"return": r} */
        int kind;
        Py_ssize_t nout = w->outnames ? PyTuple_GET_SIZE(w->outnames) : 0;
        PyTypeObject *rt = Py_TYPE(result);
        if (nout && !w->outnames_fast)
            return 0;
        if (nout == 1)
            kind = 1;
        else if (nout && (rt == &PyTuple_Type || rt == &PyList_Type) &&
                 Py_SIZE(result) == nout)
            kind = 2;
        else if (nout && (PyTuple_Check(result) || PyList_Check(result)))
            return 0;   /* a tuple/list subclass: Python zips it */
        else if (result == Py_None)
            kind = 0;
        else if (PyDict_Check(result))
            kind = 3;
        else
            kind = 4;
        if (!fc_mp_map_hdr(b, (size_t)(1 + (kind != 0) + w->n_extra)))
            return 0;
        if (!enc_str(b, g_str_used))
            return 0;
        int u = enc_used(w, b, args, nargs, kwnames);
        if (u <= 0)
            return u;
        if (kind) {
            if (!enc_str(b, g_str_generated))
                return 0;
            switch (kind) {
            case 1:
                if (!fc_mp_map_hdr(b, 1) ||
                    !enc_str(b, PyTuple_GET_ITEM(w->outnames, 0)) ||
                    !enc_obj(b, result, 1))
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
                        !enc_obj(b, items[i], 1))
                        return 0;
                break;
            }
            case 3:
                if (!enc_obj(b, result, 0))
                    return 0;
                break;
            default:
                if (!fc_mp_map_hdr(b, 1) || !enc_str(b, g_str_return) ||
                    !enc_obj(b, result, 1))
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

    uint64_t parent = 0;
    PyObject *pv = NULL;
    if (PyContextVar_Get(g_var, NULL, &pv) < 0)
        goto uncaptured;
    if (pv != NULL) {
        if (PyLong_Check(pv)) {
            parent = PyLong_AsUnsignedLongLong(pv);
            if (parent == (uint64_t)-1 && PyErr_Occurred()) {
                PyErr_Clear();
                parent = 0;
            }
        }
        Py_DECREF(pv);
    }
    uint64_t tid = state_next_id(st);
    PyObject *tidobj = PyLong_FromUnsignedLongLong(tid);
    if (tidobj == NULL)
        goto uncaptured;
    PyObject *token = PyContextVar_Set(g_var, tidobj);
    Py_DECREF(tidobj);
    if (token == NULL)
        goto uncaptured;
    int64_t start = now_ns();
    PyObject *result = PyObject_Vectorcall(w->func, args, nargsf, kwnames);
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);

    if (result == NULL) {
        /* error: record through the Python path, then re-raise unchanged */
        saved_exc se;
        PyObject *exc = exc_save(&se);
        if (PyContextVar_Reset(g_var, token) < 0)
            PyErr_Clear();
        Py_DECREF(token);
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

    if (PyContextVar_Reset(g_var, token) < 0)
        PyErr_Clear();
    Py_DECREF(token);
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
    int ok = enc_doc(w, &b, want, args, nargs, kwnames, result);
    if (ok > 0) {
        data = b.p;
        len = b.len;
    } else {
        if (ok < 0)   /* e.g. a signature that would not bind: Python decides */
            PyErr_Clear();
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

static PyObject *mod_encode(PyObject *Py_UNUSED(m), PyObject *o)
{
    /* The C encoder alone (tests): bytes, or None where it defers. */
    fc_mp_buf b;
    fc_mp_init(&b, (size_t)PY_SSIZE_T_MAX);
    PyObject *r;
    if (enc_obj(&b, o, 0))
        r = PyBytes_FromStringAndSize(b.p, (Py_ssize_t)b.len);
    else
        r = Py_NewRef(Py_None);
    fc_mp_free(&b);
    return r;
}

static PyMethodDef mod_methods[] = {
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
    {"encode", mod_encode, METH_O,
     "msgpack bytes of a value by the C encoder, or None where it defers."},
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
