/* CLAHE's per-pixel loops: the bilinear mapping, bins, region histograms, clip, rescale.
 *
 * Built by the package's install step (setup.py, -ffp-contract=off, no -ffast-math) so every
 * multiply and add is one IEEE operation in the order written here, which is the order of the
 * numpy code in clahe.py that these loops replace (its tests compare both paths bit for bit).
 * The Python callers check shapes and dtypes; these functions re-check what would make them
 * read or write out of bounds (tests/test_native_kernels.py).
 */
#include "_buffers.h"

/* x86-64 with GCC: an AVX2 clone picked at load time where the CPU has it (gathers, 4 doubles
 * a step; the same IEEE operations in the same order), else the baseline SSE2 code */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__GLIBC__)
#define VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define VECTOR_CLONES
#endif

/* One run of `len` pixels inside one processing block: bins `b`, maps a/b (top edge, left and
 * right) and c/d (bottom edge), the four weights per pixel phase from `w` on (w00, w01, w10,
 * w11 arrays of the block width). No bounds test (the caller checked every bin), so it vectorises;
 * returns the run's min and max grey through lo/hi. */
#define MAP_RUN(NAME, T)                                                                              \
    VECTOR_CLONES static void NAME(const T *restrict bins, Py_ssize_t len, const double *restrict ma,  \
                                   const double *restrict mb, const double *restrict mc,             \
                                   const double *restrict md, const double *restrict w00,            \
                                   const double *restrict w01, const double *restrict w10,           \
                                   const double *restrict w11, uint16_t *restrict out, int32_t *lo,  \
                                   int32_t *hi) {                                                    \
        int32_t mn = *lo, mx = *hi;                                                                  \
        for (Py_ssize_t q = 0; q < len; q++) {                                                       \
            const Py_ssize_t i = bins[q];                                                            \
            float acc = (float)(ma[i] * w00[q]);                                                     \
            acc += (float)(mb[i] * w01[q]);                                                          \
            acc += (float)(mc[i] * w10[q]);                                                          \
            acc += (float)(md[i] * w11[q]);                                                          \
            const int32_t g = (int32_t)(uint16_t)(int32_t)acc;                                       \
            out[q] = (uint16_t)g;                                                                    \
            mn = g < mn ? g : mn;                                                                    \
            mx = g > mx ? g : mx;                                                                    \
        }                                                                                            \
        *lo = mn, *hi = mx;                                                                          \
    }
MAP_RUN(map_run_u8, uint8_t)
MAP_RUN(map_run_u16, uint16_t)

