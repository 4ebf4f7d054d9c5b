/* The overlay PNG's outline pass (redis_consumer/utils/overlay.py `indexed_levels`).
 *
 * Built by the package's install step (setup.py). Integer compares only. Why C: the numpy
 * `outlines` made six boolean passes over 1 MB temporaries (two neighbour differences, four
 * or-ins, the `labels > 0` and the and) and a masked copy, ~0.9 ms per 1024 x 1024 overlay;
 * this is one pass reading three rows of labels. tests/test_overlay_png.py compares both paths.
 */
#include "_buffers.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__GLIBC__)
#define VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define VECTOR_CLONES
#endif

/* out[j] = value where cur[j] > 0 and a 4-neighbour differs: up[j], down[j] (the row itself
 * where there is none: never different), cur[j - 1], cur[j + 1] (inside the row). Branch-free
 * over the interior columns, so it vectorises. */
VECTOR_CLONES static void mark_row(const int32_t *restrict up, const int32_t *restrict cur,
                                   const int32_t *restrict down, Py_ssize_t w, uint8_t *restrict out,
                                   uint8_t value) {
    if (w == 1) {
        if (cur[0] > 0 && (up[0] != cur[0] || down[0] != cur[0]))
            out[0] = value;
        return;
    }
    {
        const int32_t l = cur[0];
        if (l > 0 && (up[0] != l || down[0] != l || cur[1] != l))
            out[0] = value;
    }
    for (Py_ssize_t j = 1; j < w - 1; j++) {
        const int32_t l = cur[j];
        const int edge = (l > 0) & ((up[j] != l) | (down[j] != l) | (cur[j - 1] != l) | (cur[j + 1] != l));
        out[j] = edge ? value : out[j];
    }
    {
        const int32_t l = cur[w - 1];
        if (l > 0 && (up[w - 1] != l || down[w - 1] != l || cur[w - 2] != l))
            out[w - 1] = value;
    }
}

/* mark_outlines(labels, index, value): index[i, j] = value on every object edge of labels
 * (label > 0 and a 4-neighbour's label differs), in place. labels: contiguous (H, W) int32;
 * index: (H, W) uint8 whose rows are contiguous (any row stride: the PNG's rows after their
 * filter byte). */
static PyObject *mark_outlines(PyObject *self, PyObject *args) {
    PyObject *labels_obj, *index_obj;
    unsigned char value;
    if (!PyArg_ParseTuple(args, "OOb", &labels_obj, &index_obj, &value))
        return NULL;
    Buf labels = {0}, index = {0};
    if (buf_get(labels_obj, &labels, 2, "i", 0, 1, "labels") < 0 || buf_get(index_obj, &index, 2, "B", 1, 0, "index") < 0)
        goto fail;
    const Py_ssize_t h = labels.view.shape[0], w = labels.view.shape[1];
    if (labels.view.itemsize != 4 || index.view.shape[0] != h || index.view.shape[1] != w ||
        (w > 1 && index.view.strides[1] != 1) || (h > 1 && index.view.strides[0] < w)) {
        PyErr_SetString(PyExc_ValueError, "mark_outlines: index does not match labels (rows must be contiguous)");
        goto fail;
    }
    const int32_t *src = labels.view.buf;
    char *dst = index.view.buf;
    const Py_ssize_t stride = index.view.strides[0];
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < h && w > 0; i++) {
        const int32_t *cur = src + i * w;
        mark_row(i > 0 ? cur - w : cur, cur, i + 1 < h ? cur + w : cur, w, (uint8_t *)(dst + i * stride), value);
    }
    Py_END_ALLOW_THREADS
    buf_release(&labels), buf_release(&index);
    Py_RETURN_NONE;
fail:
    buf_release(&labels), buf_release(&index);
    return NULL;
}

static PyMethodDef methods[] = {
    {"mark_outlines", mark_outlines, METH_VARARGS,
     "mark_outlines(labels, index, value): index = value on object edges of int32 labels, in place."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_overlay_kernels", "The overlay PNG's outline pass.",
                                    -1, methods};

PyMODINIT_FUNC PyInit__overlay_kernels(void) { return PyModule_Create(&module); }
