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
// Each warp walks tiles of STATS_TILE consecutive voxels, lane-strided (at
// step j lane L reads voxel tile + 32j + L, so a warp's loads are coalesced)
// and folds runs of equal labels in registers (background voxels do not end
// a run). When lanes' runs end (another label, or the tile ends), the warp aggregates before the atomics:
// __match_any_sync groups the lanes by label, shuffle reductions combine each
// group, and one leader per label issues the atomics. Inside a component a
// whole tile costs one set of atomics.
#include "common.cuh"

#define STATS_STEPS 16
#define STATS_TILE (32 * STATS_STEPS)
#define STATS_KEY_NEG_INF 0x007fffffu
#define STATS_LIMIT 4611686018427387904LL

// round-half-even(v · 2^20), NaN → 0, clamped to ±2^62. All in FP32 (FP64
// runs at 1/64 rate on Orin): the product is exact in float (a power-of-two
// scaling; an overflow to ±inf is clamped like the finite values beyond
// 2^62), and for |x| < 2^62 __float2ll_rn converts exactly. So the result is
// bit-identical to the FP64 computation of the CPU twin.
__device__ __forceinline__ i64 quantize(float v) {
    if (v != v) return 0;
    const float x = v * 1048576.0f;
    if (x >= 4611686018427387904.0f) return STATS_LIMIT;
    if (x <= -4611686018427387904.0f) return -STATS_LIMIT;
    return __float2ll_rn(x);
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

// One lane's run: the statistics of label `cur` over the voxels it has seen
// since the run began (cur = 0: no run).
struct Run {
    u32 cur;
    u32 x0, y0, z0, x1, y1, z1, kmax;
    u64 cnt, slo, shi, qlo, qhi;
};

__device__ __forceinline__ void run_begin(Run& r, u32 label, u32 x, u32 y, u32 z) {
    r.cur = label;
    r.cnt = 0;
    r.slo = r.shi = r.qlo = r.qhi = 0;
    r.x0 = r.x1 = x;
    r.y0 = r.y1 = y;
    r.z0 = r.z1 = z;
    r.kmax = STATS_KEY_NEG_INF;
}

__device__ __forceinline__ void run_add(Run& r, u32 x, u32 y, u32 z, float v) {
    ++r.cnt;
    r.x0 = x < r.x0 ? x : r.x0;
    r.y0 = y < r.y0 ? y : r.y0;
    r.z0 = z < r.z0 ? z : r.z0;
    r.x1 = x > r.x1 ? x : r.x1;
    r.y1 = y > r.y1 ? y : r.y1;
    r.z1 = z > r.z1 ? z : r.z1;
    const i64 q = quantize(v);
    add128(r.slo, r.shi, (u64)q, q < 0 ? ~0ull : 0ull);
    const u64 a = (u64)(q < 0 ? -q : q);
    add128(r.qlo, r.qhi, a * a, __umul64hi(a, a));
    if (v == v) {
        const u32 k = float_key(v);
        r.kmax = k > r.kmax ? k : r.kmax;
    }
}

__device__ __forceinline__ u32 umin32(u32 a, u32 b) { return a < b ? a : b; }
__device__ __forceinline__ u32 umax32(u32 a, u32 b) { return a > b ? a : b; }

// Warp-aggregated flush of the runs of the lanes where `flush` holds (the
// whole warp calls it, with the full mask). Lanes are grouped by label; for
// each group a butterfly reduction over the whole warp (the other lanes
// contribute neutral values) gives every lane the group's totals, and the
// group's first lane issues the atomics. A lane alone in its group issues its
// own atomics without the reduction.
__device__ __forceinline__ void run_atomics(const Run& r, u64 cnt, u64 slo, u64 shi, u64 qlo, u64 qhi, u32 x0, u32 y0,
                                            u32 z0, u32 x1, u32 y1, u32 z1, u32 kmax, u64* __restrict__ rec64,
                                            u32* __restrict__ rec32) {
    u64* a = rec64 + 8 * (u64)r.cur;
    u32* b = rec32 + 8 * (u64)r.cur;
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

__device__ __forceinline__ void run_flush(const Run& r, bool flush, u64* __restrict__ rec64, u32* __restrict__ rec32) {
    const u32 lane = threadIdx.x & 31u;
    const u32 peers = __match_any_sync(EDGESEG_FULL_MASK, flush ? r.cur : 0u);
    // A lane alone with its label (speckle, a component's edge) has nothing
    // to combine: its own atomics, no shuffles.
    const bool alone = flush && __popc(peers) == 1;
    if (alone) {
        run_atomics(r, r.cnt, r.slo, r.shi, r.qlo, r.qhi, r.x0, r.y0, r.z0, r.x1, r.y1, r.z1, r.kmax, rec64, rec32);
    }
    u32 pending = __ballot_sync(EDGESEG_FULL_MASK, flush && !alone);
    while (pending != 0u) {
        const u32 lead = (u32)__ffs(pending) - 1u;
        const u32 members = __shfl_sync(EDGESEG_FULL_MASK, peers, lead);
        const bool mine = ((members >> lane) & 1u) != 0u;
        u64 cnt = mine ? r.cnt : 0ull;
        u64 slo = mine ? r.slo : 0ull, shi = mine ? r.shi : 0ull;
        u64 qlo = mine ? r.qlo : 0ull, qhi = mine ? r.qhi : 0ull;
        u32 x0 = mine ? r.x0 : 0xffffffffu, y0 = mine ? r.y0 : 0xffffffffu, z0 = mine ? r.z0 : 0xffffffffu;
        u32 x1 = mine ? r.x1 : 0u, y1 = mine ? r.y1 : 0u, z1 = mine ? r.z1 : 0u;
        u32 kmax = mine ? r.kmax : STATS_KEY_NEG_INF;
#pragma unroll
        for (u32 o = 16; o > 0; o >>= 1) {
            cnt += __shfl_xor_sync(EDGESEG_FULL_MASK, cnt, o);
            const u64 plo = __shfl_xor_sync(EDGESEG_FULL_MASK, slo, o);
            const u64 phi = __shfl_xor_sync(EDGESEG_FULL_MASK, shi, o);
            add128(slo, shi, plo, phi);
            const u64 pqlo = __shfl_xor_sync(EDGESEG_FULL_MASK, qlo, o);
            const u64 pqhi = __shfl_xor_sync(EDGESEG_FULL_MASK, qhi, o);
            add128(qlo, qhi, pqlo, pqhi);
            x0 = umin32(x0, __shfl_xor_sync(EDGESEG_FULL_MASK, x0, o));
            y0 = umin32(y0, __shfl_xor_sync(EDGESEG_FULL_MASK, y0, o));
            z0 = umin32(z0, __shfl_xor_sync(EDGESEG_FULL_MASK, z0, o));
            x1 = umax32(x1, __shfl_xor_sync(EDGESEG_FULL_MASK, x1, o));
            y1 = umax32(y1, __shfl_xor_sync(EDGESEG_FULL_MASK, y1, o));
            z1 = umax32(z1, __shfl_xor_sync(EDGESEG_FULL_MASK, z1, o));
            kmax = umax32(kmax, __shfl_xor_sync(EDGESEG_FULL_MASK, kmax, o));
        }
        if (lane == lead) run_atomics(r, cnt, slo, shi, qlo, qhi, x0, y0, z0, x1, y1, z1, kmax, rec64, rec32);
        pending &= ~members;
    }
}

// Counts, bounding boxes, sums, sums of squares and max of every label in
// 1..=count (labels above count are ignored). 1-D launch, blockDim a
// multiple of 32; warps stride over the tiles (every lane of a warp runs the
// same iterations, as the warp collectives need). Voxel indices are below
// 2^32 (checked on the host): coordinates use 32-bit arithmetic.
extern "C" __global__ void stats_accumulate(const u32* __restrict__ labels, const float* __restrict__ values, u64 n,
                                            u32 nx, u32 ny, u32 count, u64* __restrict__ rec64,
                                            u32* __restrict__ rec32) {
    const u32 lane = threadIdx.x & 31u;
    const u64 tiles = (n + STATS_TILE - 1) / STATS_TILE;
    const u64 warps = ((u64)gridDim.x * blockDim.x) >> 5;
    Run r;
    for (u64 t = ((u64)blockIdx.x * blockDim.x + threadIdx.x) >> 5; t < tiles; t += warps) {
        u64 i = t * STATS_TILE + lane;
        // Coordinates of voxel i (meaningless past the end, never used there).
        const u32 i32 = i < n ? (u32)i : 0u;
        u32 x = i32 % nx;
        const u32 row = i32 / nx;
        u32 y = row % ny;
        u32 z = row / ny;
        r.cur = 0u;
#pragma unroll 4
        for (int j = 0; j < STATS_STEPS; ++j, i += 32) {
            u32 l = i < n ? labels[i] : 0u;
            l = l <= count ? l : 0u;
            // Background does not end a run (a lane's voxels are 32 apart,
            // so it crosses the background between a component's rows).
            const bool ends = r.cur != 0u && l != 0u && l != r.cur;
            if (__ballot_sync(EDGESEG_FULL_MASK, ends) != 0u) run_flush(r, ends, rec64, rec32);
            if (l != 0u) {
                if (l != r.cur) run_begin(r, l, x, y, z);
                run_add(r, x, y, z, values[i]);
            }
            x += 32u;
            if (x >= nx) {
                y += x / nx;
                x %= nx;
                if (y >= ny) {
                    z += y / ny;
                    y %= ny;
                }
            }
        }
        const bool open = r.cur != 0u;
        if (__ballot_sync(EDGESEG_FULL_MASK, open) != 0u) run_flush(r, open, rec64, rec32);
    }
}

// max_index: the smallest linear index of a voxel of the label whose value
// is the label's max, bit for bit (so under the same total order as the max:
// a -0 does not match a +0 max, as in the CPU twin). Runs after
// stats_accumulate. Same lane-strided tiles as stats_accumulate: a lane's
// indices increase, so within a lane's run the first match is the smallest
// and a run issues at most one atomicMin.
extern "C" __global__ void stats_max_index(const u32* __restrict__ labels, const float* __restrict__ values, u64 n,
                                           u32 count, u64* __restrict__ rec64, const u32* __restrict__ rec32) {
    const u32 lane = threadIdx.x & 31u;
    const u64 tiles = (n + STATS_TILE - 1) / STATS_TILE;
    const u64 warps = ((u64)gridDim.x * blockDim.x) >> 5;
    for (u64 t = ((u64)blockIdx.x * blockDim.x + threadIdx.x) >> 5; t < tiles; t += warps) {
        u32 cur = 0u;
        bool done = true;
        u32 m = 0u;  // bits of the label's max (never a NaN)
        for (u64 i = t * STATS_TILE + lane, end = i + STATS_TILE; i < end && i < n; i += 32) {
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
