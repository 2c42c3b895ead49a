// 3-D connected-component labelling (see kernels/README.md for the contract).
//
// Union-find in global memory, ECL-CC style (Jaiganesh & Burtscher 2018)
// on a voxel grid:
//   1. label_init_C:  parent[i] = first equal-valued backward neighbour of i
//                     (below, behind, left, then the rest), else i.
//   2. label_merge_C: union of i with every other equal-valued backward
//                     neighbour that does not touch one already joined. Roots are hooked with atomicCAS, always the
//                     larger root under the smaller; finds shorten paths by
//                     pointer jumping (plain stores into non-root slots only).
//   3. label_compress: parent[i] = root(i); one bit per voxel marks roots
//                     (warp ballot), one popcount per 32-voxel word.
//   4. scan_tiles / scan_add: exclusive prefix sum of the word popcounts.
//   5. label_finalize: label[i] = rank(root(i)) + 1, in place.
//
// Invariant: parent[i] <= i for every foreground voxel at all times (init
// links backwards, hooks link a root under a smaller root, pointer jumps
// store an ancestor). So the root of a component is its smallest linear
// index, i.e. its first voxel in raster order, and numbering roots by rank
// gives exactly the cc3d/scipy numbering.
//
// Indices: volumes hold fewer than 2^32 voxels (checked on the host), so a
// voxel index fits a u32 and is computed in 32 bits; loop counters are
// 64-bit so that a stride cannot wrap.
#include "common.cuh"

// The root of x, shortening the path on the way (pointer jumping). Loads are
// volatile: other threads hook roots and shorten paths concurrently. Stores go
// only to non-root slots (a slot that is not a root never becomes one again),
// and only ever store an ancestor, so they cannot undo a hook.
__device__ __forceinline__ u32 find_root(u32* parent, u32 x) {
    EDGESEG_EMU_COUNT(find_root);
    volatile u32* p = parent;
    u32 cur = p[x];
    if (cur != x) {
        u32 prev = x;
        u32 next;
        while (cur > (next = p[cur])) {
            p[prev] = next;
            prev = cur;
            cur = next;
        }
    }
    return cur;
}

// Joins the trees of a and b: hooks the larger root under the smaller with a
// CAS that only succeeds while the larger is still a root; retries otherwise.
// Terminates: the larger of the two roots strictly decreases each round.
// Early exit when a and b already share a parent (the common case once the
// neighbours' own unions have run).
__device__ __forceinline__ void unite(u32* parent, u32 a, u32 b) {
    volatile u32* p = parent;
    if (p[a] == p[b]) return;
    u32 ra = find_root(parent, a);
    u32 rb = find_root(parent, b);
    while (ra != rb) {
        if (ra < rb) {
            const u32 t = ra;
            ra = rb;
            rb = t;
        }
        const u32 old = atomicCAS(&parent[ra], ra, rb);
        if (old == ra) return;
        ra = find_root(parent, old);
        rb = find_root(parent, rb);
    }
}

// The k-th backward neighbour offset, in the order the passes visit them
// (k = 0..12): the voxel below first (it touches every other backward
// neighbour under 26-connectivity, and most of them under 18), then the one
// behind, then the one to the left, then the rest in (dz, dy, dx) order.
__device__ __forceinline__ void backward_offset(int k, int& dx, int& dy, int& dz) {
    switch (k) {
        case 0: dx = 0; dy = 0; dz = -1; break;
        case 1: dx = 0; dy = -1; dz = 0; break;
        case 2: dx = -1; dy = 0; dz = 0; break;
        case 3: dx = -1; dy = -1; dz = -1; break;
        case 4: dx = 0; dy = -1; dz = -1; break;
        case 5: dx = 1; dy = -1; dz = -1; break;
        case 6: dx = -1; dy = 0; dz = -1; break;
        case 7: dx = 1; dy = 0; dz = -1; break;
        case 8: dx = -1; dy = 1; dz = -1; break;
        case 9: dx = 0; dy = 1; dz = -1; break;
        case 10: dx = 1; dy = 1; dz = -1; break;
        case 11: dx = -1; dy = -1; dz = 0; break;
        default: dx = 1; dy = -1; dz = 0; break;
    }
}

__device__ __forceinline__ int iabs(int v) { return v < 0 ? -v : v; }

// Whether offsets k and m are neighbours of each other under the
// connectivity of at most MAXN non-zero components (constant once unrolled).
template <int MAXN>
__device__ __forceinline__ bool offsets_touch(int k, int m) {
    int ax, ay, az, bx, by, bz;
    backward_offset(k, ax, ay, az);
    backward_offset(m, bx, by, bz);
    const int ex = iabs(ax - bx), ey = iabs(ay - by), ez = iabs(az - bz);
    return ex <= 1 && ey <= 1 && ez <= 1 && (ex != 0) + (ey != 0) + (ez != 0) <= MAXN;
}

