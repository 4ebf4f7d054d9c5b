/* untile's blend: the float64 weighted sum of overlapping tiles, one pass.
 *
 * Built by the package's install step (setup.py, -ffp-contract=off, no -ffast-math) so every
 * multiply and add is one IEEE operation in the order written here, which is the order of the
 * numpy code in tiling.py that these loops replace (its tests compare both paths bit for bit).
 * The Python callers check shapes and dtypes; these functions re-check what would make them
 * read or write out of bounds (tests/test_native_kernels.py).
 */
#include "_buffers.h"

/* x86-64 with GCC: an AVX2 clone picked at load time where the CPU has it, else the baseline code */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__GLIBC__)
#define VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define VECTOR_CLONES
#endif

/* a[j] += (double)r[j] * (wxv * wy[j]): one contiguous float32 tile row into the float64 sums
 * (the general loop below, for contiguous rows; vectorised, the same IEEE operations) */
static VECTOR_CLONES void blend_row_f32(double *restrict a, const float *restrict r, const double *restrict wy,
                                        double wxv, Py_ssize_t len) {
    for (Py_ssize_t j = 0; j < len; j++) {
        const double wv = wxv * wy[j];
        a[j] += (double)r[j] * wv;
    }
}

/* o[i] = (float)acc[i] */
static VECTOR_CLONES void store_row_f32(float *restrict o, const double *restrict acc, Py_ssize_t len) {
    for (Py_ssize_t i = 0; i < len; i++)
        o[i] = (float)acc[i];
}

/* ---- untile: the float64 weighted sum of tiles (tiling.untile_canvas's arithmetic) -------------
 *
 * tiles (N, Tx, Ty, K), any strides, float32 or float64; the N tiles are the full
 * batch x rows x columns grid in that order, row ix starting at x_starts[ix] and column iy at
 * y_starts[iy] of the padded image. out (B, X, Y, K), C-contiguous, the tiles' dtype, is the
 * padded image from (xl, yl) on. Each output value is
 * (out dtype)(0.0 + t_1 * w_1 + t_2 * w_2 + ...) over the tiles covering it in tile order, each
 * term float64(t) * (wx[ix][x] * wy[iy][y]) in float64: the canvas' sum, without the canvas. */