/* MAP_RUN over interleaved maps, 4 pixels a step in AVX2 where the CPU has it: quad[bin * 4 + e]
 * is edge e's map at `bin` for this block, wq[q * 4 + e] the pixel's weight for edge e, so each
 * pixel's four products are one 4-double multiply of two 32-byte reads (no gather); they are
 * rounded to float32 (round to nearest, as the C cast), transposed so each edge's terms of four
 * pixels share a register, and summed in edge order: the same IEEE operations as MAP_RUN. */
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_QUAD 1
#define QUAD_RUN(NAME, T)                                                                             \
    __attribute__((target("avx2"))) static void NAME(const T *restrict bins, Py_ssize_t len,         \
                                                     const double *restrict quad,                    \
                                                     const double *restrict wq, uint16_t *restrict out, \
                                                     int32_t *lo, int32_t *hi) {                     \
        __m128i vmn = _mm_set1_epi32(*lo), vmx = _mm_set1_epi32(*hi);                                \
        Py_ssize_t q = 0;                                                                            \
        for (; q + 4 <= len; q += 4) {                                                               \
            __m128 f0 = _mm256_cvtpd_ps(_mm256_mul_pd(_mm256_loadu_pd(quad + 4 * (Py_ssize_t)bins[q]),     \
                                                      _mm256_loadu_pd(wq + 4 * q)));                 \
            __m128 f1 = _mm256_cvtpd_ps(_mm256_mul_pd(_mm256_loadu_pd(quad + 4 * (Py_ssize_t)bins[q + 1]), \
                                                      _mm256_loadu_pd(wq + 4 * q + 4)));             \
            __m128 f2 = _mm256_cvtpd_ps(_mm256_mul_pd(_mm256_loadu_pd(quad + 4 * (Py_ssize_t)bins[q + 2]), \
                                                      _mm256_loadu_pd(wq + 4 * q + 8)));             \
            __m128 f3 = _mm256_cvtpd_ps(_mm256_mul_pd(_mm256_loadu_pd(quad + 4 * (Py_ssize_t)bins[q + 3]), \
                                                      _mm256_loadu_pd(wq + 4 * q + 12)));            \
            _MM_TRANSPOSE4_PS(f0, f1, f2, f3);                                                       \
            __m128 acc = _mm_add_ps(f0, f1);                                                         \
            acc = _mm_add_ps(acc, f2);                                                               \
            acc = _mm_add_ps(acc, f3);                                                               \
            __m128i g = _mm_cvttps_epi32(acc);                                                       \
            g = _mm_and_si128(g, _mm_set1_epi32(0xFFFF)); /* (uint16_t) of the int32 */             \
            vmn = _mm_min_epi32(vmn, g), vmx = _mm_max_epi32(vmx, g);                                \
            _mm_storel_epi64((__m128i *)(out + q), _mm_packus_epi32(g, g));                          \
        }                                                                                            \
        int32_t mn[4], mx[4];                                                                        \
        _mm_storeu_si128((__m128i *)mn, vmn), _mm_storeu_si128((__m128i *)mx, vmx);                  \
        int32_t l = mn[0], h = mx[0];                                                                \
        for (int i = 1; i < 4; i++)                                                                  \
            l = mn[i] < l ? mn[i] : l, h = mx[i] > h ? mx[i] : h;                                    \
        for (; q < len; q++) {                                                                       \
            const double *m = quad + 4 * (Py_ssize_t)bins[q], *x = wq + 4 * q;                       \
            float acc = (float)(m[0] * x[0]);                                                        \
            acc += (float)(m[1] * x[1]);                                                             \
            acc += (float)(m[2] * x[2]);                                                             \
            acc += (float)(m[3] * x[3]);                                                             \
            const int32_t g = (int32_t)(uint16_t)(int32_t)acc;                                       \
            out[q] = (uint16_t)g;                                                                    \
            l = g < l ? g : l, h = g > h ? g : h;                                                    \
        }                                                                                            \
        *lo = l, *hi = h;                                                                            \
    }
QUAD_RUN(quad_run_u8, uint8_t)
QUAD_RUN(quad_run_u16, uint16_t)
#else
#define HAVE_QUAD 0
#endif
#define QUAD_BYTES_MAX ((Py_ssize_t)8 << 20) /* interleaved maps of one block row at most this */

/* ---- CLAHE: skimage's bilinear mapping (skimage/exposure/_adapthist.py `_clahe`) ---------------
 *
 * For pixel (r, c) of the image, its processing block (r + k0/2) / k0 and phase (r + k0/2) % k0
 * along rows (likewise columns), the y weight fy = phase / k0 and the x weight fx; each of the
 * four neighbouring region maps m (edge (e0, e1), edge-padded maps) contributes
 * float32(m * (wx * wy)) with wx in {1 - fx, fx}, wy in {1 - fy, fy}, the products in float64;
 * the four terms are summed in float32 in edge order (0,0), (0,1), (1,0), (1,1), and the sum is
 * truncated to the integer grey level (skimage starts the sum from zero: 0 + x is x for the
 * non-negative terms here, and the truncation of +0 and -0 is the same). The weight products
 * depend only on the pixel's row and column phase, so they are formed once per row and phase
 * (k1 of them, not w), the same products. */
