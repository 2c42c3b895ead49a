// Shared definitions of the edgeseg kernels.
//
// Every kernel file is compiled twice: by nvcc at build time (PTX per arch)
// and, where no embedded PTX fits the device, by NVRTC at run time. NVRTC has
// no system headers, so nothing here includes any: fixed-width types are
// spelled out and only CUDA built-ins are used. build.rs inlines this header
// into each .cu file (`#include "common.cuh"` is replaced by this text), so
// nvcc and NVRTC compile the very same text.
#ifndef EDGESEG_COMMON_CUH
#define EDGESEG_COMMON_CUH

typedef unsigned char u8;
typedef unsigned short u16;
typedef short i16;
typedef unsigned int u32;
typedef unsigned long long u64;
typedef long long i64;

#define EDGESEG_FULL_MASK 0xffffffffu

// Operation counters of the host emulation (kernels/emulation/); nothing on
// the device.
#ifndef EDGESEG_EMU_COUNT
#define EDGESEG_EMU_COUNT(what)
#endif

// Block-wide scans use exactly this many threads (8 warps).
#define EDGESEG_SCAN_THREADS 256
// Elements per thread in the tile scans; a tile is 256 × 8 = 2048 elements.
#define EDGESEG_SCAN_ITEMS 8
#define EDGESEG_SCAN_TILE (EDGESEG_SCAN_THREADS * EDGESEG_SCAN_ITEMS)

// Exclusive prefix sum of `v` over a block of EDGESEG_SCAN_THREADS threads
// (1-D, all of them must call it; no early return before it). Returns the
// sum of `v` over the threads before this one and stores the block total in
// `*total`. Wrapping u32 arithmetic.
__device__ __forceinline__ u32 block_exclusive_scan(u32 v, u32* total) {
    __shared__ u32 warp_sums[EDGESEG_SCAN_THREADS / 32];
    const u32 lane = threadIdx.x & 31u;
    const u32 warp = threadIdx.x >> 5;
    u32 x = v;
#pragma unroll
    for (u32 o = 1; o < 32; o <<= 1) {
        const u32 y = __shfl_up_sync(EDGESEG_FULL_MASK, x, o);
        if (lane >= o) x += y;
    }
    if (lane == 31) warp_sums[warp] = x;
    __syncthreads();
    if (warp == 0) {
        u32 s = lane < EDGESEG_SCAN_THREADS / 32 ? warp_sums[lane] : 0u;
#pragma unroll
        for (u32 o = 1; o < EDGESEG_SCAN_THREADS / 32; o <<= 1) {
            const u32 y = __shfl_up_sync(EDGESEG_FULL_MASK, s, o);
            if (lane >= o) s += y;
        }
        if (lane < EDGESEG_SCAN_THREADS / 32) warp_sums[lane] = s;
    }
    __syncthreads();
    const u32 before = warp == 0 ? 0u : warp_sums[warp - 1];
    *total = warp_sums[EDGESEG_SCAN_THREADS / 32 - 1];
    __syncthreads();  // warp_sums may be reused by the next call
    return before + x - v;
}

#endif  // EDGESEG_COMMON_CUH
