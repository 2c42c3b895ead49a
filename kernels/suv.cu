// Stored PET values to SUV fused with a threshold (see kernels/README.md).
//
//   suv[i]  = fmaf((float)stored[i], a_k, b_k)   k = slice of voxel i
//   mask[i] = suv[i] >= t ? 1 : 0
//   a NaN SUV is stored as the canonical NaN 0x7fffffff (SUV_CANONICAL_NAN)
//
// The fma is explicit (and the file is compiled with -fmad=false / NVRTC
// --fmad=false), so contraction cannot change a result: fmaf rounds once,
// exactly like Rust's f32::mul_add. Memory-bound: each thread handles groups
// of 8 voxels with one 16-byte load and 16 + 16 + 8 bytes of stores where the
// pointers are aligned (checked here, so device views at any offset work),
// scalar code for the tail and for unaligned pointers.
#include "common.cuh"

#define SUV_GROUP 8
// The NaN every SUV NaN is written as: the one NVIDIA's fmaf returns, which
// the CPU twin writes too (x86/aarch64 pass an input NaN through instead).
#define SUV_CANONICAL_NAN 0x7fffffffu

// fmaf with NaN results canonicalised, so that the bits agree with the twin.
__device__ __forceinline__ float suv_of(float stored, float a, float b) {
    const float r = fmaf(stored, a, b);
    return r != r ? __uint_as_float(SUV_CANONICAL_NAN) : r;
}

// scale: 2·nz floats, (a_k, b_k) interleaved. plane = nx·ny >= 1.
extern "C" __global__ void suv_threshold(const i16* __restrict__ stored, const float* __restrict__ scale, float t,
                                         u64 n, u64 plane, float* __restrict__ suv, u8* __restrict__ mask) {
    const bool aligned = ((((u64)stored) | ((u64)suv)) & 15ull) == 0 && (((u64)mask) & 7ull) == 0;
    const u64 groups = (n + SUV_GROUP - 1) / SUV_GROUP;
    const u64 stride = (u64)gridDim.x * blockDim.x;
    for (u64 g = (u64)blockIdx.x * blockDim.x + threadIdx.x; g < groups; g += stride) {
        const u64 base = g * SUV_GROUP;
        u64 k = base / plane;
        u64 next = (k + 1) * plane;  // first voxel of slice k + 1
        float a = scale[2 * k];
        float b = scale[2 * k + 1];
        if (aligned && base + SUV_GROUP <= n) {
            const uint4 raw = *reinterpret_cast<const uint4*>(stored + base);
            const u32 words[4] = {raw.x, raw.y, raw.z, raw.w};
            float out[SUV_GROUP];
            u32 m[2] = {0u, 0u};
#pragma unroll
            for (int j = 0; j < SUV_GROUP; ++j) {
                if (base + (u64)j >= next) {  // at most one slice boundary per voxel (plane >= 1)
                    ++k;
                    next += plane;
                    a = scale[2 * k];
                    b = scale[2 * k + 1];
                }
                const u32 w = words[j >> 1];
                const i16 s = (i16)(u16)((j & 1) ? (w >> 16) : (w & 0xffffu));
                out[j] = suv_of((float)s, a, b);
                m[j >> 2] |= (out[j] >= t ? 1u : 0u) << (8 * (j & 3));
            }
            float4* dst = reinterpret_cast<float4*>(suv + base);
            dst[0] = make_float4(out[0], out[1], out[2], out[3]);
            dst[1] = make_float4(out[4], out[5], out[6], out[7]);
            *reinterpret_cast<uint2*>(mask + base) = make_uint2(m[0], m[1]);
        } else {
            const u64 end = base + SUV_GROUP < n ? base + SUV_GROUP : n;
            for (u64 i = base; i < end; ++i) {
                if (i >= next) {
                    ++k;
                    next += plane;
                    a = scale[2 * k];
                    b = scale[2 * k + 1];
                }
                const float r = suv_of((float)stored[i], a, b);
                suv[i] = r;
                mask[i] = r >= t ? 1 : 0;
            }
        }
    }
}