static PyObject *clahe_map(PyObject *self, PyObject *args) {
    PyObject *bins_obj, *maps_obj, *out_obj;
    Py_ssize_t k0, k1;
    int vector = 1; /* 0: the scalar loop only (the tests compare both) */
    if (!PyArg_ParseTuple(args, "OOnnO|p", &bins_obj, &maps_obj, &k0, &k1, &out_obj, &vector))
        return NULL;
    Buf bins = {0}, maps = {0}, out = {0};
    if (buf_get(bins_obj, &bins, 2, "BH", 0, 1, "bins") < 0 || buf_get(maps_obj, &maps, 3, "d", 0, 1, "maps") < 0 ||
        buf_get(out_obj, &out, 2, "H", 1, 1, "out") < 0)
        goto fail;
    const Py_ssize_t h = bins.view.shape[0], w = bins.view.shape[1];
    const Py_ssize_t m0 = maps.view.shape[0], m1 = maps.view.shape[1], nbins = maps.view.shape[2];
    if (out.view.shape[0] != h || out.view.shape[1] != w || k0 < 1 || k1 < 1 ||
        m0 < (h - 1 + k0 / 2) / k0 + 2 || m1 < (w - 1 + k1 / 2) / k1 + 2) {
        PyErr_SetString(PyExc_ValueError, "clahe_map: shapes do not fit the kernel");
        goto fail;
    }
    const int wide = buf_format(&bins) == 'H';
    const uint8_t *b8 = bins.view.buf;
    const uint16_t *b16 = bins.view.buf;
    const double *mp = maps.view.buf;
    uint16_t *dst = out.view.buf;
    int32_t lo = 0xFFFF, hi = 0;
    int bad = 0;
    double *wts = NULL, *quad = NULL;
    const Py_ssize_t ncb = w > 0 ? (w - 1 + k1 / 2) / k1 + 1 : 0; /* column blocks the image touches */
    int interleave = 0;
#if HAVE_QUAD
    interleave = vector && ncb > 0 && nbins > 0 && ncb * nbins <= QUAD_BYTES_MAX / 32 && __builtin_cpu_supports("avx2");
#endif
    if (w > 0 && (!(wts = PyMem_Malloc(sizeof(double) * 10 * k1)) ||
                  (interleave && !(quad = PyMem_Malloc(sizeof(double) * 4 * ncb * nbins))))) {
        PyMem_Free(wts);
        PyErr_NoMemory();
        goto fail;
    }
    Py_BEGIN_ALLOW_THREADS
    /* every bin below nbins first: the mapping loop then reads the maps unchecked */
    const Py_ssize_t n = h * w;
    if (wide) {
        uint16_t top = 0;
        for (Py_ssize_t i = 0; i < n; i++)
            top = b16[i] > top ? b16[i] : top;
        bad = n > 0 && top >= nbins;
    } else {
        uint8_t top = 0;
        for (Py_ssize_t i = 0; i < n; i++)
            top = b8[i] > top ? b8[i] : top;
        bad = n > 0 && top >= nbins;
    }
    const Py_ssize_t p0 = k0 / 2, p1 = k1 / 2;
    double *wx0 = wts, *wx1 = wts + k1, *w00 = wts + 2 * k1, *w01 = wts + 3 * k1, *w10 = wts + 4 * k1,
           *w11 = wts + 5 * k1;
    for (Py_ssize_t j = 0; j < k1 && w > 0; j++) {
        const double fx = (double)j / (double)k1;
        wx0[j] = 1.0 - fx;
        wx1[j] = fx;
    }
    double *wq = wts + 6 * k1; /* 4 weights per phase, interleaved (k1 x 4) */
    Py_ssize_t filled = -1;     /* the block row `quad` holds */
    for (Py_ssize_t r = 0; r < h && !bad; r++) {
        const Py_ssize_t row = r + p0, block = row / k0;
        const double fy = (double)(row % k0) / (double)k0, wy0 = 1.0 - fy, wy1 = fy;
        if (interleave)
            for (Py_ssize_t j = 0; j < k1; j++)
                wq[4 * j] = wx0[j] * wy0, wq[4 * j + 1] = wx1[j] * wy0, wq[4 * j + 2] = wx0[j] * wy1,
                wq[4 * j + 3] = wx1[j] * wy1;
        else
            for (Py_ssize_t j = 0; j < k1; j++)
                w00[j] = wx0[j] * wy0, w01[j] = wx1[j] * wy0, w10[j] = wx0[j] * wy1, w11[j] = wx1[j] * wy1;
        const double *top = mp + block * m1 * nbins, *bottom = top + m1 * nbins;
        if (interleave && filled != block) {
            for (Py_ssize_t cb = 0; cb < ncb; cb++)
                for (Py_ssize_t v = 0; v < nbins; v++) {
                    double *d = quad + (cb * nbins + v) * 4;
                    d[0] = top[cb * nbins + v], d[1] = top[(cb + 1) * nbins + v];
                    d[2] = bottom[cb * nbins + v], d[3] = bottom[(cb + 1) * nbins + v];
                }
            filled = block;
        }
        uint16_t *o = dst + r * w;
        for (Py_ssize_t c = 0; c < w;) {
            const Py_ssize_t col = c + p1, cb = col / k1, j = col % k1;
            const Py_ssize_t len = (k1 - j) < (w - c) ? (k1 - j) : (w - c);
            const double *ma = top + cb * nbins, *mc = bottom + cb * nbins;
#if HAVE_QUAD
            if (interleave && wide)
                quad_run_u16(b16 + r * w + c, len, quad + cb * nbins * 4, wq + 4 * j, o + c, &lo, &hi);
            else if (interleave)
                quad_run_u8(b8 + r * w + c, len, quad + cb * nbins * 4, wq + 4 * j, o + c, &lo, &hi);
            else
#endif
            if (wide)
                map_run_u16(b16 + r * w + c, len, ma, ma + nbins, mc, mc + nbins, w00 + j, w01 + j, w10 + j,
                            w11 + j, o + c, &lo, &hi);
            else
                map_run_u8(b8 + r * w + c, len, ma, ma + nbins, mc, mc + nbins, w00 + j, w01 + j, w10 + j,
                           w11 + j, o + c, &lo, &hi);
            c += len;
        }
    }
    Py_END_ALLOW_THREADS
    PyMem_Free(wts), PyMem_Free(quad);
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "clahe_map: a bin is out of range");
        goto fail;
    }
    buf_release(&bins), buf_release(&maps), buf_release(&out);
    return Py_BuildValue("II", h && w ? (unsigned)lo : 0u, (unsigned)hi);
