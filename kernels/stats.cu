// Per-component statistics (see kernels/README.md for the contract).
//
// One record per label l in 0..=count (record 0 unused), array-of-structs so
// that the atomics of one label share a cache line:
//   rec64[8l + 0] voxels
//   rec64[8l + 1], [8l + 2]  Σ q       (i128 as lo, hi words; two's complement)
//   rec64[8l + 3], [8l + 4]  Σ q²      (u128 as lo, hi words)
//   rec64[8l + 5] max_index  (u64 max when no voxel holds the max, i.e. all NaN)
//   rec32[8l + 0..3] bbox min (x, y, z), rec32[8l + 3..6] bbox max
//   rec32[8l + 6] ordered key of the max (NaN ignored; key(-inf) if none)
// where q = quantize(v) = round-half-even(v · 2^20) clamped to ±2^62, NaN → 0.
//
// Sums are integer sums mod 2^128 (the u128/i128 wrapping sums of the CPU
// twin), so the order of the atomics cannot change the result. A 128-bit
// atomic add is an atomicAdd on the low word, the carry out of it detected
// from the old value (old + lo < old), then an atomicAdd of hi + carry on the
// high word: each carry is computed against the true previous value of the
// low word, so the high word ends up exact.
//
// Each thread walks a run of SEG consecutive voxels and folds runs of equal
// labels in registers before touching global memory.
#include "common.cuh"

#define STATS_SEG 16
#define STATS_KEY_NEG_INF 0x007fffffu
#define STATS_LIMIT 4611686018427387904LL

// round-half-even(v · 2^20), NaN → 0, clamped to ±2^62. The product is exact
// in double (a power-of-two scaling of a float), so only the conversion
// rounds; the clamp comes before the conversion (which would overflow).
__device__ __forceinline__ i64 quantize(float v) {
    if (v != v) return 0;
    const double x = (double)v * 1048576.0;
    if (x >= 4611686018427387904.0) return STATS_LIMIT;
    if (x <= -4611686018427387904.0) return -STATS_LIMIT;
    return __double2ll_rn(x);
}