// Visits the backward half-neighbourhood of voxel i = (x, y, z) (the offsets
// of backward_offset with at most MAXN non-zero components: 1 → 6-, 2 → 18-,
// 3 → 26-connectivity). INIT: links i to the first equal-valued neighbour
// (or to itself). Otherwise: unites i with every equal-valued neighbour but
// those that touch a neighbour already joined to i (the first one by init,
// the others by this pass): two equal-valued neighbours that touch are joined
// by the later one's own pass, so i reaches them anyway (a decision tree as
// in block-based CCL, derived from the offsets at compile time).
template <int MAXN, bool INIT>
__device__ __forceinline__ void visit(const u8* __restrict__ mask, u32* parent, u32 x, u32 y, u32 z, u32 i, u8 v,
                                      u32 nx, u32 ny, u32 plane) {
    u32 joined = 0u;  // bit k: offset k is an equal-valued neighbour joined to i
#pragma unroll
    for (int k = 0; k < 13; ++k) {
        int dx, dy, dz;
        backward_offset(k, dx, dy, dz);
        if ((dx != 0) + (dy != 0) + (dz != 0) > MAXN) continue;
        if (dz < 0 && z == 0) continue;
        if (dy < 0 && y == 0) continue;
        if (dy > 0 && y + 1 >= ny) continue;
        if (dx < 0 && x == 0) continue;
        if (dx > 0 && x + 1 >= nx) continue;
        bool covered = false;
#pragma unroll
        for (int m = 0; m < k; ++m) {
            if (offsets_touch<MAXN>(k, m) && (joined & (1u << m))) covered = true;
        }
        if (covered) continue;
        // In range: the neighbour exists, so the u32 arithmetic cannot wrap.
        u32 j = i + (u32)dx;  // wrapping u32 arithmetic, exact in the end
        if (dz < 0) j -= plane;
        if (dy < 0) j -= nx;
        if (dy > 0) j += nx;
        if (mask[j] != v) continue;
        if (joined == 0u) {
            joined = 1u << k;
            if (INIT) {
                parent[i] = j;
                return;
            }
            continue;
        }
        joined |= 1u << k;
        if (!INIT) unite(parent, i, j);
    }
    if (INIT) parent[i] = i;
}

// One thread per voxel: x from the 2-D block's x, rows (y + ny*z) strided
// over the grid's y. Launch with blockDim.x * gridDim.x >= nx. Voxel indices
// are below 2^32 (checked on the host), so the index arithmetic is 32-bit
// (no 64-bit division per voxel); only the row counter is 64-bit, so that the
// stride cannot wrap.
template <int MAXN, bool INIT>
__device__ __forceinline__ void label_pass(const u8* __restrict__ mask, u32* parent, u32 nx, u32 ny, u32 nz) {
    const u32 x = blockIdx.x * blockDim.x + threadIdx.x;
    if (x >= nx) return;
    const u32 plane = nx * ny;
    const u64 rows = (u64)ny * (u64)nz;
    const u64 step = (u64)gridDim.y * (u64)blockDim.y;
    for (u64 row = (u64)blockIdx.y * blockDim.y + threadIdx.y; row < rows; row += step) {
        const u32 r = (u32)row;
        const u32 i = r * nx + x;
        const u8 v = mask[i];
        if (v == 0) continue;
        const u32 y = r % ny;
        const u32 z = r / ny;
        visit<MAXN, INIT>(mask, parent, x, y, z, i, v, nx, ny, plane);
    }
}

extern "C" __global__ void label_init_6(const u8* __restrict__ mask, u32* parent, u32 nx, u32 ny, u32 nz) {
    label_pass<1, true>(mask, parent, nx, ny, nz);
}
extern "C" __global__ void label_init_18(const u8* __restrict__ mask, u32* parent, u32 nx, u32 ny, u32 nz) {
    label_pass<2, true>(mask, parent, nx, ny, nz);
}
extern "C" __global__ void label_init_26(const u8* __restrict__ mask, u32* parent, u32 nx, u32 ny, u32 nz) {
    label_pass<3, true>(mask, parent, nx, ny, nz);
}
extern "C" __global__ void label_merge_6(const u8* __restrict__ mask, u32* parent, u32 nx, u32 ny, u32 nz) {
    label_pass<1, false>(mask, parent, nx, ny, nz);
}
extern "C" __global__ void label_merge_18(const u8* __restrict__ mask, u32* parent, u32 nx, u32 ny, u32 nz) {
    label_pass<2, false>(mask, parent, nx, ny, nz);
}
extern "C" __global__ void label_merge_26(const u8* __restrict__ mask, u32* parent, u32 nx, u32 ny, u32 nz) {
    label_pass<3, false>(mask, parent, nx, ny, nz);
}

