/* The factorised R3xS2 spatial message on the CPU, fused over edges (see equipot/ops/message.py).
 *
 *   out[r(e), o, c] += (sum_l P_l(o . rhat_e) R[e, l, c]) * h[s(e), o, c],
 *   R[e, l, c] = sum_m rho[e, l, m] W[l, m, c]
 *
 * One pass over the edges: the Legendre values, R and the kernel row live in small scratch
 * buffers, so per edge only h[s] and out[r] (forward) or grad[r], h[s] and grad_h[s] (backward)
 * rows of O * C numbers travel through memory; nothing of size [E, O, C] exists.
 *
 * Shapes (row-major, contiguous): vec [E, 3], grid [O, 3], rho [E, L1, M], W [L1, M, C],
 * h and grad_h [Ns, O, C], out and grad [N, O, C], sender and receiver [E] (int64, checked by the
 * caller to lie in range), grad_vec [E, 3], grad_rho [E, L1, M], grad_W [L1, M, C] (accumulated).
 * Any output pointer of the backward may be NULL (that gradient is not wanted).
 * Returns 0, or 1 when scratch memory could not be allocated.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define DEFINE_KERNELS(T, SUFFIX)                                                                       \
                                                                                                       \
static void legendre_##SUFFIX(const T *vec, const T *grid, int64_t O, int64_t L1, T *cosv, T *P, T *dP, \
                              T *inv_r) {                                                              \
    T r = sqrt(vec[0] * vec[0] + vec[1] * vec[1] + vec[2] * vec[2]);                                   \
    if (r < (T)1e-9) r = (T)1e-9;                                                                      \
    *inv_r = (T)1 / r;                                                                                 \
    for (int64_t o = 0; o < O; ++o) {                                                                  \
        const T x = (vec[0] * grid[3 * o] + vec[1] * grid[3 * o + 1] + vec[2] * grid[3 * o + 2]) / r;  \
        T *p = P + o * L1;                                                                             \
        cosv[o] = x;                                                                                   \
        p[0] = 1;                                                                                      \
        if (L1 > 1) p[1] = x;                                                                          \
        for (int64_t n = 1; n + 1 < L1; ++n)                                                           \
            p[n + 1] = ((T)(2 * n + 1) * x * p[n] - (T)n * p[n - 1]) / (T)(n + 1);                     \
        if (dP) {                                                                                      \
            T *d = dP + o * L1;                                                                        \
            d[0] = 0;                                                                                  \
            if (L1 > 1) d[1] = 1;                                                                      \
            for (int64_t n = 1; n + 1 < L1; ++n) d[n + 1] = (T)(n + 1) * p[n] + x * d[n];              \
        }                                                                                              \
    }                                                                                                  \
}                                                                                                      \
                                                                                                       \
static void degree_kernels_##SUFFIX(const T *rho, const T *W, int64_t L1, int64_t M, int64_t C, T *R) { \
    for (int64_t l = 0; l < L1; ++l) {                                                                 \
        T *Rl = R + l * C;                                                                             \
        for (int64_t c = 0; c < C; ++c) Rl[c] = 0;                                                     \
        for (int64_t m = 0; m < M; ++m) {                                                              \
            const T a = rho[l * M + m];                                                                \
            const T *w = W + (l * M + m) * C;                                                          \
            for (int64_t c = 0; c < C; ++c) Rl[c] += a * w[c];                                         \
        }                                                                                              \
    }                                                                                                  \
}                                                                                                      \
                                                                                                       \
static void kernel_row_##SUFFIX(const T *p, const T *R, int64_t L1, int64_t C, T *restrict k) {         \
    for (int64_t c = 0; c < C; ++c) k[c] = p[0] * R[c];                                                \
    for (int64_t l = 1; l < L1; ++l) {                                                                 \
        const T a = p[l];                                                                              \
        const T *Rl = R + l * C;                                                                       \
        for (int64_t c = 0; c < C; ++c) k[c] += a * Rl[c];                                             \
    }                                                                                                  \
}                                                                                                      \
                                                                                                       \
int spherical_forward_##SUFFIX(int64_t E, int64_t O, int64_t L1, int64_t M, int64_t C, const T *vec,   \
                               const T *grid, const T *rho, const T *W, const T *h,                    \
                               const int64_t *sender, const int64_t *receiver, T *out) {               \
    T *scratch = (T *)malloc(sizeof(T) * (size_t)(O + O * L1 + L1 * C + C));                           \
    if (!scratch) return 1;                                                                            \
    T *cosv = scratch, *P = cosv + O, *R = P + O * L1, *k = R + L1 * C;                                \
    T inv_r;                                                                                           \
    for (int64_t e = 0; e < E; ++e) {                                                                  \
        legendre_##SUFFIX(vec + 3 * e, grid, O, L1, cosv, P, NULL, &inv_r);                            \
        degree_kernels_##SUFFIX(rho + e * L1 * M, W, L1, M, C, R);                                     \
        const T *hs = h + sender[e] * O * C;                                                           \
        T *outr = out + receiver[e] * O * C;                                                           \
        for (int64_t o = 0; o < O; ++o) {                                                              \
            kernel_row_##SUFFIX(P + o * L1, R, L1, C, k);                                              \
            const T *restrict ho = hs + o * C;                                                         \
            T *restrict oo = outr + o * C;                                                             \
            for (int64_t c = 0; c < C; ++c) oo[c] += k[c] * ho[c];                                     \
        }                                                                                              \
    }                                                                                                  \
    free(scratch);                                                                                     \
    return 0;                                                                                          \
}                                                                                                      \
                                                                                                       \
int spherical_backward_##SUFFIX(int64_t E, int64_t O, int64_t L1, int64_t M, int64_t C, const T *vec,  \
                                const T *grid, const T *rho, const T *W, const T *h, const T *grad,    \
                                const int64_t *sender, const int64_t *receiver, T *grad_vec,           \
                                T *grad_rho, T *grad_W, T *grad_h) {                                   \
    const int need_k = grad_rho != NULL || grad_W != NULL;                                             \
    T *scratch = (T *)malloc(sizeof(T) * (size_t)(3 * O + 2 * O * L1 + 2 * L1 * C + 2 * C));      \
    if (!scratch) return 1;                                                                            \
    T *cosv = scratch, *gcos = cosv + O, *P = gcos + O, *dP = P + O * L1, *R = dP + O * L1;            \
    T *gR = R + L1 * C, *k = gR + L1 * C, *t = k + C;                                                  \
    T inv_r;                                                                                           \
    for (int64_t e = 0; e < E; ++e) {                                                                  \
        const T *v = vec + 3 * e;                                                                      \
        legendre_##SUFFIX(v, grid, O, L1, cosv, P, grad_vec ? dP : NULL, &inv_r);                      \
        degree_kernels_##SUFFIX(rho + e * L1 * M, W, L1, M, C, R);                                     \
        if (need_k) memset(gR, 0, sizeof(T) * (size_t)(L1 * C));                                       \
        const T *hs = h + sender[e] * O * C;                                                           \
        const T *gr = grad + receiver[e] * O * C;                                                      \
        T *ghs = grad_h ? grad_h + sender[e] * O * C : NULL;                                           \
        for (int64_t o = 0; o < O; ++o) {                                                              \
            const T *restrict ho = hs + o * C, *restrict go = gr + o * C;                              \
            const T *p = P + o * L1;                                                                   \
            if (ghs) {                                                                                 \
                kernel_row_##SUFFIX(p, R, L1, C, k);                                                   \
                T *restrict gho = ghs + o * C;                                                         \
                for (int64_t c = 0; c < C; ++c) gho[c] += k[c] * go[c];                                \
            }                                                                                          \
            if (!need_k && !grad_vec) continue;                                                        \
            for (int64_t c = 0; c < C; ++c) t[c] = go[c] * ho[c];                                      \
            T g = 0;                                                                                   \
            for (int64_t l = 0; l < L1; ++l) {                                                         \
                const T *Rl = R + l * C;                                                               \
                if (need_k) {                                                                          \
                    T *restrict gRl = gR + l * C;                                                      \
                    const T a = p[l];                                                                  \
                    for (int64_t c = 0; c < C; ++c) gRl[c] += a * t[c];                                \
                }                                                                                      \
                if (grad_vec) {                                                                        \
                    T s = 0;                                                                           \
                    _Pragma("omp simd reduction(+:s)")                                                 \
                    for (int64_t c = 0; c < C; ++c) s += t[c] * Rl[c];                                 \
                    g += s * dP[o * L1 + l];                                                           \
                }                                                                                      \
            }                                                                                          \
            gcos[o] = g;                                                                               \
        }                                                                                              \
        if (grad_vec) {                                                                                \
            /* d(o . rhat)/dv = (o - (o . rhat) rhat) / |v| */                                         \
            T gx = 0, gy = 0, gz = 0, gc = 0;                                                          \
            for (int64_t o = 0; o < O; ++o) {                                                          \
                gx += gcos[o] * grid[3 * o];                                                           \
                gy += gcos[o] * grid[3 * o + 1];                                                       \
                gz += gcos[o] * grid[3 * o + 2];                                                       \
                gc += gcos[o] * cosv[o];                                                               \
            }                                                                                          \
            T *gv = grad_vec + 3 * e;                                                                  \
            gv[0] = (gx - gc * v[0] * inv_r) * inv_r;                                                  \
            gv[1] = (gy - gc * v[1] * inv_r) * inv_r;                                                  \
            gv[2] = (gz - gc * v[2] * inv_r) * inv_r;                                                  \
        }                                                                                              \
        for (int64_t l = 0; need_k && l < L1; ++l) {                                                   \
            const T *gRl = gR + l * C;                                                                 \
            for (int64_t m = 0; m < M; ++m) {                                                          \
                const T *w = W + (l * M + m) * C;                                                      \
                if (grad_rho) {                                                                        \
                    T s = 0;                                                                           \
                    _Pragma("omp simd reduction(+:s)")                                                 \
                    for (int64_t c = 0; c < C; ++c) s += gRl[c] * w[c];                                \
                    grad_rho[(e * L1 + l) * M + m] = s;                                                \
                }                                                                                      \
                if (grad_W) {                                                                          \
                    const T a = rho[(e * L1 + l) * M + m];                                             \
                    T *restrict gw = grad_W + (l * M + m) * C;                                         \
                    for (int64_t c = 0; c < C; ++c) gw[c] += a * gRl[c];                               \
                }                                                                                      \
            }                                                                                          \
        }                                                                                              \
    }                                                                                                  \
    free(scratch);                                                                                     \
    return 0;                                                                                          \
}

DEFINE_KERNELS(float, f32)
DEFINE_KERNELS(double, f64)
