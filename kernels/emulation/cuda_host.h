// Host emulation of the CUDA built-ins the kernels of kernels/ use, so that
// the very same .cu sources compile as C++ (g++ -std=c++20 -include this
// file) and run on the CPU: one OS thread per GPU thread of a block, real
// barriers for __syncthreads and for the warp collectives (ballot, shuffles,
// match_any), GCC atomics for the CUDA atomics. See kernels/README.md for
// what this can and cannot show.
//
// Blocks run one after another (shared memory is a static per kernel); the
// threads of a block run concurrently and are NOT in lockstep, so any
// interleaving the OS scheduler produces is possible, including ones a GPU
// warp never produces. Every operation counted by EDGESEG_EMU_COUNT and
// every atomic is tallied in `emu::counters`.
#ifndef EDGESEG_CUDA_HOST_H
#define EDGESEG_CUDA_HOST_H

#include <atomic>
#include <barrier>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __shared__ static

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};
struct uint2 {
    unsigned x, y;
};
struct uint4 {
    unsigned x, y, z, w;
};
struct float4 {
    float x, y, z, w;
};
inline uint2 make_uint2(unsigned x, unsigned y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }

namespace emu {

// Operation counters (relaxed: only totals matter).
struct Counters {
    std::atomic<uint64_t> atomic{0}, find_root{0}, compress_write{0};
};
inline Counters counters;

// The state of the block being run.
struct Block {
    explicit Block(unsigned threads)
        : sync(threads), warps((threads + 31) / 32), exchange(threads) {
        for (unsigned w = 0; w < warps.size(); ++w) {
            const unsigned size = (w + 1) * 32 <= threads ? 32 : threads - w * 32;
            warps[w] = std::make_unique<std::barrier<>>(size);
        }
    }
    std::barrier<> sync;
    std::vector<std::unique_ptr<std::barrier<>>> warps;
    std::vector<uint64_t> exchange;  // one slot per thread for the warp collectives
};

inline thread_local unsigned tid = 0;  // linear thread index in the block
inline thread_local Block* block = nullptr;

}  // namespace emu

inline thread_local dim3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;

#define EDGESEG_EMU_COUNT(what) (emu::counters.what.fetch_add(1, std::memory_order_relaxed))

inline void __syncthreads() { emu::block->sync.arrive_and_wait(); }

namespace emu {

// Every lane of the warp publishes `v`; returns after all have, with the
// slots readable; `done()` must be called once the slots are read.
inline uint64_t* warp_publish(uint64_t v) {
    const unsigned warp_base = tid & ~31u;
    block->exchange[tid] = v;
    block->warps[tid >> 5]->arrive_and_wait();
    return &block->exchange[warp_base];
}
inline void warp_done() { block->warps[tid >> 5]->arrive_and_wait(); }
inline unsigned lane() { return tid & 31u; }
inline unsigned warp_size() {
    const unsigned threads = blockDim.x * blockDim.y * blockDim.z;
    const unsigned base = tid & ~31u;
    return threads - base < 32 ? threads - base : 32;
}

// The kernels only use the full mask: anything else is a bug here.
inline void check_mask(unsigned mask) {
    if (mask != 0xffffffffu || warp_size() != 32) {
        std::fprintf(stderr, "emulation: warp collective with mask %08x in a warp of %u lanes\n", mask, warp_size());
        std::abort();
    }
}

template <typename T>
inline uint64_t to_bits(T v) {
    uint64_t b = 0;
    std::memcpy(&b, &v, sizeof(T));
    return b;
}
template <typename T>
inline T from_bits(uint64_t b) {
    T v;
    std::memcpy(&v, &b, sizeof(T));
    return v;
}

template <typename T>
inline T shfl_from(unsigned mask, T v, unsigned src_lane_or_self) {
    check_mask(mask);
    const uint64_t* slots = warp_publish(to_bits(v));
    const T r = from_bits<T>(slots[src_lane_or_self & 31u]);
    warp_done();
    return r;
}

}  // namespace emu

inline unsigned __ballot_sync(unsigned mask, int pred) {
    emu::check_mask(mask);
    const uint64_t* slots = emu::warp_publish(pred != 0 ? 1 : 0);
    unsigned b = 0;
    for (unsigned l = 0; l < 32; ++l) b |= (slots[l] ? 1u : 0u) << l;
    emu::warp_done();
    return b;
}

