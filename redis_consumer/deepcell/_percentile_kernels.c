/* Mesmer's percentile_threshold: np.percentile's two order statistics by radix selection, and
 * the clip + img_as_uint conversion CLAHE starts from, each in one pass over a strided plane.
 *
 * Built by the package's install step (setup.py, -ffp-contract=off, no -ffast-math). Selection
 * only compares and copies values (no arithmetic), so it is exact: the order-preserving integer
 * image of each float's bits (sign set: all bits flipped; else the sign bit set) is histogrammed
 * 11 bits at a time, the first digit over the plane, the rest over the keys of the one or two
 * bins that hold the wanted ranks. The callers (preprocess.py) interpolate numpy's way and fall back
 * to numpy for NaN; tests/test_percentile_kernels.py compares with np.percentile.
 */
#include "_buffers.h"
#include <math.h>

#define DIGIT_BITS 11 /* 2048 bins: four interleaved histograms of them fit in L1 */
#define NBINS (1u << DIGIT_BITS)
#define SUBS 4
#define BLOCK 512 /* values whose bins are computed together */

/* x86-64 with GCC: an AVX2 clone picked at load time where the CPU has it (8 floats a step, the
 * same IEEE operations), else the baseline SSE2 code */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__GLIBC__)
#define VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define VECTOR_CLONES
#endif

/* Elements of `size` bytes at base + i * s0 + j * s1 (j >= 0 stepping forward) that can be read
 * through a typed pointer: aligned, and the strides whole elements; else they are memcpy'd. */
static inline int aligned(const char *base, Py_ssize_t s0, Py_ssize_t s1, size_t size) {
    return (uintptr_t)base % size == 0 && s0 % (Py_ssize_t)size == 0 && s1 > 0 && s1 % (Py_ssize_t)size == 0;
}

/* Per element type: its bits U, the order-preserving key (sign set: all bits flipped; else the
 * sign bit set) and the passes over a strided plane. With SKIP, zeros (+0.0 and -0.0, as
 * `x != 0` has it) go to bin NBINS (not counted). NaN needs no test here: its keys lie above
 * +inf's or below -inf's, in the outermost bins, which the caller checks. */