fail:
    buf_release(&bins), buf_release(&maps), buf_release(&out);
    return NULL;
}

/* The largest of n > 0 uint16 values (one vectorised pass: the lookups' bounds check). */
VECTOR_CLONES static uint16_t max_u16(const uint16_t *restrict v, Py_ssize_t n) {
    uint16_t top = 0;
    for (Py_ssize_t i = 0; i < n; i++)
        top = v[i] > top ? v[i] : top;
    return top;
}

/* out[i, j] = table[index[i, j]]: a contiguous uint16 index, a float table, a strided float out. */
static PyObject *lookup(PyObject *self, PyObject *args) {
    PyObject *index_obj, *table_obj, *out_obj;
    if (!PyArg_ParseTuple(args, "OOO", &index_obj, &table_obj, &out_obj))
        return NULL;
    Buf index = {0}, table = {0}, out = {0};
    if (buf_get(index_obj, &index, 2, "H", 0, 1, "index") < 0 || buf_get(table_obj, &table, 1, "fd", 0, 1, "table") < 0 ||
        buf_get(out_obj, &out, 2, "fd", 1, 0, "out") < 0)
        goto fail;
    const char f = buf_format(&table);
    const Py_ssize_t h = index.view.shape[0], w = index.view.shape[1], n = table.view.shape[0];
    if (buf_format(&out) != f || out.view.shape[0] != h || out.view.shape[1] != w) {
        PyErr_SetString(PyExc_ValueError, "lookup: out does not match the index and table");
        goto fail;
    }
    const uint16_t *src = index.view.buf;
    const Py_ssize_t s0 = out.view.strides[0], s1 = out.view.strides[1];
    char *base = out.view.buf;
    int bad = 0;
    Py_BEGIN_ALLOW_THREADS
    bad = h * w > 0 && max_u16(src, h * w) >= n; /* every index checked once, before any write */
    for (Py_ssize_t i = 0; i < h && !bad; i++) {
        const uint16_t *row = src + i * w;
        char *o = base + i * s0;
        if (f == 'f') {
            const float *t = table.view.buf;
            if (s1 == sizeof(float))
                for (Py_ssize_t j = 0; j < w; j++)
                    ((float *)o)[j] = t[row[j]];
            else
                for (Py_ssize_t j = 0; j < w; j++)
                    *(float *)(o + j * s1) = t[row[j]];
        } else {
            const double *t = table.view.buf;
            for (Py_ssize_t j = 0; j < w; j++)
                *(double *)(o + j * s1) = t[row[j]];
        }
    }
    Py_END_ALLOW_THREADS
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "lookup: an index is out of range");
        goto fail;
    }
    buf_release(&index), buf_release(&table), buf_release(&out);
    Py_RETURN_NONE;