// Order-preserving map of a non-NaN float to u32 (-0 below +0).
__device__ __forceinline__ u32 float_key(float v) {
    const u32 b = __float_as_uint(v);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

__device__ __forceinline__ float key_float(u32 k) {
    const u32 b = (k & 0x80000000u) ? (k & 0x7fffffffu) : ~k;
    return __uint_as_float(b);
}

// (lo, hi) += (alo, ahi) mod 2^128.
__device__ __forceinline__ void add128(u64& lo, u64& hi, u64 alo, u64 ahi) {
    const u64 r = lo + alo;
    hi += ahi + (r < lo ? 1ull : 0ull);
    lo = r;
}

// p[0..2] (lo, hi) += (lo, hi) mod 2^128, atomically in the sense above.
__device__ __forceinline__ void atomic_add128(u64* p, u64 lo, u64 hi) {
    if (lo != 0) {
        const u64 old = atomicAdd(&p[0], lo);
        if (old + lo < old) hi += 1ull;
    }
    if (hi != 0) atomicAdd(&p[1], hi);
}

extern "C" __global__ void stats_init(u64* __restrict__ rec64, u32* __restrict__ rec32, u64 records) {
    const u64 stride = (u64)gridDim.x * blockDim.x;
    for (u64 r = (u64)blockIdx.x * blockDim.x + threadIdx.x; r < records; r += stride) {
        u64* a = rec64 + 8 * r;
        u32* b = rec32 + 8 * r;
        a[0] = 0ull;
        a[1] = 0ull;
        a[2] = 0ull;
        a[3] = 0ull;
        a[4] = 0ull;
        a[5] = ~0ull;
        a[6] = 0ull;
        a[7] = 0ull;
        b[0] = 0xffffffffu;
        b[1] = 0xffffffffu;
        b[2] = 0xffffffffu;
        b[3] = 0u;
        b[4] = 0u;
        b[5] = 0u;
        b[6] = STATS_KEY_NEG_INF;
        b[7] = 0u;
    }
}

// Counts, bounding boxes, sums, sums of squares and max of every label in
// 1..=count (labels above count are ignored). 1-D grid-stride launch.
extern "C" __global__ void stats_accumulate(const u32* __restrict__ labels, const float* __restrict__ values, u64 n,
                                            u32 nx, u32 ny, u32 count, u64* __restrict__ rec64,
                                            u32* __restrict__ rec32) {
    const u64 nseg = (n + STATS_SEG - 1) / STATS_SEG;
    const u64 stride = (u64)gridDim.x * blockDim.x;
    for (u64 s = (u64)blockIdx.x * blockDim.x + threadIdx.x; s < nseg; s += stride) {
        const u64 i0 = s * STATS_SEG;
        const u64 i1 = i0 + STATS_SEG < n ? i0 + STATS_SEG : n;
        u32 x = (u32)(i0 % nx);
        const u64 row = i0 / nx;
        u32 y = (u32)(row % ny);
        u32 z = (u32)(row / ny);

        u32 cur = 0u;
        u64 cnt = 0, slo = 0, shi = 0, qlo = 0, qhi = 0;
        u32 x0 = 0, y0 = 0, z0 = 0, x1 = 0, y1 = 0, z1 = 0, kmax = STATS_KEY_NEG_INF;
        for (u64 i = i0; i <= i1; ++i) {
            const u32 l = i < i1 ? labels[i] : 0u;  // i == i1: flush the last run
            if (l != cur) {
                if (cur != 0u) {
                    u64* a = rec64 + 8 * (u64)cur;
                    u32* b = rec32 + 8 * (u64)cur;
                    atomicAdd(&a[0], cnt);
                    atomic_add128(&a[1], slo, shi);
                    atomic_add128(&a[3], qlo, qhi);
                    atomicMin(&b[0], x0);
                    atomicMin(&b[1], y0);
                    atomicMin(&b[2], z0);
                    atomicMax(&b[3], x1);
                    atomicMax(&b[4], y1);
                    atomicMax(&b[5], z1);
                    if (kmax != STATS_KEY_NEG_INF) atomicMax(&b[6], kmax);
                }
                cur = l <= count ? l : 0u;
                cnt = 0;
                slo = shi = qlo = qhi = 0;
                x0 = x1 = x;
                y0 = y1 = y;
                z0 = z1 = z;
                kmax = STATS_KEY_NEG_INF;
            }
            if (i == i1) break;
            if (cur != 0u) {
                ++cnt;
                x0 = x < x0 ? x : x0;
                y0 = y < y0 ? y : y0;
                z0 = z < z0 ? z : z0;
                x1 = x > x1 ? x : x1;
                y1 = y > y1 ? y : y1;
                z1 = z > z1 ? z : z1;
                const float v = values[i];
                const i64 q = quantize(v);
                add128(slo, shi, (u64)q, q < 0 ? ~0ull : 0ull);
                const u64 a = (u64)(q < 0 ? -q : q);
                add128(qlo, qhi, a * a, __umul64hi(a, a));
                if (v == v) {
                    const u32 k = float_key(v);
                    kmax = k > kmax ? k : kmax;
                }
            }
            if (++x == nx) {
                x = 0;
                if (++y == ny) {
                    y = 0;
                    ++z;
                }
            }
        }
    }
}

// max_index: the smallest linear index of a voxel of the label whose value
// is the label's max, bit for bit (so under the same total order as the max:
// a -0 does not match a +0 max, as in the CPU twin). Runs after
// stats_accumulate. Within a run the first match is the smallest index, so a
// run issues at most one atomicMin.
extern "C" __global__ void stats_max_index(const u32* __restrict__ labels, const float* __restrict__ values, u64 n,
                                           u32 count, u64* __restrict__ rec64, const u32* __restrict__ rec32) {
    const u64 nseg = (n + STATS_SEG - 1) / STATS_SEG;
    const u64 stride = (u64)gridDim.x * blockDim.x;
    for (u64 s = (u64)blockIdx.x * blockDim.x + threadIdx.x; s < nseg; s += stride) {
        const u64 i0 = s * STATS_SEG;
        const u64 i1 = i0 + STATS_SEG < n ? i0 + STATS_SEG : n;
        u32 cur = 0u;
        bool done = true;
        u32 m = 0u;  // bits of the label's max (never a NaN)
        for (u64 i = i0; i < i1; ++i) {
            const u32 l = labels[i];
            if (l != cur) {
                cur = l <= count ? l : 0u;
                done = cur == 0u;
                if (!done) m = __float_as_uint(key_float(rec32[8 * (u64)cur + 6]));
            }
            if (!done && __float_as_uint(values[i]) == m) {
                atomicMin(&rec64[8 * (u64)cur + 5], i);
                done = true;
            }
        }
    }
}