inline unsigned __match_any_sync(unsigned mask, unsigned value) {
    emu::check_mask(mask);
    const uint64_t* slots = emu::warp_publish(value);
    unsigned b = 0;
    for (unsigned l = 0; l < 32; ++l) b |= (slots[l] == value ? 1u : 0u) << l;
    emu::warp_done();
    return b;
}

template <typename T>
inline T __shfl_sync(unsigned mask, T v, int src) {
    return emu::shfl_from(mask, v, (unsigned)src);
}
template <typename T>
inline T __shfl_xor_sync(unsigned mask, T v, int o) {
    return emu::shfl_from(mask, v, emu::lane() ^ (unsigned)o);
}
template <typename T>
inline T __shfl_up_sync(unsigned mask, T v, unsigned d) {
    const unsigned l = emu::lane();
    return emu::shfl_from(mask, v, l >= d ? l - d : l);
}
template <typename T>
inline T __shfl_down_sync(unsigned mask, T v, unsigned d) {
    const unsigned l = emu::lane();
    return emu::shfl_from(mask, v, l + d < 32 ? l + d : l);
}

inline int __popc(unsigned v) { return __builtin_popcount(v); }
inline int __ffs(unsigned v) { return __builtin_ffs((int)v); }
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
    return (unsigned long long)(((unsigned __int128)a * b) >> 64);
}
inline long long __double2ll_rn(double x) { return std::llrint(x); }  // default rounding: to nearest even
inline long long __float2ll_rn(float x) { return std::llrint(x); }
inline unsigned __float_as_uint(float v) { return emu::from_bits<unsigned>(emu::to_bits(v)); }
inline float __uint_as_float(unsigned v) { return emu::from_bits<float>(v); }
// glibc's fmaf rounds once; it passes NaN payloads through as x86 does (the
// kernels canonicalise NaN results, so the difference never shows).
using std::fmaf;

template <typename T>
inline T atomicAdd(T* p, T v) {
    EDGESEG_EMU_COUNT(atomic);
    return __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
}
template <typename T>
inline T atomicCAS(T* p, T expected, T desired) {
    EDGESEG_EMU_COUNT(atomic);
    __atomic_compare_exchange_n(p, &expected, desired, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
    return expected;
}
template <typename T>
inline T atomicMin(T* p, T v) {
    EDGESEG_EMU_COUNT(atomic);
    T old = __atomic_load_n(p, __ATOMIC_RELAXED);
    while (v < old && !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
    return old;
}
template <typename T>
inline T atomicMax(T* p, T v) {
    EDGESEG_EMU_COUNT(atomic);
    T old = __atomic_load_n(p, __ATOMIC_RELAXED);
    while (v > old && !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
    return old;
}

namespace emu {

// Runs `kernel` over `grid` blocks of `threads` threads: a pool of `threads`
// OS threads, started once per launch, runs the blocks one after another
// (each block gets fresh barriers; a thread that returns from the kernel
// drops out of the block's barriers, as an exited GPU thread does).
inline void launch(dim3 grid, dim3 blk, const std::function<void()>& kernel) {
    const unsigned threads = blk.x * blk.y * blk.z;
    gridDim = grid;
    blockDim = blk;
    const uint64_t blocks = (uint64_t)grid.x * grid.y * grid.z;
    std::unique_ptr<Block> current = std::make_unique<Block>(threads);
    uint64_t index = 0;
    std::barrier<std::function<void()>> end(threads, std::function<void()>([&] {
        ++index;
        current = std::make_unique<Block>(threads);
    }));
    std::vector<std::thread> pool;
    pool.reserve(threads);
    for (unsigned t = 0; t < threads; ++t) {
        pool.emplace_back([&, t] {
            tid = t;
            threadIdx = {t % blk.x, (t / blk.x) % blk.y, t / (blk.x * blk.y)};
            for (;;) {
                if (index >= blocks) break;
                block = current.get();
                blockIdx = {(unsigned)(index % grid.x), (unsigned)((index / grid.x) % grid.y),
                            (unsigned)(index / ((uint64_t)grid.x * grid.y))};
                kernel();
                // Exited: no longer counted by this block's barriers.
                block->sync.arrive_and_drop();
                block->warps[tid >> 5]->arrive_and_drop();
                end.arrive_and_wait();
            }
        });
    }
    for (auto& th : pool) th.join();
}

}  // namespace emu

#endif  // EDGESEG_CUDA_HOST_H