fail:
    buf_release(&index), buf_release(&table), buf_release(&out);
    return NULL;
}

/* out[i, j, c] = table_c[index_c[i, j]] for the two channels of an (X, Y, 2) float32 `out`
 * (any strides): `lookup` of both planes in one pass, so each output line is written once (two
 * strided passes wrote every line twice: ~1.8 ms per 1024 x 1024 plane against ~0.7 contiguous).
 * index_c: contiguous uint16 (X, Y); table_c: contiguous float32, every index below its length. */
static PyObject *lookup2(PyObject *self, PyObject *args) {
    PyObject *i0_obj, *t0_obj, *i1_obj, *t1_obj, *out_obj;
    if (!PyArg_ParseTuple(args, "OOOOO", &i0_obj, &t0_obj, &i1_obj, &t1_obj, &out_obj))
        return NULL;
    Buf i0 = {0}, t0 = {0}, i1 = {0}, t1 = {0}, out = {0};
    if (buf_get(i0_obj, &i0, 2, "H", 0, 1, "index0") < 0 || buf_get(t0_obj, &t0, 1, "f", 0, 1, "table0") < 0 ||
        buf_get(i1_obj, &i1, 2, "H", 0, 1, "index1") < 0 || buf_get(t1_obj, &t1, 1, "f", 0, 1, "table1") < 0 ||
        buf_get(out_obj, &out, 3, "f", 1, 0, "out") < 0)
        goto fail;
    const Py_ssize_t h = i0.view.shape[0], w = i0.view.shape[1];
    if (i1.view.shape[0] != h || i1.view.shape[1] != w || out.view.shape[0] != h || out.view.shape[1] != w ||
        out.view.shape[2] != 2) {
        PyErr_SetString(PyExc_ValueError, "lookup2: out does not match the indices");
        goto fail;
    }
    const uint16_t *a = i0.view.buf, *b = i1.view.buf;
    const Py_ssize_t n0 = t0.view.shape[0], n1 = t1.view.shape[0];
    const int bad = h * w > 0 && (max_u16(a, h * w) >= n0 || max_u16(b, h * w) >= n1);
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "lookup2: an index is out of range");
        goto fail;
    }
    Py_BEGIN_ALLOW_THREADS
    const float *ta = t0.view.buf, *tb = t1.view.buf;
    const Py_ssize_t s0 = out.view.strides[0], s1 = out.view.strides[1], s2 = out.view.strides[2];
    for (Py_ssize_t i = 0; i < h; i++) {
        char *o = (char *)out.view.buf + i * s0;
        const uint16_t *ra = a + i * w, *rb = b + i * w;
        if (s1 == 2 * sizeof(float) && s2 == sizeof(float))
            for (Py_ssize_t j = 0; j < w; j++) {
                ((float *)o)[2 * j] = ta[ra[j]];
                ((float *)o)[2 * j + 1] = tb[rb[j]];
            }
        else
            for (Py_ssize_t j = 0; j < w; j++) {
                *(float *)(o + j * s1) = ta[ra[j]];
                *(float *)(o + j * s1 + s2) = tb[rb[j]];
            }
    }
    Py_END_ALLOW_THREADS
    buf_release(&i0), buf_release(&t0), buf_release(&i1), buf_release(&t1), buf_release(&out);
    Py_RETURN_NONE;
