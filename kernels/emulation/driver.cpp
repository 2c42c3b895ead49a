// The host emulation driver: runs the kernels of kernels/*.cu, compiled as
// C++ with cuda_host.h, with the launch sequence of daemon/gpu/cuda.rs
// (mirrored here: same block shapes, same kernels in the same order, grids
// capped as the caller asks so that every stride loop runs). Built by
// build.rs with the `emulation` feature; driven by daemon/gpu/emulation.rs.
//
//   driver label CONN NX NY NZ CAP1D CAPY REPS IN OUT
//       IN: mask (n bytes). OUT: REPS × (labels: n u32, count: u32).
//   driver stats NX NY NZ COUNT CAP1D IN OUT
//       IN: labels (n u32), values (n f32). OUT: rec64 (8·(count+1) u64),
//       rec32 (8·(count+1) u32).
//   driver suv NX NY NZ T_BITS CAP1D OFF_STORED OFF_SUV OFF_MASK IN OUT
//       IN: stored (n i16), scale (2·nz f32). OUT: suv (n f32), mask (n u8).
//       OFF_*: element offsets of the device buffers from 16-byte alignment.
//
// Prints the operation counters on stdout: "atomic=A find_root=F
// compress_write=W launches=L". Exit status 0, or 1 with a message.
#include "cuda_host.h"

#include <cstdio>
#include <cstdlib>
#include <string>

#include "../label.cu"
#include "../stats.cu"
#include "../suv.cu"

