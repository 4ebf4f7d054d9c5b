/* Arrays through the buffer protocol for the C kernels (no numpy build dependency): a view of
 * a given number of dimensions and one-character format, released on every path. */
#ifndef REDIS_CONSUMER_BUFFERS_H
#define REDIS_CONSUMER_BUFFERS_H
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    Py_buffer view;
    int held;
} Buf;

static void buf_release(Buf *b) {
    if (b->held) {
        PyBuffer_Release(&b->view);
        b->held = 0;
    }
}

/* A buffer of `ndim` dimensions whose format is one of `formats` (single characters). */
static int buf_get(PyObject *obj, Buf *b, int ndim, const char *formats, int writable, int contiguous,
                   const char *name) {
    int flags = (contiguous ? PyBUF_C_CONTIGUOUS : PyBUF_STRIDES) | PyBUF_FORMAT;
    if (writable)
        flags |= PyBUF_WRITABLE;
    if (PyObject_GetBuffer(obj, &b->view, flags) < 0)
        return -1;
    b->held = 1;
    const char *f = b->view.format ? b->view.format : "B";
    if (*f == '=' || *f == '<' || *f == '@')
        f++;
    if (b->view.ndim != ndim || strlen(f) != 1 || !strchr(formats, *f)) {
        PyErr_Format(PyExc_ValueError, "%s: expected %d dimensions of format in '%s', got %d of '%s'", name,
                     ndim, formats, b->view.ndim, f);
        buf_release(b);
        return -1;
    }
    return 0;
}

static char buf_format(const Buf *b) {
    const char *f = b->view.format ? b->view.format : "B";
    if (*f == '=' || *f == '<' || *f == '@')
        f++;
    return *f;
}

#endif