fail:
    buf_release(&i0), buf_release(&t0), buf_release(&i1), buf_release(&t1), buf_release(&out);
    return NULL;
}

/* The largest of a row's `w` uint16 values `step` elements apart (the bounds check of a strided gather). */
VECTOR_CLONES static uint16_t max_u16_step(const uint16_t *restrict v, Py_ssize_t step, Py_ssize_t w) {
    uint16_t top = 0;
    for (Py_ssize_t j = 0; j < w; j++)
        top = v[j * step] > top ? v[j * step] : top;
    return top;
}

/* bins[i, j] = table[values[i, j]] for a uint16 image (any strides: a channel of an (X, Y, C)
 * image too) and a uint8 table (CLAHE's bin of each grey value, the overlay's grey level); out
 * (X, Y) uint8, contiguous. Returns 0, or -1 when a value is past the table (a table of 65536
 * entries needs no check). */
static PyObject *gather_u8(PyObject *self, PyObject *args) {
    PyObject *values_obj, *table_obj, *out_obj;
    if (!PyArg_ParseTuple(args, "OOO", &values_obj, &table_obj, &out_obj))
        return NULL;
    Buf values = {0}, table = {0}, out = {0};
    if (buf_get(values_obj, &values, 2, "H", 0, 0, "values") < 0 || buf_get(table_obj, &table, 1, "B", 0, 1, "table") < 0 ||
        buf_get(out_obj, &out, 2, "B", 1, 1, "out") < 0)
        goto fail;
    const Py_ssize_t h = values.view.shape[0], w = values.view.shape[1], size = table.view.shape[0];
    const Py_ssize_t s0 = values.view.strides[0], s1 = values.view.strides[1];
    if (out.view.shape[0] != h || out.view.shape[1] != w) {
        PyErr_SetString(PyExc_ValueError, "gather_u8: out does not match values");
        goto fail;
    }
    const char *v = values.view.buf;
    const uint8_t *t = table.view.buf;
    uint8_t *o = out.view.buf;
    const int dense = s0 == w * (Py_ssize_t)sizeof(uint16_t) && s1 == (Py_ssize_t)sizeof(uint16_t) &&
                      (uintptr_t)v % sizeof(uint16_t) == 0;
    const int typed = (uintptr_t)v % sizeof(uint16_t) == 0 && s0 % (Py_ssize_t)sizeof(uint16_t) == 0 &&
                      s1 % (Py_ssize_t)sizeof(uint16_t) == 0;
    int bad = 0;
    Py_BEGIN_ALLOW_THREADS
    if (size < 65536 && h * w > 0) { /* every value checked once, before any write */
        if (dense) {
            bad = max_u16((const uint16_t *)v, h * w) >= size;
        } else {
            uint16_t top = 0;
            for (Py_ssize_t i = 0; i < h; i++) {
                const char *row = v + i * s0;
                for (Py_ssize_t j = 0; j < w && !typed; j++) {
                    uint16_t u;
                    memcpy(&u, row + j * s1, sizeof(uint16_t));
                    top = u > top ? u : top;
                }
                if (typed) {
                    const uint16_t m = max_u16_step((const uint16_t *)row, s1 / (Py_ssize_t)sizeof(uint16_t), w);
                    top = m > top ? m : top;
                }
            }
            bad = top >= size;
        }
    }
    if (dense) {
        const uint16_t *src = (const uint16_t *)v;
        for (Py_ssize_t i = 0; i < h * w && !bad; i++)
            o[i] = t[src[i]];
    } else {
        for (Py_ssize_t i = 0; i < h && !bad; i++) {
            const char *row = v + i * s0;
            uint8_t *dst = o + i * w;
            if (typed) {
                const uint16_t *r = (const uint16_t *)row;
                const Py_ssize_t step = s1 / (Py_ssize_t)sizeof(uint16_t);
                for (Py_ssize_t j = 0; j < w; j++)
                    dst[j] = t[r[j * step]];
            } else {
                for (Py_ssize_t j = 0; j < w; j++) {
                    uint16_t u;
                    memcpy(&u, row + j * s1, sizeof(uint16_t));
                    dst[j] = t[u];
                }
            }
        }
    }
    Py_END_ALLOW_THREADS
    buf_release(&values), buf_release(&table), buf_release(&out);
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "gather_u8: a value is past the table");
        return NULL;
    }
    Py_RETURN_NONE;
