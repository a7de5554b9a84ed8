// read_floor: see read_floor.h.

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <vector>

#include "ops/cuda/device_util.cuh"
#include "ops/cuda/ptx.cuh"
#include "tools/bench/bench_util.h"
#include "tools/bench/read_floor.h"

namespace quest::bench {
namespace {

enum Launch { kPlain, kWaitFirst, kLoadsFirst };
constexpr int kThreads = 256;
constexpr int kUnroll = 4;  // independent 16-byte loads in flight per thread

// Where the j-th uint4 of a read lies: contiguous (the floor), or one
// side of Quest's page-bounds layout (runtime/page_bounds_layout.h)
// without the arithmetic: the buffer is runs of `run_u4` uint4 in pairs
// (a dimension's min row, then its max row) and the read takes one run of
// each pair, picked by a fixed pseudo-random bit per pair (the query's
// sign per dimension).
struct Contiguous {
  __device__ int64_t operator()(int64_t j) const { return j; }
};
struct OneSide {
  int run_u4;
  __device__ int64_t operator()(int64_t j) const {
    const int64_t pair = j / run_u4;
    const uint32_t side = (static_cast<uint32_t>(pair) * 0x9e3779b1u) >> 31;
    return (2 * pair + side) * run_u4 + j % run_u4;
  }
};

// Reads n uint4 at at(0), .., at(n - 1), kUnroll loads in flight per
// thread, folding them into a register so nothing is optimised away.
template <Launch kLaunch, typename At>
__global__ void __launch_bounds__(kThreads) ReadKernel(const uint4* __restrict__ a, int64_t n, At at, uint4* sink) {
  if constexpr (kLaunch == kWaitFirst) asm volatile("griddepcontrol.wait;" ::: "memory");
  if constexpr (kLaunch != kPlain) asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  uint32_t acc = 0;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n; i += kUnroll * stride) {
    uint4 x[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      x[u] = i + u * stride < n ? __ldcs(a + at(i + u * stride)) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) acc ^= x[u].x ^ x[u].w;
  }
  // Loads first: this grid still ends after the previous one, as a chain's
  // kernels do.
  if constexpr (kLaunch == kLoadsFirst) asm volatile("griddepcontrol.wait;" ::: "memory");
  if (acc == 0x9e3779b9u) sink[0] = make_uint4(acc, 0, 0, 0);  // never, but the compiler cannot tell
}

template <Launch kLaunch, typename At = Contiguous>
cudaError_t LaunchRead(int blocks, cudaStream_t stream, const uint4* a, int64_t n, uint4* sink, At at = {}) {
  return ops::cuda::LaunchMaybePdl(kLaunch != kPlain, ReadKernel<kLaunch, At>, dim3(blocks), dim3(kThreads), 0,
                                   stream, a, n, at, sink);
}

// The dense attention's access pattern without its arithmetic: block
// (split, g) streams KV head g's rows of tokens [split * len, (split + 1) *
// len) of a paged pool, kWarps warps each taking every kWarps-th tile of
// kRows rows through a kStages-deep cp.async ring (the split kernels'
// structure), "consuming" a tile by folding one word per lane. Pool pages
// of 16 tokens; a sequence's pages sit `interleave` pages apart (as
// attention_bench's 8 sequences share the pool). `hnd`: a page stores head
// after head (each head's 16 rows contiguous) instead of token after token.
// `table_stride` > 0: KV head g has its own page list, table + g *
// table_stride (Quest's selection: each head reads its own pages).
constexpr int kWarps = 4;
constexpr int kRowU4 = 16;  // head_dim 128 bf16
template <int kStages, int kRows>
__global__ void __launch_bounds__(kWarps * 32)
    PagedReadKernel(const uint4* __restrict__ k, const uint4* __restrict__ v, int kv_heads, int64_t len,
                    int interleave, bool hnd, const int* __restrict__ table, int table_stride, int work, uint4* sink) {
  extern __shared__ __align__(16) uint4 ring[];
  asm volatile("griddepcontrol.wait;" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = blockIdx.y;
  constexpr int kTileU4 = kRows * kRowU4;  // one of K, V
  uint4* mine = ring + static_cast<size_t>(warp) * kStages * 2 * kTileU4;
  const int64_t first = blockIdx.x * len;
  if (table != nullptr) table += static_cast<int64_t>(g) * table_stride;
  const int tiles = static_cast<int>((len + kRows - 1) / kRows);
  const int count = tiles > warp ? (tiles - warp + kWarps - 1) / kWarps : 0;
  // With a page table: lane r < kRows looks up row r's page one tile ahead
  // (as the attention's RowLookup does) and the copies take it by shuffle.
  auto lookup = [&](int it) {
    const int64_t pos = first + static_cast<int64_t>(warp + it * kWarps) * kRows + lane;
    return table != nullptr && it < count && lane < kRows ? table[pos / 16] : 0;
  };
  auto row_at = [&](int64_t pos, int entry) {
    const int64_t page = table != nullptr ? entry : (pos / 16) * interleave, slot = pos % 16;
    return (hnd ? (page * kv_heads + g) * 16 + slot : (page * 16 + slot) * kv_heads + g) * kRowU4;
  };
  int ahead = lookup(0);
  auto issue = [&](int it, int stage) {
    const int entry = ahead;
    ahead = lookup(it + 1);
    if (it < count) {
      const int64_t r0 = first + static_cast<int64_t>(warp + it * kWarps) * kRows;
#pragma unroll
      for (int c = lane; c < kTileU4; c += 32) {
        const int64_t off = row_at(r0 + c / kRowU4, __shfl_sync(0xffffffffu, entry, c / kRowU4)) + c % kRowU4;
        ops::cuda::CpAsync16(mine + stage * 2 * kTileU4 + c, k + off, 16);
        ops::cuda::CpAsync16(mine + stage * 2 * kTileU4 + kTileU4 + c, v + off, 16);
      }
    }
    ops::cuda::CpAsyncCommit();
  };
  uint32_t acc = 0;
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) issue(s, s);
  for (int it = 0; it < count; ++it) {
    issue(it + kStages - 1, (it + kStages - 1) % kStages);
    ops::cuda::CpAsyncWait<kStages - 1>();
    __syncwarp();
    uint32_t x = mine[(it % kStages) * 2 * kTileU4 + lane].x;
    // `work` dependent multiply-adds per tile: the consume's latency.
    for (int w = 0; w < work; ++w) x = x * 0x9e3779b1u + 0x7f4a7c15u;
    acc ^= x;
    __syncwarp();
  }
  ops::cuda::CpAsyncWait<0>();
  if (acc == 0x9e3779b9u) sink[0] = make_uint4(acc, 0, 0, 0);
}

}  // namespace