namespace {

const unsigned BLOCK = 256;
const uint64_t SCAN_TILE = 2048;
const uint64_t STATS_VOXELS_PER_THREAD = 16;  // STATS_TILE / 32
const uint64_t SUV_GROUP_ = 8;
uint64_t launches = 0;

[[noreturn]] void fail(const std::string& msg) {
    std::fprintf(stderr, "emulation driver: %s\n", msg.c_str());
    std::exit(1);
}

uint64_t num(const char* s) {
    char* end = nullptr;
    const unsigned long long v = std::strtoull(s, &end, 10);
    if (end == s || *end != 0) fail(std::string("not a number: ") + s);
    return v;
}

std::vector<unsigned char> read_all(const char* path) {
    FILE* f = std::fopen(path, "rb");
    if (!f) fail(std::string("cannot open ") + path);
    std::vector<unsigned char> data;
    unsigned char buf[1 << 16];
    size_t got;
    while ((got = std::fread(buf, 1, sizeof buf, f)) > 0) data.insert(data.end(), buf, buf + got);
    std::fclose(f);
    return data;
}

// Device memory: never zeroed by the host (cuda.rs allocates uninitialised
// buffers), so it starts as garbage that a kernel must overwrite.
template <typename T>
struct Buf {
    std::vector<unsigned char> raw;
    T* p;
    Buf(uint64_t n, uint64_t offset_elems = 0) : raw((n + offset_elems) * sizeof(T) + 64, 0xa5) {
        uintptr_t base = (reinterpret_cast<uintptr_t>(raw.data()) + 15) & ~uintptr_t(15);
        p = reinterpret_cast<T*>(base) + offset_elems;
    }
};

dim3 d3(uint64_t x, uint64_t y = 1) {
    dim3 d;
    d.x = (unsigned)x;
    d.y = (unsigned)y;
    return d;
}

dim3 grid1d(uint64_t work, uint64_t cap) {
    uint64_t blocks = (work + BLOCK - 1) / BLOCK;
    if (blocks < 1) blocks = 1;
    if (blocks > cap) blocks = cap;
    return d3(blocks);
}

void run(dim3 grid, dim3 blk, const std::function<void()>& k) {
    ++launches;
    emu::launch(grid, blk, k);
}

void scan_exclusive(u32* data, uint64_t m) {
    const uint64_t tiles = (m + SCAN_TILE - 1) / SCAN_TILE;
    Buf<u32> sums(tiles);
    run(d3(tiles), d3(BLOCK), [&] { scan_tiles(data, m, sums.p); });
    if (tiles > 1) {
        scan_exclusive(sums.p, tiles);
        run(d3(tiles), d3(BLOCK), [&] { scan_add(data, m, sums.p); });
    }
}

void label(int argc, char** argv) {
    if (argc != 11) fail("label CONN NX NY NZ CAP1D CAPY REPS IN OUT");
    const uint64_t conn = num(argv[2]);
    const u32 nx = (u32)num(argv[3]), ny = (u32)num(argv[4]), nz = (u32)num(argv[5]);
    const uint64_t cap1d = num(argv[6]), capy = num(argv[7]), reps = num(argv[8]);
    const uint64_t n = (uint64_t)nx * ny * nz;
    const std::vector<unsigned char> in = read_all(argv[9]);
    if (in.size() != n || n == 0) fail("mask size");
    FILE* out = std::fopen(argv[10], "wb");
    if (!out) fail("cannot write the output");
    Buf<u8> mask(n);
    std::memcpy(mask.p, in.data(), n);
    void (*init)(const u8*, u32*, u32, u32, u32) =
        conn == 6 ? label_init_6 : conn == 18 ? label_init_18 : label_init_26;
    void (*merge)(const u8*, u32*, u32, u32, u32) =
        conn == 6 ? label_merge_6 : conn == 18 ? label_merge_18 : label_merge_26;
    if (conn != 6 && conn != 18 && conn != 26) fail("connectivity");
    for (uint64_t rep = 0; rep < reps; ++rep) {
        Buf<u32> labels(n);
        const uint64_t rows = (uint64_t)ny * nz;
        uint64_t gy = (rows + 7) / 8;
        if (gy > 65535) gy = 65535;
        if (gy > capy) gy = capy;
        const dim3 grid = d3((nx + 31) / 32, gy), blk = d3(32, 8);
        run(grid, blk, [&] { init(mask.p, labels.p, nx, ny, nz); });
        run(grid, blk, [&] { merge(mask.p, labels.p, nx, ny, nz); });
        const uint64_t nwords = (n + 31) / 32;
        Buf<u32> bits(nwords), wcount(nwords + 1);
        run(grid1d(n, cap1d), d3(BLOCK), [&] { label_compress(mask.p, labels.p, n, bits.p, wcount.p); });
        scan_exclusive(wcount.p, nwords + 1);
        run(grid1d(n, cap1d), d3(BLOCK), [&] { label_finalize(mask.p, labels.p, n, bits.p, wcount.p); });
        std::fwrite(labels.p, 4, n, out);
        std::fwrite(&wcount.p[nwords], 4, 1, out);
    }
    if (std::fclose(out) != 0) fail("writing the output");
}

void stats(int argc, char** argv) {
    if (argc != 9) fail("stats NX NY NZ COUNT CAP1D IN OUT");
    const u32 nx = (u32)num(argv[2]), ny = (u32)num(argv[3]), nz = (u32)num(argv[4]);
    const u32 count = (u32)num(argv[5]);
    const uint64_t cap1d = num(argv[6]);
    const uint64_t n = (uint64_t)nx * ny * nz;
    const std::vector<unsigned char> in = read_all(argv[7]);
    if (in.size() != 8 * n || n == 0) fail("input size");
    Buf<u32> labels(n);
    Buf<float> values(n);
    std::memcpy(labels.p, in.data(), 4 * n);
    std::memcpy(values.p, in.data() + 4 * n, 4 * n);
    const uint64_t records = (uint64_t)count + 1;
    Buf<u64> rec64(8 * records);
    Buf<u32> rec32(8 * records);
    run(grid1d(records, cap1d), d3(BLOCK), [&] { stats_init(rec64.p, rec32.p, records); });
    if (count > 0) {
        const dim3 g = grid1d((n + STATS_VOXELS_PER_THREAD - 1) / STATS_VOXELS_PER_THREAD, cap1d);
        run(g, d3(BLOCK), [&] { stats_accumulate(labels.p, values.p, n, nx, ny, count, rec64.p, rec32.p); });
        run(g, d3(BLOCK), [&] { stats_max_index(labels.p, values.p, n, count, rec64.p, rec32.p); });
    }
    FILE* out = std::fopen(argv[8], "wb");
    if (!out) fail("cannot write the output");
    std::fwrite(rec64.p, 8, 8 * records, out);
    std::fwrite(rec32.p, 4, 8 * records, out);
    if (std::fclose(out) != 0) fail("writing the output");
}

void suv(int argc, char** argv) {
    if (argc != 12) fail("suv NX NY NZ T_BITS CAP1D OFF_STORED OFF_SUV OFF_MASK IN OUT");
    const uint64_t nx = num(argv[2]), ny = num(argv[3]), nz = num(argv[4]);
    const u32 tbits = (u32)num(argv[5]);
    const uint64_t cap1d = num(argv[6]);
    const uint64_t n = nx * ny * nz, plane = nx * ny;
    const std::vector<unsigned char> in = read_all(argv[10]);
    if (in.size() != 2 * n + 8 * nz || n == 0) fail("input size");
    Buf<i16> stored(n, num(argv[7]));
    Buf<float> scale(2 * nz);
    Buf<float> out_suv(n, num(argv[8]));
    Buf<u8> out_mask(n, num(argv[9]));
    std::memcpy(stored.p, in.data(), 2 * n);
    std::memcpy(scale.p, in.data() + 2 * n, 8 * nz);
    float t;
    std::memcpy(&t, &tbits, 4);
    const dim3 g = grid1d((n + SUV_GROUP_ - 1) / SUV_GROUP_, cap1d);
    run(g, d3(BLOCK), [&] { suv_threshold(stored.p, scale.p, t, n, plane, out_suv.p, out_mask.p); });
    FILE* out = std::fopen(argv[11], "wb");
    if (!out) fail("cannot write the output");
    std::fwrite(out_suv.p, 4, n, out);
    std::fwrite(out_mask.p, 1, n, out);
    if (std::fclose(out) != 0) fail("writing the output");
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) fail("usage: driver label|stats|suv ...");
    const std::string cmd = argv[1];
    if (cmd == "label") {
        label(argc, argv);
    } else if (cmd == "stats") {
        stats(argc, argv);
    } else if (cmd == "suv") {
        suv(argc, argv);
    } else {
        fail("unknown command " + cmd);
    }
    std::printf("atomic=%llu find_root=%llu compress_write=%llu launches=%llu\n",
                (unsigned long long)emu::counters.atomic.load(), (unsigned long long)emu::counters.find_root.load(),
                (unsigned long long)emu::counters.compress_write.load(), (unsigned long long)launches);
    return 0;
}