fail:
    buf_release(&values), buf_release(&table), buf_release(&out);
    return NULL;
}

/* hist[i0 * n1 + i1, bin] += 1 for every pixel of contextual region (i0, i1): the k0 x k1 block
 * of the (reflect-padded) uint8 bin image starting at (r0 + i0 * k0, c0 + i1 * k1), the origin
 * (r0, c0) being (k0 / 2, k1 / 2) unless given (0, 0: the unpadded image, when its regions need
 * no padding); hist is (n0 * n1, nbins) int64, zeroed by the caller. np.bincount of the same
 * index, in one pass. */
static PyObject *region_hist(PyObject *self, PyObject *args) {
    PyObject *bins_obj, *hist_obj;
    Py_ssize_t k0, k1, n0, n1, r0 = -1, c0 = -1;
    if (!PyArg_ParseTuple(args, "OnnnnO|nn", &bins_obj, &k0, &k1, &n0, &n1, &hist_obj, &r0, &c0))
        return NULL;
    Buf bins = {0}, hist = {0};
    if (buf_get(bins_obj, &bins, 2, "B", 0, 1, "bins") < 0 || buf_get(hist_obj, &hist, 2, "lq", 1, 1, "hist") < 0)
        goto fail;
    const Py_ssize_t h = bins.view.shape[0], w = bins.view.shape[1], nbins = hist.view.shape[1];
    r0 = r0 < 0 && k0 > 0 ? k0 / 2 : r0;
    c0 = c0 < 0 && k1 > 0 ? k1 / 2 : c0;
    if (hist.view.itemsize != 8 || hist.view.shape[0] != n0 * n1 || k0 < 1 || k1 < 1 || n0 < 0 || n1 < 0 ||
        r0 < 0 || c0 < 0 || r0 + n0 * k0 > h || c0 + n1 * k1 > w) {
        PyErr_SetString(PyExc_ValueError, "region_hist: shapes do not fit");
        goto fail;
    }
    const uint8_t *src = bins.view.buf;
    int64_t *counts = hist.view.buf;
    int bad = 0;
    /* four interleaved sub-histograms per region (a run of equal bins does not wait on one
     * counter), every bin value < 256 */
    int64_t *part = PyMem_Calloc(4 * 256, sizeof(int64_t));
    if (!part) {
        PyErr_NoMemory();
        goto fail;
    }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i0 = 0; i0 < n0; i0++)
        for (Py_ssize_t i1 = 0; i1 < n1; i1++) {
            for (Py_ssize_t r = r0 + i0 * k0; r < r0 + (i0 + 1) * k0; r++) {
                const uint8_t *cell = src + r * w + c0 + i1 * k1;
                Py_ssize_t c = 0;
                for (; c + 4 <= k1; c += 4) {
                    part[cell[c]]++;
                    part[256 + cell[c + 1]]++;
                    part[512 + cell[c + 2]]++;
                    part[768 + cell[c + 3]]++;
                }
                for (; c < k1; c++)
                    part[cell[c]]++;
            }
            int64_t *hrow = counts + (i0 * n1 + i1) * nbins;
            for (Py_ssize_t v = 0; v < 256; v++) {
                const int64_t total = part[v] + part[256 + v] + part[512 + v] + part[768 + v];
                if (v < nbins)
                    hrow[v] += total;
                else if (total)
                    bad = 1;
                part[v] = part[256 + v] = part[512 + v] = part[768 + v] = 0;
            }
        }
    Py_END_ALLOW_THREADS
    PyMem_Free(part);
    buf_release(&bins), buf_release(&hist);
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "region_hist: a bin is out of range");
        return NULL;
    }
    Py_RETURN_NONE;
fail:
    buf_release(&bins), buf_release(&hist);
    return NULL;
}