int RunReadFloor(const std::vector<ReadFloorShape>& shapes, bool sides_only) {
  int sms = 0;
  if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0) != cudaSuccess || sms <= 0) {
    std::fprintf(stderr, "read_floor: no usable GPU\n");
    return 1;
  }
  constexpr int kRegions = 4;  // rotated over: no call reads what the previous left in L2
  auto kv_bytes = [](const ReadFloorShape& s) { return static_cast<size_t>(s.context) * s.kv_heads * 128 * 2 * 2; };
  size_t most = 0;
  for (const ReadFloorShape& s : shapes) most = std::max(most, kv_bytes(s));
  char* base = nullptr;
  uint4* sink = nullptr;
  cudaStream_t stream;
  BENCH_CUDA(cudaMalloc(&base, most * kRegions));
  BENCH_CUDA(cudaMalloc(&sink, sizeof(uint4)));
  BENCH_CUDA(cudaMemset(base, 1, most * kRegions));
  BENCH_CUDA(cudaStreamCreate(&stream));
  auto release = [&] {
    BENCH_CUDA(cudaStreamDestroy(stream));
    BENCH_CUDA(cudaFree(base));
    BENCH_CUDA(cudaFree(sink));
    return 0;
  };

  // A D2D copy of `bytes`, read + written, in bytes per second: every
  // table's reference.
  auto copy_bandwidth = [&](size_t bytes) {
    const Timing copy = Time([&](int i) {
      BENCH_CUDA(cudaMemcpyAsync(base + (i % kRegions) * most, base + ((i + 2) % kRegions) * most, bytes,
                                 cudaMemcpyDeviceToDevice, stream));
    });
    return 2.0 * bytes / copy.host_s;
  };

  // One side of the page-bounds layout: does reading one row of each
  // (min, max) pair cost more than a contiguous read, and would longer
  // rows (more pages per tile) help? Useful bytes are an MHA shape's FP8
  // bounds for one query sign (pages x heads x 128 dims), as % of a copy of
  // those bytes; "both" reads the whole layout (twice the bytes, counted),
  // "half" the useful bytes contiguously, then rows of 64 B .. 4 KiB.
  std::printf("one side of the page-bounds layout (FP8, MHA), %% of a copy of the bytes read\n");
  std::printf("%-5s %7s %9s %8s %8s", "shape", "context", "read MB", "both", "half");
  const int kRuns[] = {64, 128, 256, 512, 1024, 2048, 4096};
  for (int r : kRuns) std::printf(" %6dB", r);
  std::printf("\n");
  for (const ReadFloorShape& s : shapes) {
    if (s.kv_heads != 32 || s.context < 32768) continue;
    const size_t useful = static_cast<size_t>(s.context / 16) * s.kv_heads * 128;
    const double copy_bw = copy_bandwidth(useful);
    std::printf("%-5s %6lldK %9.1f", s.name, static_cast<long long>(s.context / 1024), useful / 1e6);
    auto pct = [&](size_t bytes, auto launch) {
      double best = 0;
      for (int per : {2, 4, 8}) {
        const Timing t = Time([&](int i) { BENCH_CUDA(launch(sms * per, i)); });
        best = std::max(best, 100.0 * (bytes / t.host_s) / copy_bw);
      }
      std::printf(" %7.1f%%", best);
    };
    auto region = [&](int i) { return reinterpret_cast<const uint4*>(base + (i % kRegions) * most); };
    pct(2 * useful, [&](int blocks, int i) {
      return LaunchRead<kWaitFirst>(blocks, stream, region(i), static_cast<int64_t>(2 * useful / 16), sink);
    });
    pct(useful, [&](int blocks, int i) {
      return LaunchRead<kWaitFirst>(blocks, stream, region(i), static_cast<int64_t>(useful / 16), sink);
    });
    for (int r : kRuns) {
      pct(useful, [&](int blocks, int i) {
        return LaunchRead<kWaitFirst>(blocks, stream, region(i), static_cast<int64_t>(useful / 16), sink,
                                      OneSide{r / 16});
      });
    }
    std::printf("\n");
  }
  if (sides_only) return release();

  std::printf("read_floor: %d SMs; %% = read GB/s over a D2D copy's (read + write) GB/s, same bytes, same run;\n",
              sms);
  std::printf("calls back to back on rotating regions, host clock; best of 1/2/4/8 blocks of %d per SM\n", kThreads);
  std::printf("%-5s %7s %9s %10s %18s %18s %18s\n", "shape", "context", "K+V MB", "copy GB/s", "plain launches",
              "PDL, wait first", "PDL, loads first");
  for (const ReadFloorShape& s : shapes) {
    const size_t bytes = kv_bytes(s);
    const int64_t n = static_cast<int64_t>(bytes / sizeof(uint4));
    const double copy_bw = copy_bandwidth(bytes);
    std::printf("%-5s %6lldK %9.1f %10.0f", s.name, static_cast<long long>(s.context / 1024), bytes / 1e6,
                copy_bw / 1e9);
    auto best = [&](auto launch) {
      double pct = 0;
      int at = 0;
      for (int per : {1, 2, 4, 8}) {
        const Timing t = Time([&](int i) {
          BENCH_CUDA(launch(sms * per, stream, reinterpret_cast<const uint4*>(base + (i % kRegions) * most), n,
                            sink, Contiguous{}));
        });
        const double p = 100.0 * (bytes / t.host_s) / copy_bw;
        if (p > pct) {
          pct = p;
          at = per;
        }
      }
      std::printf("   %6.1f%% (%d/SM)", pct, at);
    };
    best(LaunchRead<kPlain>);
    best(LaunchRead<kWaitFirst>);
    best(LaunchRead<kLoadsFirst>);
    std::printf("\n");
  }

  // The paged pattern: one sequence's rows among `interleave` sequences'
  // pages (the pool is that many times the sequence's bytes, so the largest
  // shape is left out where it does not fit the regions), best grid of
  // 1..4 blocks per SM (splits = blocks / KV heads).
  std::printf("\npaged pattern (no arithmetic), %% of the copy above; NHD = the pool's layout, HND = head-major\n");
  std::printf("%-5s %7s %-26s %8s %8s\n", "shape", "context", "ring", "NHD", "HND");
  for (const ReadFloorShape& s : shapes) {
    const size_t bytes = kv_bytes(s);
    if (bytes * 8 > most * kRegions / 2) continue;  // K and V pools of 8 interleaved sequences
    const double copy_bw = copy_bandwidth(bytes);
    // Page tables of the 8 interleaved sequences (sequence q: pages i * 8 + q).
    const int64_t seq_pages = s.context / 16;
    std::vector<int> host_table(static_cast<size_t>(8 * seq_pages));
    for (int q = 0; q < 8; ++q) {
      for (int64_t i = 0; i < seq_pages; ++i) host_table[q * seq_pages + i] = static_cast<int>(i * 8 + q);
    }
    int* tables = nullptr;
    BENCH_CUDA(cudaMalloc(&tables, host_table.size() * sizeof(int)));
    BENCH_CUDA(cudaMemcpy(tables, host_table.data(), host_table.size() * sizeof(int), cudaMemcpyHostToDevice));
    const uint4* kp = reinterpret_cast<const uint4*>(base);
    const uint4* vp = reinterpret_cast<const uint4*>(base + most * kRegions / 2);
    auto row = [&](const char* what, auto kernel, int stages, int rows, bool use_table = false, int work = 0) {
      const size_t smem = static_cast<size_t>(kWarps) * stages * 2 * rows * kRowU4 * 16;
      BENCH_CUDA(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
      int per_sm = 0;
      BENCH_CUDA(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kWarps * 32, smem));
      std::printf("%-5s %6lldK %-26s", s.name, static_cast<long long>(s.context / 1024), what);
      for (int hnd = 0; hnd < 2; ++hnd) {
        for (int interleave : {8}) {
          double pct = 0;
          for (int per = 1; per <= std::min(per_sm, 4); ++per) {
            const int splits = std::max(1, sms * per / s.kv_heads);
            const int64_t len = (s.context + splits - 1) / splits;
            const Timing t = Time([&](int i) {
              // Alternate sequences of the pool (page offset i % interleave).
              const int64_t shift =
                  use_table ? 0 : static_cast<int64_t>(i % interleave) * 16 * s.kv_heads * kRowU4;
              const int* table = use_table ? tables + (i % 8) * seq_pages : nullptr;
              const dim3 grid(static_cast<unsigned>((s.context + len - 1) / len), s.kv_heads);
              BENCH_CUDA(ops::cuda::LaunchMaybePdl(true, kernel, grid, dim3(kWarps * 32), smem, stream, kp + shift,
                                                   vp + shift, s.kv_heads, len, interleave, hnd != 0, table, 0,
                                                   work, sink));
            });
            pct = std::max(pct, 100.0 * (bytes / t.host_s) / copy_bw);
          }
          std::printf(" %7.1f%%", pct);
        }
      }
      std::printf("  (%d/SM max)\n", per_sm);
    };
    row("3 stages x 16 rows (mma)", PagedReadKernel<3, 16>, 3, 16);
    row("4 stages x 8 rows (cuda)", PagedReadKernel<4, 8>, 4, 8);
    row("4 stages x 16 rows", PagedReadKernel<4, 16>, 4, 16);
    row("6 stages x 16 rows", PagedReadKernel<6, 16>, 6, 16);
    row("3 stages x 32 rows", PagedReadKernel<3, 32>, 3, 32);
    row("3 x 16, page table", PagedReadKernel<3, 16>, 3, 16, true);
    row("4 x 8, page table", PagedReadKernel<4, 8>, 4, 8, true);
    row("3 x 16, table, 64 madds", PagedReadKernel<3, 16>, 3, 16, true, 64);
    row("3 x 16, table, 256 madds", PagedReadKernel<3, 16>, 3, 16, true, 256);
    row("3 x 16, table, 1024 madds", PagedReadKernel<3, 16>, 3, 16, true, 1024);
    row("4 x 8, table, 256 madds", PagedReadKernel<4, 8>, 4, 8, true, 256);
    BENCH_CUDA(cudaFree(tables));
  }

  // Quest's sparse pattern: each KV head reads its own `budget` tokens, in
  // whole pages drawn at random (distinct, unsorted) from the sequence's
  // pages, through the 4 x 8 ring with a page table, NHD against HND
  // pools. % of the dense context's copy bandwidth (as attention_bench's
  // sparse rows); one wave of blocks.
  std::printf("\nsparse pattern (each KV head its own random pages, 4 x 8 ring + page table), %% of that copy\n");
  std::printf("%-5s %7s %7s %9s %8s %8s\n", "shape", "context", "budget", "K+V MB", "NHD", "HND");
  for (const ReadFloorShape& s : shapes) {
    const size_t dense_bytes = kv_bytes(s);
    if (dense_bytes * 8 > most * kRegions / 2) continue;
    const double copy_bw = copy_bandwidth(dense_bytes);
    const int64_t seq_pages = s.context / 16;
    for (int64_t budget : {2048, 4096}) {
      const int64_t pages = budget / 16;
      if (pages > seq_pages) continue;
      // 8 tables (one per pool sequence q, rotated over calls), each [heads][pages].
      std::vector<int> host(static_cast<size_t>(8 * s.kv_heads * pages));
      uint64_t rng = 0x243f6a8885a308d3ull;
      std::vector<int> perm(static_cast<size_t>(seq_pages));
      for (int q = 0; q < 8; ++q) {
        for (int g = 0; g < s.kv_heads; ++g) {
          for (int64_t i = 0; i < seq_pages; ++i) perm[i] = static_cast<int>(i);
          for (int64_t i = 0; i < pages; ++i) {  // partial Fisher-Yates
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            const int64_t j = i + static_cast<int64_t>((rng >> 33) % static_cast<uint64_t>(seq_pages - i));
            std::swap(perm[i], perm[j]);
            host[(q * s.kv_heads + g) * pages + i] = perm[i] * 8 + q;
          }
        }
      }
      int* tables = nullptr;
      BENCH_CUDA(cudaMalloc(&tables, host.size() * sizeof(int)));
      BENCH_CUDA(cudaMemcpy(tables, host.data(), host.size() * sizeof(int), cudaMemcpyHostToDevice));
      const size_t bytes = static_cast<size_t>(budget) * s.kv_heads * 128 * 2 * 2;
      std::printf("%-5s %6lldK %7lld %9.1f", s.name, static_cast<long long>(s.context / 1024),
                  static_cast<long long>(budget), bytes / 1e6);
      auto kernel = PagedReadKernel<4, 8>;
      const size_t smem = static_cast<size_t>(kWarps) * 4 * 2 * 8 * kRowU4 * 16;
      BENCH_CUDA(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
      const uint4* kp = reinterpret_cast<const uint4*>(base);
      const uint4* vp = reinterpret_cast<const uint4*>(base + most * kRegions / 2);
      for (int hnd = 0; hnd < 2; ++hnd) {
        const int splits = std::max(1, sms * 3 / s.kv_heads);
        const int64_t len = ((budget + splits - 1) / splits + 31) / 32 * 32;  // whole tiles of the ring
        const dim3 grid(static_cast<unsigned>((budget + len - 1) / len), s.kv_heads);
        const Timing t = Time([&](int i) {
          BENCH_CUDA(ops::cuda::LaunchMaybePdl(true, kernel, grid, dim3(kWarps * 32), smem, stream, kp, vp,
                                               s.kv_heads, len, 8, hnd != 0, tables + (i % 8) * s.kv_heads * pages,
                                               static_cast<int>(pages), 0, sink));
        });
        std::printf(" %7.1f%%", 100.0 * (bytes / t.host_s) / copy_bw);
      }
      std::printf("\n");
      BENCH_CUDA(cudaFree(tables));
    }
  }
  return release();
}

}  // namespace quest::bench
