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

/* Vectors of 32 bytes (GCC/Clang vector extensions), loaded and stored without alignment. */
typedef float V_f32 __attribute__((vector_size(32), aligned(4), may_alias));
typedef double V_f64 __attribute__((vector_size(32), aligned(8), may_alias));
#define LANES_f32 8
#define LANES_f64 4
#define LOAD(SUFFIX, ptr) (*(const V_##SUFFIX *)(ptr))
#define STORE(SUFFIX, ptr, value) (*(V_##SUFFIX *)(ptr) = (value))

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
/* The default angular degree (L = 3, four Legendre degrees) with C a multiple of the vector width:   \
 * the channel loop is cut into vectors held in registers (R of the four degrees, their gradient    \
 * accumulators) while the orientations stream past, so the kernel row never goes to memory. */    \
static void forward4_##SUFFIX(int64_t O, int64_t C, const T *P, const T *R, const T *hs, T *outr) {    \
    for (int64_t c0 = 0; c0 < C; c0 += LANES_##SUFFIX) {                                               \
        const V_##SUFFIX r0 = LOAD(SUFFIX, R + c0), r1 = LOAD(SUFFIX, R + C + c0);                    \
        const V_##SUFFIX r2 = LOAD(SUFFIX, R + 2 * C + c0), r3 = LOAD(SUFFIX, R + 3 * C + c0);        \
        for (int64_t o = 0; o < O; ++o) {                                                              \
            const T *p = P + 4 * o;                                                                    \
            const V_##SUFFIX k = p[0] * r0 + p[1] * r1 + p[2] * r2 + p[3] * r3;                        \
            STORE(SUFFIX, outr + o * C + c0, LOAD(SUFFIX, outr + o * C + c0) + k * LOAD(SUFFIX, hs + o * C + c0)); \
        }                                                                                              \
    }                                                                                                  \
}                                                                                                      \
                                                                                                       \
static void backward4_##SUFFIX(int64_t O, int64_t C, const T *P, const T *dP, const T *R, const T *hs,  \
                               const T *gr, T *ghs, T *gR, T *tbuf) {                                  \
    for (int64_t c0 = 0; c0 < C; c0 += LANES_##SUFFIX) {                                               \
        const V_##SUFFIX r0 = LOAD(SUFFIX, R + c0), r1 = LOAD(SUFFIX, R + C + c0);                    \
        const V_##SUFFIX r2 = LOAD(SUFFIX, R + 2 * C + c0), r3 = LOAD(SUFFIX, R + 3 * C + c0);        \
        V_##SUFFIX a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};                                             \
        for (int64_t o = 0; o < O; ++o) {                                                              \
            const T *p = P + 4 * o;                                                                    \
            const V_##SUFFIX g = LOAD(SUFFIX, gr + o * C + c0);                                        \
            const V_##SUFFIX t = g * LOAD(SUFFIX, hs + o * C + c0);                                    \
            if (gR) { a0 += p[0] * t; a1 += p[1] * t; a2 += p[2] * t; a3 += p[3] * t; }                \
            if (tbuf) { /* t * sum_l P_l'(o . rhat) R_l: summed over c below, d/d(o . rhat) */          \
                const T *d = dP + 4 * o;                                                               \
                STORE(SUFFIX, tbuf + o * C + c0, t * (d[0] * r0 + d[1] * r1 + d[2] * r2 + d[3] * r3));  \
            }                                                                                          \
            if (ghs) {                                                                                 \
                const V_##SUFFIX k = p[0] * r0 + p[1] * r1 + p[2] * r2 + p[3] * r3;                    \
                STORE(SUFFIX, ghs + o * C + c0, LOAD(SUFFIX, ghs + o * C + c0) + k * g);               \
            }                                                                                          \
        }                                                                                              \
        if (gR) {                                                                                      \
            STORE(SUFFIX, gR + c0, a0); STORE(SUFFIX, gR + C + c0, a1);                                \
            STORE(SUFFIX, gR + 2 * C + c0, a2); STORE(SUFFIX, gR + 3 * C + c0, a3);                    \
        }                                                                                              \
    }                                                                                                  \
}                                                                                                      \
                                                                                                       \
int spherical_forward_##SUFFIX(int64_t E, int64_t O, int64_t L1, int64_t M, int64_t C, const T *vec,   \
                               const T *grid, const T *rho, const T *W, const T *h,                    \
                               const int64_t *sender, const int64_t *receiver, T *out) {               \
    T *scratch = (T *)malloc(sizeof(T) * (size_t)(O + O * L1 + L1 * C + C));                           \
    if (!scratch) return 1;                                                                            \
    T *cosv = scratch, *P = cosv + O, *R = P + O * L1, *k = R + L1 * C;                                \
    const int fast = L1 == 4 && C % LANES_##SUFFIX == 0;                                               \
    T inv_r;                                                                                           \
    for (int64_t e = 0; e < E; ++e) {                                                                  \
        legendre_##SUFFIX(vec + 3 * e, grid, O, L1, cosv, P, NULL, &inv_r);                            \
        degree_kernels_##SUFFIX(rho + e * L1 * M, W, L1, M, C, R);                                     \
        const T *hs = h + sender[e] * O * C;                                                           \
        T *outr = out + receiver[e] * O * C;                                                           \
        if (fast) { forward4_##SUFFIX(O, C, P, R, hs, outr); continue; }                               \
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
    T *scratch = (T *)malloc(sizeof(T) * (size_t)(2 * O + 2 * O * L1 + 2 * L1 * C + 2 * C + O * C)); \
    if (!scratch) return 1;                                                                            \
    T *cosv = scratch, *gcos = cosv + O, *P = gcos + O, *dP = P + O * L1, *R = dP + O * L1;            \
    T *gR = R + L1 * C, *k = gR + L1 * C, *t = k + C, *tbuf = t + C;                                   \
    const int fast = L1 == 4 && C % LANES_##SUFFIX == 0;                                               \
    T inv_r;                                                                                           \
    for (int64_t e = 0; e < E; ++e) {                                                                  \
        const T *v = vec + 3 * e;                                                                      \
        legendre_##SUFFIX(v, grid, O, L1, cosv, P, grad_vec ? dP : NULL, &inv_r);                      \
        degree_kernels_##SUFFIX(rho + e * L1 * M, W, L1, M, C, R);                                     \
        if (need_k) memset(gR, 0, sizeof(T) * (size_t)(L1 * C));                                       \
        const T *hs = h + sender[e] * O * C;                                                           \
        const T *gr = grad + receiver[e] * O * C;                                                      \
        T *ghs = grad_h ? grad_h + sender[e] * O * C : NULL;                                           \
        if (fast) {                                                                                    \
            backward4_##SUFFIX(O, C, P, dP, R, hs, gr, ghs, need_k ? gR : NULL, grad_vec ? tbuf : NULL); \
            for (int64_t o = 0; grad_vec && o < O; ++o) {                                              \
                const T *to = tbuf + o * C;                                                            \
                T g = 0;                                                                               \
                _Pragma("omp simd reduction(+:g)")                                                     \
                for (int64_t c = 0; c < C; ++c) g += to[c];                                            \
                gcos[o] = g;                                                                           \
            }                                                                                          \
        }                                                                                              \
        for (int64_t o = 0; !fast && o < O; ++o) {                                                     \
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