/* skimage's `clip_histogram` (skimage/exposure/_adapthist.py) on every row of an (R, nbins) int64
 * array, in place: clip at the limit, spread the excess evenly over the bins (those under
 * limit - increment take the increment, those between it and the limit are raised to the
 * limit), then place what is left one at a time: passes over start offsets 0, 1, ..., each
 * adding one to every step-th bin from the start that is under the limit, step being
 * max(1, bins under the limit // excess left) at that start, until no excess is left (it may
 * end below zero, as skimage's does) or a whole pass places nothing. */
static void clip_row(int64_t *hist, Py_ssize_t size, int64_t limit) {
    int64_t excess = 0;
    for (Py_ssize_t i = 0; i < size; i++)
        if (hist[i] > limit) {
            excess += hist[i] - limit;
            hist[i] = limit;
        }
    const int64_t incr = excess / size; /* excess >= 0: floor division as numpy's // */
    const int64_t upper = limit - incr;
    for (Py_ssize_t i = 0; i < size; i++)
        if (hist[i] < upper) {
            excess -= incr;
            hist[i] += incr;
        }
    for (Py_ssize_t i = 0; i < size; i++)
        if (hist[i] >= upper && hist[i] < limit) {
            excess += hist[i] - limit;
            hist[i] = limit;
        }
    while (excess > 0) {
        const int64_t before = excess;
        for (Py_ssize_t start = 0; start < size; start++) {
            int64_t under = 0;
            for (Py_ssize_t i = 0; i < size; i++)
                under += hist[i] < limit;
            int64_t step = under / excess;
            step = step < 1 ? 1 : step;
            int64_t placed = 0;
            for (Py_ssize_t i = start; i < size; i += step)
                if (hist[i] < limit) {
                    hist[i]++;
                    placed++;
                }
            excess -= placed;
            if (excess <= 0)
                break;
        }
        if (before == excess)
            break;
    }
}

static PyObject *clip_histograms(PyObject *self, PyObject *args) {
    PyObject *hist_obj;
    long long limit;
    if (!PyArg_ParseTuple(args, "OL", &hist_obj, &limit))
        return NULL;
    Buf hist = {0};
    if (buf_get(hist_obj, &hist, 2, "lq", 1, 1, "hist") < 0)
        return NULL;
    if (hist.view.itemsize != 8) {
        PyErr_SetString(PyExc_ValueError, "clip_histograms: int64 expected");
        buf_release(&hist);
        return NULL;
    }
    const Py_ssize_t rows = hist.view.shape[0], size = hist.view.shape[1];
    int64_t *data = hist.view.buf;
    if (size > 0) {
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t r = 0; r < rows; r++)
            clip_row(data + r * size, size, (int64_t)limit);
        Py_END_ALLOW_THREADS
    }
    buf_release(&hist);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"clahe_map", clahe_map, METH_VARARGS,
     "clahe_map(bins, maps, k0, k1, out[, vector]) -> (min, max): skimage's bilinear CLAHE mapping into uint16 "
     "out (vector=False: the scalar loop, the same values)."},
    {"lookup", lookup, METH_VARARGS, "lookup(index, table, out): out[i, j] = table[index[i, j]]."},
    {"lookup2", lookup2, METH_VARARGS,
     "lookup2(index0, table0, index1, table1, out): out[i, j, c] = table_c[index_c[i, j]] for c = 0, 1."},
    {"gather_u8", gather_u8, METH_VARARGS, "gather_u8(values, table, out): out = table[values] (uint16, any strides -> contiguous uint8)."},
    {"region_hist", region_hist, METH_VARARGS,
     "region_hist(bins, k0, k1, n0, n1, hist[, r0, c0]): per-region bin counts added into int64 hist."},
    {"clip_histograms", clip_histograms, METH_VARARGS,
     "clip_histograms(hist, limit): skimage's clip_histogram on every row of int64 hist, in place."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_clahe_kernels", "CLAHE's per-pixel loops.", -1,
                                    methods};

PyMODINIT_FUNC PyInit__clahe_kernels(void) { return PyModule_Create(&module); }
