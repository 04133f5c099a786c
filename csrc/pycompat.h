/*
 * pycompat.h -- CPython version shims for pycapture.c (3.8 .. 3.13):
 * Py_NewRef, the vectorcall names, and saving/restoring/chaining the
 * raised exception across the 3.12 API change.  Include after Python.h.
 */
#ifndef FC_PYCOMPAT_H
#define FC_PYCOMPAT_H

#include <Python.h>

#if PY_VERSION_HEX < 0x030A0000
static inline PyObject *fc_newref(PyObject *o)
{
    Py_INCREF(o);
    return o;
}
#define Py_NewRef fc_newref
#endif

#if PY_VERSION_HEX < 0x03090000
#define PyObject_Vectorcall _PyObject_Vectorcall
#define Py_TPFLAGS_HAVE_VECTORCALL _Py_TPFLAGS_HAVE_VECTORCALL
static inline PyObject *PyObject_CallNoArgs(PyObject *f)
{
    return _PyObject_Vectorcall(f, NULL, 0, NULL);
}
static inline PyObject *PyObject_CallOneArg(PyObject *f, PyObject *a)
{
    return _PyObject_Vectorcall(f, &a, 1, NULL);
}
#endif

/* ------------------------------------------------------------------ */
/* Exceptions: save/restore across 3.9 .. 3.13                          */
/* ------------------------------------------------------------------ */

typedef struct {
#if PY_VERSION_HEX >= 0x030C0000
    PyObject *exc;
#else
    PyObject *type, *value, *tb;
#endif
} saved_exc;

/* Takes the raised exception (normalized); returns its value (borrowed). */
static PyObject *exc_save(saved_exc *s)
{
#if PY_VERSION_HEX >= 0x030C0000
    s->exc = PyErr_GetRaisedException();
    return s->exc;
#else
    PyErr_Fetch(&s->type, &s->value, &s->tb);
    PyErr_NormalizeException(&s->type, &s->value, &s->tb);
    if (s->tb != NULL && s->value != NULL)
        PyException_SetTraceback(s->value, s->tb);
    return s->value;
#endif
}

static void exc_restore(saved_exc *s)
{
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(s->exc);
#else
    PyErr_Restore(s->type, s->value, s->tb);
#endif
}

/* A new exception is set and the saved one (owned by s) happened first:
 * make the saved one its __context__, as `raise` in an except block does. */
static void exc_chain(saved_exc *s)
{
#if PY_VERSION_HEX >= 0x030C0000
    PyObject *now = PyErr_GetRaisedException();
    if (now != NULL && s->exc != NULL && now != s->exc)
        PyException_SetContext(now, s->exc);   /* steals */
    else
        Py_XDECREF(s->exc);
    PyErr_SetRaisedException(now);
#else
    PyObject *t, *v, *tb;
    PyErr_Fetch(&t, &v, &tb);
    PyErr_NormalizeException(&t, &v, &tb);
    if (v != NULL && s->value != NULL && v != s->value) {
        PyException_SetContext(v, s->value);   /* steals */
        s->value = NULL;
    }
    Py_XDECREF(s->type);
    Py_XDECREF(s->value);
    Py_XDECREF(s->tb);
    PyErr_Restore(t, v, tb);
#endif
}

#endif /* FC_PYCOMPAT_H */