// parent[i] = root(i) for every foreground voxel; bits[w] bit b set iff voxel
// 32w + b is a root; wcount[w] = popcount(bits[w]); wcount[nwords] = 0 (the
// slot the exclusive scan turns into the total). 1-D launch, blockDim a
// multiple of 32: each warp handles one aligned 32-voxel word per step.
// Runs after all merges, so parents only change here from an ancestor to
// the root: concurrent readers see either, both in the same tree.
extern "C" __global__ void label_compress(const u8* __restrict__ mask, u32* parent, u64 n, u32* __restrict__ bits,
                                          u32* __restrict__ wcount) {
    const u32 lane = threadIdx.x & 31u;
    const u64 stride = (u64)gridDim.x * blockDim.x;
    if (blockIdx.x == 0 && threadIdx.x == 0) wcount[(n + 31) >> 5] = 0u;
    for (u64 base = (u64)blockIdx.x * blockDim.x + (threadIdx.x - lane); base < n; base += stride) {
        const u64 i = base + lane;
        bool root = false;
        if (i < n && mask[i] != 0) {
            const u32 p = parent[i];
            if (p == (u32)i) {
                root = true;
            } else {
                u32 r = p;
                u32 q;
                while ((q = parent[r]) != r) r = q;
                if (r != p) {  // most voxels point at their root already
                    EDGESEG_EMU_COUNT(compress_write);
                    parent[i] = r;
                }
            }
        }
        const u32 b = __ballot_sync(EDGESEG_FULL_MASK, root);
        if (lane == 0) {
            bits[base >> 5] = b;
            wcount[base >> 5] = (u32)__popc(b);
        }
    }
}

// labels[i] (holding root(i) on entry) = 1 + number of roots before root(i);
// 0 for background. prefix = exclusive scan of the word popcounts. In place:
// each thread reads and writes only its own slot of `labels`.
extern "C" __global__ void label_finalize(const u8* __restrict__ mask, u32* __restrict__ labels, u64 n,
                                          const u32* __restrict__ bits, const u32* __restrict__ prefix) {
    const u64 stride = (u64)gridDim.x * blockDim.x;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        u32 out = 0u;
        if (mask[i] != 0) {
            const u32 r = labels[i];
            const u32 w = r >> 5;
            out = prefix[w] + (u32)__popc(bits[w] & ((1u << (r & 31u)) - 1u)) + 1u;
        }
        labels[i] = out;
    }
}

// In-place exclusive scan of each 2048-element tile of data[0..m);
// tile_sums[t] = the tile's total. blockDim = 256, gridDim = ceil(m / 2048).
extern "C" __global__ void scan_tiles(u32* __restrict__ data, u64 m, u32* __restrict__ tile_sums) {
    const u64 base = (u64)blockIdx.x * EDGESEG_SCAN_TILE + (u64)threadIdx.x * EDGESEG_SCAN_ITEMS;
    u32 v[EDGESEG_SCAN_ITEMS];
    u32 sum = 0u;
#pragma unroll
    for (int k = 0; k < EDGESEG_SCAN_ITEMS; ++k) {
        const u64 idx = base + (u64)k;
        v[k] = idx < m ? data[idx] : 0u;
        sum += v[k];
    }
    u32 total;
    u32 run = block_exclusive_scan(sum, &total);
#pragma unroll
    for (int k = 0; k < EDGESEG_SCAN_ITEMS; ++k) {
        const u64 idx = base + (u64)k;
        if (idx < m) data[idx] = run;
        run += v[k];
    }
    if (threadIdx.x == 0) tile_sums[blockIdx.x] = total;
}

// data[i] += offsets[tile of i] (offsets: the exclusive scan of the tile
// sums). Same launch shape as scan_tiles.
extern "C" __global__ void scan_add(u32* __restrict__ data, u64 m, const u32* __restrict__ offsets) {
    const u32 off = offsets[blockIdx.x];
    const u64 base = (u64)blockIdx.x * EDGESEG_SCAN_TILE + (u64)threadIdx.x * EDGESEG_SCAN_ITEMS;
#pragma unroll
    for (int k = 0; k < EDGESEG_SCAN_ITEMS; ++k) {
        const u64 idx = base + (u64)k;
        if (idx < m) data[idx] += off;
    }
}