#define PASSES(NAME, U, F, BITS, SKIP)                                                              \
    static inline uint64_t key_##NAME(U u) { return u ^ ((U)(0 - (u >> (BITS - 1))) | ((U)1 << (BITS - 1))); } \
    static inline uint32_t bin_##NAME(U u) {                                                       \
        const uint32_t bin = (uint32_t)(key_##NAME(u) >> (BITS - DIGIT_BITS));                     \
        return (SKIP && (U)(u << 1) == 0) ? NBINS : bin;                                            \
    }                                                                                              \
    /* bins (and the key range) of one row's values, `step` elements apart: no loop-carried    \
     * dependency but the range, so it vectorises (the histogram increments cannot) */           \
    VECTOR_CLONES static void bins_##NAME(const U *restrict src, Py_ssize_t step, Py_ssize_t len,  \
                                          uint16_t *restrict bins, U *kmin, U *kmax) {           \
        U lo = *kmin, hi = *kmax;                                                                  \
        if (step == 1) {                                                                           \
            for (Py_ssize_t j = 0; j < len; j++) {                                                 \
                const U u = src[j], key = (U)key_##NAME(u);                                        \
                lo = key < lo ? key : lo, hi = key > hi ? key : hi;                                \
                bins[j] = (uint16_t)bin_##NAME(u);                                                 \
            }                                                                                      \
        } else if (step == 2) { /* a channel of an (X, Y, 2) array: a constant stride vectorises */ \
            for (Py_ssize_t j = 0; j < len; j++) {                                                 \
                const U u = src[2 * j], key = (U)key_##NAME(u);                                    \
                lo = key < lo ? key : lo, hi = key > hi ? key : hi;                                \
                bins[j] = (uint16_t)bin_##NAME(u);                                                 \
            }                                                                                      \
        } else {                                                                                   \
            for (Py_ssize_t j = 0; j < len; j++) {                                                 \
                const U u = src[j * step], key = (U)key_##NAME(u);                                 \
                lo = key < lo ? key : lo, hi = key > hi ? key : hi;                                \
                bins[j] = (uint16_t)bin_##NAME(u);                                                 \
            }                                                                                      \
        }                                                                                          \
        *kmin = lo, *kmax = hi;                                                                    \
    }                                                                                              \
    /* bins of `len` values from element j0 of a row: typed reads where aligned, else each value \
     * through memcpy (no misaligned typed access); the key range is updated either way */       \
    static inline void block_##NAME(const char *row, Py_ssize_t j0, Py_ssize_t len, Py_ssize_t s1, \
                                    int typed, uint16_t *bins, U *kmin, U *kmax) {               \
        if (typed) {                                                                               \
            bins_##NAME((const U *)(row + j0 * s1), s1 / (Py_ssize_t)sizeof(U), len, bins, kmin, kmax); \
            return;                                                                                \
        }                                                                                          \
        for (Py_ssize_t j = 0; j < len; j++) {                                                     \
            U u;                                                                                   \
            memcpy(&u, row + (j0 + j) * s1, sizeof(U));                                            \
            const U key = (U)key_##NAME(u);                                                        \
            *kmin = key < *kmin ? key : *kmin, *kmax = key > *kmax ? key : *kmax;                  \
            bins[j] = (uint16_t)bin_##NAME(u);                                                     \
        }                                                                                          \
    }                                                                                              \
    /* hist: SUBS x (NBINS + 1) counts, summed into the first by the caller; lo and hi: the       \
     * smallest and largest key of all the values (zeros included) */                            \
    static void scan_##NAME(const char *base, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t s0,     \
                            Py_ssize_t s1, uint32_t *hist, uint64_t *lo, uint64_t *hi) {           \
        U kmin = (U)-1, kmax = 0;                                                                  \
        uint16_t bins[BLOCK];                                                                      \
        uint32_t *h0 = hist, *h1 = hist + (NBINS + 1), *h2 = h1 + (NBINS + 1), *h3 = h2 + (NBINS + 1); \
        const int typed = aligned(base, s0, s1, sizeof(U));                                        \
        for (Py_ssize_t i = 0; i < rows; i++) {                                                    \
            const char *row = base + i * s0;                                                       \
            for (Py_ssize_t j0 = 0; j0 < cols; j0 += BLOCK) {                                      \
                const Py_ssize_t len = cols - j0 < BLOCK ? cols - j0 : BLOCK;                      \
                block_##NAME(row, j0, len, s1, typed, bins, &kmin, &kmax);                         \
                Py_ssize_t j = 0;                                                                  \
                for (; j + 4 <= len; j += 4)                                                       \
                    h0[bins[j]]++, h1[bins[j + 1]]++, h2[bins[j + 2]]++, h3[bins[j + 3]]++;        \
                for (; j < len; j++)                                                               \
                    h0[bins[j]]++;                                                                 \
            }                                                                                      \
        }                                                                                          \
        *lo = kmin, *hi = kmax;                                                                    \
    }                                                                                              \
    static inline uint64_t nans_##NAME(const char *base, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t s0, \
                                Py_ssize_t s1) {                                                   \
        uint64_t count = 0;                                                                        \
        for (Py_ssize_t i = 0; i < rows; i++)                                                      \
            for (Py_ssize_t j = 0; j < cols; j++) {                                                \
                F x;                                                                               \
                memcpy(&x, base + i * s0 + j * s1, sizeof(F));                                     \
                count += x != x;                                                                   \
            }                                                                                      \
        return count;                                                                              \
    }                                                                                              \
    /* the keys of bins d .. d + span into out (room for what they hold); returns how many */  \
    static uint64_t gather_##NAME(const char *base, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t s0, \
                                  Py_ssize_t s1, uint32_t d, uint32_t span, uint64_t *out) {       \
        uint64_t w = 0;                                                                            \
        U kmin = (U)-1, kmax = 0;                                                                  \
        uint16_t bins[BLOCK];                                                                      \
        const int typed = aligned(base, s0, s1, sizeof(U));                                        \
        for (Py_ssize_t i = 0; i < rows; i++) {                                                    \
            const char *row = base + i * s0;                                                       \
            for (Py_ssize_t j0 = 0; j0 < cols; j0 += BLOCK) {                                      \
                const Py_ssize_t len = cols - j0 < BLOCK ? cols - j0 : BLOCK;                      \
                block_##NAME(row, j0, len, s1, typed, bins, &kmin, &kmax);                         \
                for (Py_ssize_t k0 = 0; k0 < len; k0 += 64) { /* runs of 64 with no hit: skipped */ \
                    const Py_ssize_t k1 = len - k0 < 64 ? len : k0 + 64;                           \
                    uint32_t hits = 0;                                                             \
                    for (Py_ssize_t j = k0; j < k1; j++)                                           \
                        hits += (uint16_t)(bins[j] - d) <= span;                                   \
                    for (Py_ssize_t j = k0; hits && j < k1; j++)                                   \
                        if ((uint16_t)(bins[j] - d) <= span) {                                     \
                            U u;                                                                   \
                            memcpy(&u, row + (j0 + j) * s1, sizeof(U));                            \
                            out[w++] = key_##NAME(u);                                              \
                        }                                                                          \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
        return w;                                                                                  \
    }

PASSES(f_nz, uint32_t, float, 32, 1)
PASSES(f_all, uint32_t, float, 32, 0)
PASSES(d_nz, uint64_t, double, 64, 1)
PASSES(d_all, uint64_t, double, 64, 0)

/* One of the four instantiations by element type and zero handling. */
#define DISPATCH(FN, ...)                                                                           \
    (f == 'f' ? (skip_zeros ? FN##_f_nz(__VA_ARGS__) : FN##_f_all(__VA_ARGS__))                    \
              : (skip_zeros ? FN##_d_nz(__VA_ARGS__) : FN##_d_all(__VA_ARGS__)))

static double value_of(uint64_t key, char f) {
    if (f == 'f') {
        uint32_t k = (uint32_t)key, u = (k & 0x80000000u) ? (k ^ 0x80000000u) : ~k;
        float x;
        memcpy(&x, &u, 4);
        return x;
    }
    uint64_t u = (key & 0x8000000000000000ull) ? (key ^ 0x8000000000000000ull) : ~key;
    double x;
    memcpy(&x, &u, 8);
    return x;
}

/* The bin holding rank r of a histogram (r < its total); *before = how many lie in lower bins. */
static uint32_t bin_of_rank(const uint32_t *hist, uint64_t r, uint64_t *before) {
    uint64_t cum = 0;
    uint32_t d = 0;
    while (cum + hist[d] <= r)
        cum += hist[d++];
    *before = cum;
    return d;
}

/* The (values, fraction, skip_zeros) arguments both order-statistics entry points take; -1 with
 * an exception set when they do not parse or the fraction is outside [0, 1]. */
static int order_args(PyObject *args, const char *name, PyObject **obj, double *fraction, int *skip_zeros) {
    if (!PyArg_ParseTuple(args, "Odp", obj, fraction, skip_zeros))
        return -1;
    if (!(*fraction >= 0.0 && *fraction <= 1.0)) {
        PyErr_Format(PyExc_ValueError, "%s: the fraction must lie in [0, 1]", name);
        return -1;
    }
    return 0;
}

/* ---- order_stats: the two order statistics np.percentile's linear method reads ---------------
 *
 * values: 1-D or 2-D, float32 or float64, any strides. Counted: every value, or the non-zero ones.
 * With n counted values and none NaN, the ranks are numpy's: virtual = (n - 1) * fraction
 * (fraction = q / 100 in float64), below = floor(virtual); (below, below + 1), or (n - 1, n - 1)
 * when virtual >= n - 1. Returns (n, nans, a, b, lo, hi): a and b the values of those ranks
 * (NaN when n is 0 or a NaN was counted), lo and hi the minimum and maximum of all the values,
 * zeros included (meaningless with NaN; -0.0 ranks below +0.0 there). */
static PyObject *order_stats(PyObject *self, PyObject *args) {
    PyObject *obj;
    double fraction;
    int skip_zeros;
    if (order_args(args, "order_stats", &obj, &fraction, &skip_zeros) < 0)
        return NULL;
    Buf v = {0};
    if (PyObject_GetBuffer(obj, &v.view, PyBUF_STRIDES | PyBUF_FORMAT) < 0)
        return NULL;
    v.held = 1;
    const char f = buf_format(&v);
    if ((v.view.ndim != 1 && v.view.ndim != 2) || (f != 'f' && f != 'd') ||
        v.view.itemsize != (f == 'f' ? 4 : 8)) {
        PyErr_Format(PyExc_ValueError, "order_stats: expected a 1-D or 2-D float32/float64 array, got %d "
                     "dimensions of '%c'", v.view.ndim, f);
        buf_release(&v);
        return NULL;
    }
    const Py_ssize_t rows = v.view.ndim == 2 ? v.view.shape[0] : 1;
    const Py_ssize_t cols = v.view.shape[v.view.ndim - 1];
    const Py_ssize_t s0 = v.view.ndim == 2 ? v.view.strides[0] : 0, s1 = v.view.strides[v.view.ndim - 1];
    if ((uint64_t)rows * (uint64_t)cols >= UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "order_stats: too many values for 32-bit bin counts");
        buf_release(&v);
        return NULL;
    }
    const char *base = v.view.buf;
    uint32_t *hist = PyMem_Calloc(SUBS * (NBINS + 1), sizeof(uint32_t));
    uint64_t *scratch = NULL;
    if (!hist) {
        buf_release(&v);
        return PyErr_NoMemory();
    }
    const int bits = f == 'f' ? 32 : 64, top = bits - DIGIT_BITS;
    uint64_t n = 0, nans = 0, ra = 0, rb = 0, klo = 0, khi = 0;
    double a = NAN, b = NAN, lo = NAN, hi = NAN;
    int failed = 0;
    Py_BEGIN_ALLOW_THREADS
    /* first digit over the plane, with the range */
    DISPATCH(scan, base, rows, cols, s0, s1, hist, &klo, &khi);
    if (rows * cols > 0)
        lo = value_of(klo, f), hi = value_of(khi, f);
    for (int sub = 1; sub < SUBS; sub++)
        for (uint32_t d = 0; d <= NBINS; d++)
            hist[d] += hist[sub * (NBINS + 1) + d];
    n = (uint64_t)(rows * cols) - hist[NBINS];
    /* NaN keys share only the outermost bins, with the infinities */
    const uint32_t neg_inf_bin = (uint32_t)((f == 'f' ? key_f_all(0xFF800000u) : key_d_all(0xFFF0000000000000ull)) >> top);
    const uint32_t pos_inf_bin = (uint32_t)((f == 'f' ? key_f_all(0x7F800000u) : key_d_all(0x7FF0000000000000ull)) >> top);
    uint64_t outer = 0;
    for (uint32_t d = 0; d <= neg_inf_bin; d++)
        outer += hist[d];
    for (uint32_t d = pos_inf_bin; d < NBINS; d++)
        outer += hist[d];
    if (outer)
        nans = f == 'f' ? nans_f_all(base, rows, cols, s0, s1) : nans_d_all(base, rows, cols, s0, s1);
    if (n > 0 && nans == 0) {
        const double virtual = (double)(n - 1) * fraction; /* numpy's 'linear' virtual index */
        if (virtual >= (double)(n - 1)) {
            ra = rb = n - 1;
        } else {
            ra = (uint64_t)floor(virtual);
            rb = ra + 1;
        }
        uint64_t before_a, before_b;
        const uint32_t da = bin_of_rank(hist, ra, &before_a), db = bin_of_rank(hist, rb, &before_b);
        /* gather the keys of the bins holding the two ranks (consecutive ranks: one bin, or two
         * with none between) */
        scratch = malloc(sizeof(uint64_t) * ((uint64_t)hist[da] + (da != db ? hist[db] : 0) + 1));
        uint64_t m = scratch ? DISPATCH(gather, base, rows, cols, s0, s1, da, db - da, scratch) : 0;
        if (!scratch) {
            failed = 1;
        } else if (da != db) { /* rank ra is the last of bin da, rb the first of db: a max, a min */
            uint64_t ka = 0, kb = UINT64_MAX;
            for (uint64_t i = 0; i < m; i++) {
                const uint64_t k = scratch[i], d = k >> top;
                ka = (d == da && k > ka) ? k : ka;
                kb = (d == db && k < kb) ? k : kb;
            }
            a = value_of(ka, f), b = value_of(kb, f);
        } else { /* one bin: one digit at a time */
            ra -= before_a, rb -= before_a;
            for (int shift = top; shift > 0;) {
                shift = shift > DIGIT_BITS ? shift - DIGIT_BITS : 0;
                memset(hist, 0, NBINS * sizeof(uint32_t));
                for (uint64_t i = 0; i < m; i++)
                    hist[(scratch[i] >> shift) & (NBINS - 1)]++;
                uint64_t ba, bb;
                const uint32_t ea = bin_of_rank(hist, ra, &ba), eb = bin_of_rank(hist, rb, &bb);
                if (ea != eb) {
                    uint64_t ka = 0, kb = UINT64_MAX;
                    for (uint64_t i = 0; i < m; i++) {
                        const uint64_t k = scratch[i], e = (k >> shift) & (NBINS - 1);
                        ka = (e == ea && k > ka) ? k : ka;
                        kb = (e == eb && k < kb) ? k : kb;
                    }
                    a = value_of(ka, f), b = value_of(kb, f);
                    break;
                }
                uint64_t kept = 0;
                for (uint64_t i = 0; i < m; i++) {
                    scratch[kept] = scratch[i];
                    kept += ((scratch[i] >> shift) & (NBINS - 1)) == ea;
                }
                m = kept, ra -= ba, rb -= ba;
                if (shift == 0) /* every key left is the same */
                    a = b = value_of(scratch[0], f);
            }
        }
    }
    Py_END_ALLOW_THREADS
    free(scratch);
    PyMem_Free(hist);
    buf_release(&v);
    if (failed)
        return PyErr_NoMemory();
    return Py_BuildValue("(KKdddd)", (unsigned long long)n, (unsigned long long)nans, a, b, lo, hi);
}

/* ---- order_stats_u16: order_stats of a uint16 plane, by one 65536-bin histogram ---------------
 *
 * values: 2-D uint16, any strides. The same ranks and result as order_stats of the plane's
 * float32 cast (every uint16 is exact in float32, and no value is NaN: nans is 0), in one pass:
 * a count per value, then a scan of the counts. */
VECTOR_CLONES static void range_u16(const uint16_t *restrict src, Py_ssize_t step, Py_ssize_t len, uint16_t *lo,
                                    uint16_t *hi) {
    uint16_t mn = *lo, mx = *hi;
    if (step == 1)
        for (Py_ssize_t j = 0; j < len; j++)
            mn = src[j] < mn ? src[j] : mn, mx = src[j] > mx ? src[j] : mx;
    else
        for (Py_ssize_t j = 0; j < len; j++)
            mn = src[j * step] < mn ? src[j * step] : mn, mx = src[j * step] > mx ? src[j * step] : mx;
    *lo = mn, *hi = mx;
}

static PyObject *order_stats_u16(PyObject *self, PyObject *args) {
    PyObject *obj;
    double fraction;
    int skip_zeros;
    if (order_args(args, "order_stats_u16", &obj, &fraction, &skip_zeros) < 0)
        return NULL;
    Buf v = {0};
    if (buf_get(obj, &v, 2, "H", 0, 0, "values") < 0)
        return NULL;
    const Py_ssize_t rows = v.view.shape[0], cols = v.view.shape[1];
    const Py_ssize_t s0 = v.view.strides[0], s1 = v.view.strides[1];
    if ((uint64_t)rows * (uint64_t)cols >= UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "order_stats_u16: too many values for 32-bit counts");
        buf_release(&v);
        return NULL;
    }
    /* four interleaved counts per value: a run of equal values (the background) does not wait
     * on one counter */
    uint32_t *hist = PyMem_Calloc(4 * 65536, sizeof(uint32_t));
    if (!hist) {
        buf_release(&v);
        return PyErr_NoMemory();
    }
    const int typed = aligned(v.view.buf, s0, s1, sizeof(uint16_t));
    uint16_t mn = 0xFFFF, mx = 0;
    uint64_t n = 0, ra = 0, rb = 0;
    double a = NAN, b = NAN, lo = NAN, hi = NAN;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < rows; i++) {
        const char *row = (const char *)v.view.buf + i * s0;
        if (typed) {
            const uint16_t *r = (const uint16_t *)row;
            const Py_ssize_t step = s1 / (Py_ssize_t)sizeof(uint16_t);
            range_u16(r, step, cols, &mn, &mx);
            Py_ssize_t j = 0;
            for (; j + 4 <= cols; j += 4) {
                hist[4 * (uint32_t)r[j * step]]++;
                hist[4 * (uint32_t)r[(j + 1) * step] + 1]++;
                hist[4 * (uint32_t)r[(j + 2) * step] + 2]++;
                hist[4 * (uint32_t)r[(j + 3) * step] + 3]++;
            }
            for (; j < cols; j++)
                hist[4 * (uint32_t)r[j * step]]++;
        } else {
            for (Py_ssize_t j = 0; j < cols; j++) {
                uint16_t u;
                memcpy(&u, row + j * s1, sizeof(uint16_t));
                mn = u < mn ? u : mn, mx = u > mx ? u : mx;
                hist[4 * (uint32_t)u]++;
            }
        }
    }
    for (uint32_t u = 0; u < 65536; u++)
        hist[u] = hist[4 * u] + hist[4 * u + 1] + hist[4 * u + 2] + hist[4 * u + 3];
    if (rows * cols > 0)
        lo = (double)mn, hi = (double)mx;
    n = (uint64_t)(rows * cols) - (skip_zeros ? hist[0] : 0);
    if (n > 0) {
        const double virtual = (double)(n - 1) * fraction; /* numpy's 'linear' virtual index */
        if (virtual >= (double)(n - 1)) {
            ra = rb = n - 1;
        } else {
            ra = (uint64_t)floor(virtual);
            rb = ra + 1;
        }
        uint64_t seen = 0;
        int found_a = 0;
        for (uint32_t u = skip_zeros ? 1 : 0; u < 65536; u++) {
            seen += hist[u];
            if (!found_a && seen > ra)
                a = (double)u, found_a = 1;
            if (seen > rb) {
                b = (double)u;
                break;
            }
        }
    }
    Py_END_ALLOW_THREADS
    PyMem_Free(hist);
    buf_release(&v);
    return Py_BuildValue("(KKdddd)", (unsigned long long)n, 0ull, a, b, lo, hi);
}

/* ---- clip_unit_u16: min(x, ceiling) then preprocess._unit_uint16's float32 steps ---------------
 *
 * plane (X, Y) float32, any strides; out (X, Y) uint16, any strides. Per value, in float32:
 * y = x > ceiling ? ceiling : x (np.where(plane > ceiling, ceiling, plane)), then
 * u = rint(((y - lo) / scale) * 65535) clipped to [0, 65535] (NaN -> 0), as numpy computes
 * `(plane - lo) / scale * 65535`, `rint`, `clip`, `astype(uint16)` one pass at a time. Clipping
 * before rounding gives the same integers (rint is monotone and 0, 65535 are integers), and on
 * [0, 2**23) (u + 2**23) - 2**23 is rint (round half to even) in two IEEE additions, so the loop
 * vectorises without SSE4.1. */
static inline uint16_t unit_u16(float x, float ceiling, float lo, float scale) {
    const float y = x > ceiling ? ceiling : x;
    float u = (y - lo) / scale;
    u = u * 65535.0f;
    u = !(u > 0.0f) ? 0.0f : (u > 65535.0f ? 65535.0f : u);
    u = (u + 8388608.0f) - 8388608.0f;
    return (uint16_t)(int32_t)u; /* through int32: it vectorises */
}

VECTOR_CLONES static void unit_row(const float *restrict src, Py_ssize_t step, uint16_t *restrict dst, Py_ssize_t cols,
                     float ceiling, float lo, float scale) {
    if (step == 1)
        for (Py_ssize_t j = 0; j < cols; j++)
            dst[j] = unit_u16(src[j], ceiling, lo, scale);
    else if (step == 2) /* a channel of a (X, Y, 2) array */
        for (Py_ssize_t j = 0; j < cols; j++)
            dst[j] = unit_u16(src[2 * j], ceiling, lo, scale);
    else
        for (Py_ssize_t j = 0; j < cols; j++)
            dst[j] = unit_u16(src[j * step], ceiling, lo, scale);
}

/* unit_row of a uint16 plane: each value converted to float32 first (exact), as the float32 cast
 * of the plane would hold it */
VECTOR_CLONES static void unit_row_u16(const uint16_t *restrict src, Py_ssize_t step, uint16_t *restrict dst,
                                       Py_ssize_t cols, float ceiling, float lo, float scale) {
    if (step == 1)
        for (Py_ssize_t j = 0; j < cols; j++)
            dst[j] = unit_u16((float)src[j], ceiling, lo, scale);
    else
        for (Py_ssize_t j = 0; j < cols; j++)
            dst[j] = unit_u16((float)src[j * step], ceiling, lo, scale);
}

/* dst[j] = table[u[j]] and the row's smallest and largest u folded into *mn, *mx (two loops: the
 * min/max one vectorises, the gather cannot) */
VECTOR_CLONES static void bin_row(const uint16_t *restrict u, const uint8_t *restrict table, uint8_t *restrict dst,
                                  Py_ssize_t cols, unsigned *mn, unsigned *mx) {
    uint16_t lo = 0xFFFF, hi = 0;
    for (Py_ssize_t j = 0; j < cols; j++) {
        lo = u[j] < lo ? u[j] : lo;
        hi = u[j] > hi ? u[j] : hi;
    }
    for (Py_ssize_t j = 0; j < cols; j++)
        dst[j] = table[u[j]];
    *mn = lo < *mn ? lo : *mn;
    *mx = hi > *mx ? hi : *mx;
}

/* One row of a plane with byte strides p1 between columns: unit_row where the floats are aligned
 * and evenly spaced (dense), else one unaligned read per pixel. */
static void unit_row_strided(const char *src, Py_ssize_t p1, int dense, uint16_t *dst, Py_ssize_t cols,
                             float ceiling, float lo, float scale) {
    if (dense) {
        unit_row((const float *)src, p1 / (Py_ssize_t)sizeof(float), dst, cols, ceiling, lo, scale);
        return;
    }
    for (Py_ssize_t j = 0; j < cols; j++) {
        float x;
        memcpy(&x, src + j * p1, sizeof(float));
        dst[j] = unit_u16(x, ceiling, lo, scale);
    }
}

static PyObject *clip_unit_u16(PyObject *self, PyObject *args) {
    PyObject *plane_obj, *out_obj;
    float ceiling, lo, scale;
    if (!PyArg_ParseTuple(args, "OfffO", &plane_obj, &ceiling, &lo, &scale, &out_obj))
        return NULL;
    Buf plane = {0}, out = {0};
    uint16_t *row_buf = NULL;
    if (buf_get(plane_obj, &plane, 2, "f", 0, 0, "plane") < 0 || buf_get(out_obj, &out, 2, "H", 1, 0, "out") < 0)
        goto fail;
    const Py_ssize_t rows = plane.view.shape[0], cols = plane.view.shape[1];
    if (out.view.shape[0] != rows || out.view.shape[1] != cols) {
        PyErr_SetString(PyExc_ValueError, "clip_unit_u16: plane and out differ in shape");
        goto fail;
    }
    const Py_ssize_t p0 = plane.view.strides[0], p1 = plane.view.strides[1];
    const Py_ssize_t o0 = out.view.strides[0], o1 = out.view.strides[1];
    const int dense = aligned(plane.view.buf, p0, p1, sizeof(float)); /* else one value at a time */
    const int direct = aligned(out.view.buf, o0, o1, sizeof(uint16_t)) && o1 == sizeof(uint16_t);
    if (!direct && !(row_buf = PyMem_Malloc(sizeof(uint16_t) * (cols ? cols : 1)))) {
        PyErr_NoMemory();
        goto fail;
    }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < rows; i++) {
        const char *src = (const char *)plane.view.buf + i * p0;
        char *dst = (char *)out.view.buf + i * o0;
        uint16_t *d = row_buf ? row_buf : (uint16_t *)dst;
        unit_row_strided(src, p1, dense, d, cols, ceiling, lo, scale);
        if (row_buf)
            for (Py_ssize_t j = 0; j < cols; j++)
                memcpy(dst + j * o1, row_buf + j, sizeof(uint16_t));
    }
    Py_END_ALLOW_THREADS
    PyMem_Free(row_buf);
    buf_release(&plane), buf_release(&out);
    Py_RETURN_NONE;
fail:
    PyMem_Free(row_buf);
    buf_release(&plane), buf_release(&out);
    return NULL;
}

/* ---- clip_unit_bins: clip_unit_u16, then CLAHE's bin of each uint16 value ---------------------
 *
 * out[i, j] = table[unit_u16(plane[i, j])] (uint8), the table holding the bin of every uint16
 * value (65536 entries), without writing the uint16 image; returns the smallest and largest
 * uint16 value, which the table's bins assume (the caller checks them). plane (X, Y) float32,
 * or uint16 (read as its exact float32 values: the same result as its float32 cast), any
 * strides; out (X, Y) uint8, contiguous. */
static PyObject *clip_unit_bins(PyObject *self, PyObject *args) {
    PyObject *plane_obj, *table_obj, *out_obj;
    float ceiling, lo, scale;
    if (!PyArg_ParseTuple(args, "OfffOO", &plane_obj, &ceiling, &lo, &scale, &table_obj, &out_obj))
        return NULL;
    Buf plane = {0}, table = {0}, out = {0};
    uint16_t *row_buf = NULL;
    if (buf_get(plane_obj, &plane, 2, "fH", 0, 0, "plane") < 0 ||
        buf_get(table_obj, &table, 1, "B", 0, 1, "table") < 0 || buf_get(out_obj, &out, 2, "B", 1, 1, "out") < 0)
        goto fail;
    const int u16 = buf_format(&plane) == 'H';
    const size_t item = u16 ? sizeof(uint16_t) : sizeof(float);
    const Py_ssize_t rows = plane.view.shape[0], cols = plane.view.shape[1];
    if (out.view.shape[0] != rows || out.view.shape[1] != cols || table.view.shape[0] != 65536) {
        PyErr_SetString(PyExc_ValueError, "clip_unit_bins: plane, table (65536) and out do not match");
        goto fail;
    }
    if (!(row_buf = PyMem_Malloc(sizeof(uint16_t) * (cols ? cols : 1)))) {
        PyErr_NoMemory();
        goto fail;
    }
    const Py_ssize_t p0 = plane.view.strides[0], p1 = plane.view.strides[1];
    const int dense = aligned(plane.view.buf, p0, p1, item);
    const uint8_t *t = table.view.buf;
    unsigned mn = 0xFFFF, mx = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < rows; i++) {
        const char *src = (const char *)plane.view.buf + i * p0;
        uint8_t *dst = (uint8_t *)out.view.buf + i * cols;
        if (!u16)
            unit_row_strided(src, p1, dense, row_buf, cols, ceiling, lo, scale);
        else if (dense)
            unit_row_u16((const uint16_t *)src, p1 / (Py_ssize_t)sizeof(uint16_t), row_buf, cols, ceiling, lo, scale);
        else
            for (Py_ssize_t j = 0; j < cols; j++) {
                uint16_t x;
                memcpy(&x, src + j * p1, sizeof(uint16_t));
                row_buf[j] = unit_u16((float)x, ceiling, lo, scale);
            }
        bin_row(row_buf, t, dst, cols, &mn, &mx);
    }
    Py_END_ALLOW_THREADS
    PyMem_Free(row_buf);
    buf_release(&plane), buf_release(&table), buf_release(&out);
    return Py_BuildValue("II", rows && cols ? mn : 0u, mx);
fail:
    PyMem_Free(row_buf);
    buf_release(&plane), buf_release(&table), buf_release(&out);
    return NULL;
}

static PyMethodDef methods[] = {
    {"order_stats", order_stats, METH_VARARGS,
     "order_stats(values, fraction, skip_zeros) -> (n, nans, a, b, lo, hi): np.percentile's order statistics."},
    {"order_stats_u16", order_stats_u16, METH_VARARGS,
     "order_stats_u16(values, fraction, skip_zeros) -> (n, 0, a, b, lo, hi): order_stats of a uint16 plane."},
    {"clip_unit_u16", clip_unit_u16, METH_VARARGS,
     "clip_unit_u16(plane, ceiling, lo, scale, out): clip at ceiling, then img_as_uint of (x - lo) / scale."},
    {"clip_unit_bins", clip_unit_bins, METH_VARARGS,
     "clip_unit_bins(plane, ceiling, lo, scale, table, out) -> (min, max): table[clip_unit_u16 value] into "
     "uint8 out (plane float32 or uint16); the uint16 values' range."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_percentile_kernels",
                                    "percentile_threshold's selection and clip.", -1, methods};

PyMODINIT_FUNC PyInit__percentile_kernels(void) { return PyModule_Create(&module); }