static PyObject *untile_blend(PyObject *self, PyObject *args) {
    PyObject *tiles_obj, *out_obj, *xs_obj, *ys_obj, *wx_obj, *wy_obj;
    Py_ssize_t xl, yl;
    if (!PyArg_ParseTuple(args, "OOOOOOnn", &tiles_obj, &out_obj, &xs_obj, &ys_obj, &wx_obj, &wy_obj, &xl, &yl))
        return NULL;
    Buf tiles = {0}, out = {0}, xs = {0}, ys = {0}, wx = {0}, wy = {0};
    double *acc = NULL;
    float *gathered = NULL; /* one tile row of a strided one-channel head */
    if (buf_get(tiles_obj, &tiles, 4, "fd", 0, 0, "tiles") < 0 || buf_get(out_obj, &out, 4, "fd", 1, 1, "out") < 0 ||
        buf_get(xs_obj, &xs, 1, "lq", 0, 1, "x_starts") < 0 || buf_get(ys_obj, &ys, 1, "lq", 0, 1, "y_starts") < 0 ||
        buf_get(wx_obj, &wx, 2, "d", 0, 1, "wx") < 0 || buf_get(wy_obj, &wy, 2, "d", 0, 1, "wy") < 0)
        goto fail;
    const char f = buf_format(&tiles);
    const Py_ssize_t n = tiles.view.shape[0], tx = tiles.view.shape[1], ty = tiles.view.shape[2];
    const Py_ssize_t k = tiles.view.shape[3];
    const Py_ssize_t b = out.view.shape[0], ox = out.view.shape[1], oy = out.view.shape[2];
    const Py_ssize_t nx = xs.view.shape[0], ny = ys.view.shape[0];
    const int64_t *x0 = xs.view.buf, *y0 = ys.view.buf;
    int ok = xs.view.itemsize == 8 && ys.view.itemsize == 8 && buf_format(&out) == f && out.view.shape[3] == k &&
             n == b * nx * ny && wx.view.shape[0] == nx && wx.view.shape[1] == tx && wy.view.shape[0] == ny &&
             wy.view.shape[1] == ty && xl >= 0 && yl >= 0;
    for (Py_ssize_t i = 0; ok && i < nx; i++)
        ok = x0[i] >= 0;
    for (Py_ssize_t i = 0; ok && i < ny; i++)
        ok = y0[i] >= 0;
    if (!ok) {
        PyErr_SetString(PyExc_ValueError, "untile_blend: shapes do not fit");
        goto fail;
    }
    if (ox * oy * k == 0 || b == 0)
        goto done;
    acc = PyMem_Malloc(sizeof(double) * oy * k);
    gathered = PyMem_Malloc(sizeof(float) * (ty > 0 ? ty : 1));
    if (!acc || !gathered) {
        PyErr_NoMemory();
        goto fail;
    }
    Py_BEGIN_ALLOW_THREADS
    const Py_ssize_t sn = tiles.view.strides[0], sx = tiles.view.strides[1];
    const Py_ssize_t sy = tiles.view.strides[2], sk = tiles.view.strides[3];
    const double *wxp = wx.view.buf, *wyp = wy.view.buf;
    const char *src = tiles.view.buf;
    for (Py_ssize_t bi = 0; bi < b; bi++) {
        for (Py_ssize_t x = 0; x < ox; x++) {
            const Py_ssize_t px = x + xl;
            for (Py_ssize_t i = 0; i < oy * k; i++)
                acc[i] = 0.0;
            for (Py_ssize_t ix = 0; ix < nx; ix++) {
                const Py_ssize_t u = px - x0[ix];
                if (u < 0 || u >= tx)
                    continue;
                const double wxv = wxp[ix * tx + u];
                for (Py_ssize_t iy = 0; iy < ny; iy++) {
                    /* output columns [ja, jb) lie in this tile: padded y0[iy] .. y0[iy] + ty */
                    Py_ssize_t ja = y0[iy] - yl, jb = y0[iy] + ty - yl;
                    ja = ja < 0 ? 0 : ja;
                    jb = jb > oy ? oy : jb;
                    if (ja >= jb)
                        continue;
                    const Py_ssize_t t0 = ja + yl - y0[iy];
                    const double *wyr = wyp + iy * ty + t0;
                    const char *row = src + (bi * nx * ny + ix * ny + iy) * sn + u * sx + t0 * sy;
                    double *a = acc + ja * k;
                    const Py_ssize_t len = jb - ja;
                    if (f == 'f' && k == 1 && sy == (Py_ssize_t)sizeof(float)) {
                        /* contiguous row (every one-channel head): the same operations, which the
                         * compiler can now do two or four at a time */
                        blend_row_f32(a, (const float *)row, wyr, wxv, len);
                    } else if (f == 'f' && k == 1) {
                        /* one channel of a wider head (Mesmer's pixelwise interior): the row's
                         * values gathered first, then the vectorised sums of a contiguous row */
                        for (Py_ssize_t j = 0; j < len; j++)
                            gathered[j] = *(const float *)(row + j * sy);
                        blend_row_f32(a, gathered, wyr, wxv, len);
                    } else {
                        for (Py_ssize_t j = 0; j < len; j++) {
                            const double wv = wxv * wyr[j];
                            const char *p = row + j * sy;
                            for (Py_ssize_t c = 0; c < k; c++) {
                                const double t = f == 'f' ? (double)*(const float *)(p + c * sk)
                                                          : *(const double *)(p + c * sk);
                                a[j * k + c] += t * wv;
                            }
                        }
                    }
                }
            }
            char *o = (char *)out.view.buf + ((bi * ox + x) * oy * k) * out.view.itemsize;
            if (f == 'f')
                store_row_f32((float *)o, acc, oy * k);
            else
                memcpy(o, acc, sizeof(double) * oy * k);
        }
    }
    Py_END_ALLOW_THREADS
done:
    PyMem_Free(acc);
    PyMem_Free(gathered);
    buf_release(&tiles), buf_release(&out), buf_release(&xs), buf_release(&ys), buf_release(&wx), buf_release(&wy);
    Py_RETURN_NONE;
fail:
    PyMem_Free(acc);
    PyMem_Free(gathered);
    buf_release(&tiles), buf_release(&out), buf_release(&xs), buf_release(&ys), buf_release(&wx), buf_release(&wy);
    return NULL;
}

static PyMethodDef methods[] = {
    {"untile_blend", untile_blend, METH_VARARGS,
     "untile_blend(tiles, out, x_starts, y_starts, wx, wy, xl, yl): the float64 weighted tile sum."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_untile_kernels", "untile's blending loop.", -1,
                                    methods};

PyMODINIT_FUNC PyInit__untile_kernels(void) { return PyModule_Create(&module); }
