// gather_probe: see gather_probe.h.

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <numeric>
#include <random>
#include <vector>

#include "ops/cuda/ptx.cuh"
#include "tools/bench/gather_probe.h"

namespace quest::bench {
namespace {

using ops::cuda::CpAsync16;
using ops::cuda::CpAsyncCommit;
using ops::cuda::CpAsyncWait;
using ops::cuda::SmemAddr;

constexpr int kWarps = 4;
constexpr int kRowUint4 = 16;  // head_dim 128 bf16: one row is 256 bytes
enum Mode { kLdg, kCpAsync, kBulk };

// Item `it` is one selected (head, page): its page_size K rows and V rows.
// `pool_layout`: rows of one head a whole page slot apart, as the KV pool
// stores them; else item after item, contiguous.
__device__ __forceinline__ int64_t RowOffset(int page, int row, int head, int it, int heads, int page_size,
                                             bool pool_layout) {
  const int64_t r = pool_layout ? (static_cast<int64_t>(page) * page_size + row) * heads + head
                                : static_cast<int64_t>(it) * page_size + row;
  return r * kRowUint4;
}

// Each warp walks items wid, wid + warps, ... with `kStages` items in
// flight (LDG: one), folding what lands into a register so nothing is
// optimised away. Each item is page_size * 2 rows = 8 KB at page_size 16.
template <int kStages>
__global__ void __launch_bounds__(kWarps * 32)
    GatherKernel(const uint4* __restrict__ k, const uint4* __restrict__ v, const int* __restrict__ pages, int items,
                 int selected, int heads, int page_size, int mode, bool pool_layout, uint4* sink) {
  extern __shared__ __align__(128) uint4 smem[];
  __shared__ __align__(8) uint64_t bars[kWarps][kStages];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int wid = blockIdx.x * kWarps + warp, nw = gridDim.x * kWarps;
  const int item_uint4 = 2 * page_size * kRowUint4;
  uint4* pipe = smem + static_cast<size_t>(warp) * kStages * item_uint4;
  const int mine = wid < items ? (items - wid + nw - 1) / nw : 0;
  uint32_t acc = 0;
  auto where = [&](int j, int row) {
    const int it = wid + j * nw;
    return RowOffset(pages[it], row, it / selected, it, heads, page_size, pool_layout);
  };
  if (mode == kLdg) {
    for (int j = 0; j < mine; ++j) {
      for (int c = lane; c < page_size * kRowUint4; c += 32) {
        const int64_t off = where(j, c / kRowUint4) + c % kRowUint4;
        acc ^= __ldcg(k + off).x ^ __ldcg(v + off).y;
      }
    }
  } else {
    if (mode == kBulk && lane == 0) {
      for (int s = 0; s < kStages; ++s) asm volatile("mbarrier.init.shared.b64 [%0], 1;" ::"r"(SmemAddr(&bars[warp][s])));
      asm volatile("fence.mbarrier_init.release.cluster;");
    }
    __syncwarp();
    auto issue = [&](int j, int s) {
      uint4* dst = pipe + s * item_uint4;
      if (j < mine && mode == kCpAsync) {
        for (int c = lane; c < page_size * kRowUint4; c += 32) {
          const int64_t off = where(j, c / kRowUint4) + c % kRowUint4;
          CpAsync16(dst + c, k + off, 16);  // as the attention kernels issue them
          CpAsync16(dst + page_size * kRowUint4 + c, v + off, 16);
        }
      }
      if (mode == kCpAsync) CpAsyncCommit();
      if (j < mine && mode == kBulk) {
        if (lane == 0) {
          asm volatile("mbarrier.arrive.expect_tx.shared.b64 _, [%0], %1;" ::"r"(SmemAddr(&bars[warp][s])),
                       "r"(item_uint4 * 16));
        }
        __syncwarp();
        for (int r = lane; r < 2 * page_size; r += 32) {  // one whole row per lane
          const uint4* src = (r < page_size ? k : v) + where(j, r % page_size);
          asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(
                           SmemAddr(dst + r * kRowUint4)),
                       "l"(src), "r"(kRowUint4 * 16), "r"(SmemAddr(&bars[warp][s]))
                       : "memory");
        }
      }
    };
    for (int s = 0; s < kStages - 1; ++s) issue(s, s);
    for (int j = 0; j < mine; ++j) {
      issue(j + kStages - 1, (j + kStages - 1) % kStages);
      const int s = j % kStages;
      if (mode == kCpAsync) {
        CpAsyncWait<kStages - 1>();
      } else {
        uint32_t done = 0;
        while (!done) {
          asm volatile("{ .reg .pred p; mbarrier.try_wait.parity.shared.b64 p, [%1], %2; selp.u32 %0, 1, 0, p; }"
                       : "=r"(done)
                       : "r"(SmemAddr(&bars[warp][s])), "r"(static_cast<uint32_t>((j / kStages) & 1))
                       : "memory");
        }
      }
      __syncwarp();
      for (int c = lane; c < item_uint4; c += 32) acc ^= pipe[s * item_uint4 + c].x;
      __syncwarp();
    }
  }
  if (acc == 0x9e3779b9u) sink[0] = make_uint4(acc, 0, 0, 0);  // never, but the compiler cannot tell
}

// Reads `n` uint4 (an L2 eviction, and the copy-rate reference).
__global__ void ReadKernel(const uint4* __restrict__ a, int64_t n, uint4* sink) {
  uint32_t acc = 0;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    acc ^= __ldcg(a + i).x;
  }
  if (acc == 0x9e3779b9u) sink[0] = make_uint4(acc, 0, 0, 0);
}

#define PROBE_CUDA(x)                                                                              \
  do {                                                                                             \
    const cudaError_t e_ = (x);                                                                    \
    if (e_ != cudaSuccess) {                                                                       \
      std::fprintf(stderr, "gather_probe: %s: %s (%s:%d)\n", #x, cudaGetErrorString(e_), __FILE__, \
                   __LINE__);                                                                      \
      return 1;                                                                                    \
    }                                                                                              \
  } while (0)

}  // namespace

int RunGatherProbe(const GatherProbeShape& shape) {
  int sms = 0;
  if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0) != cudaSuccess || sms <= 0) {
    std::fprintf(stderr, "gather_probe: no usable GPU\n");
    return 1;
  }
  const int heads = shape.kv_heads, page_size = shape.page_size;
  const size_t pool_bytes = static_cast<size_t>(shape.pages) * page_size * heads * kRowUint4 * 16;
  const size_t evict_bytes = size_t{256} << 20;
  uint4 *k = nullptr, *v = nullptr, *evict = nullptr, *sink = nullptr;
  int* pages = nullptr;
  PROBE_CUDA(cudaMalloc(&k, pool_bytes));
  PROBE_CUDA(cudaMalloc(&v, pool_bytes));
  PROBE_CUDA(cudaMalloc(&evict, evict_bytes));
  PROBE_CUDA(cudaMalloc(&sink, sizeof(uint4)));
  PROBE_CUDA(cudaMemset(k, 1, pool_bytes));
  PROBE_CUDA(cudaMemset(v, 2, pool_bytes));
  PROBE_CUDA(cudaMemset(evict, 3, evict_bytes));
  // Each head's selection: `selected` distinct random pages, ascending.
  std::vector<int> sel(static_cast<size_t>(heads) * shape.selected);
  std::mt19937 rng(1);
  std::vector<int> all(shape.pages);
  for (int g = 0; g < heads; ++g) {
    std::iota(all.begin(), all.end(), 0);
    std::shuffle(all.begin(), all.end(), rng);
    std::sort(all.begin(), all.begin() + shape.selected);
    std::copy(all.begin(), all.begin() + shape.selected, sel.begin() + static_cast<size_t>(g) * shape.selected);
  }
  PROBE_CUDA(cudaMalloc(&pages, sel.size() * sizeof(int)));
  PROBE_CUDA(cudaMemcpy(pages, sel.data(), sel.size() * sizeof(int), cudaMemcpyHostToDevice));
  const int items = static_cast<int>(sel.size());
  const double bytes = static_cast<double>(items) * 2 * page_size * kRowUint4 * 16;

  cudaEvent_t start, stop;
  PROBE_CUDA(cudaEventCreate(&start));
  PROBE_CUDA(cudaEventCreate(&stop));
  auto read_evict = [&] { ReadKernel<<<sms * 8, 256>>>(evict, static_cast<int64_t>(evict_bytes / 16), sink); };
  // Median of 25 calls, each after reading 256 MB (the L2 evicted).
  auto cold_us = [&](auto launch) {
    std::vector<float> t;
    for (int r = 0; r < 25; ++r) {
      read_evict();
      cudaEventRecord(start);
      launch();
      cudaEventRecord(stop);
      cudaEventSynchronize(stop);
      float ms = 0;
      cudaEventElapsedTime(&ms, start, stop);
      t.push_back(1e3f * ms);
    }
    std::sort(t.begin(), t.end());
    return static_cast<double>(t[t.size() / 2]);
  };
  const double read_us = cold_us(read_evict);
  const double read_bw = evict_bytes / read_us / 1e3;
  std::printf("gather_probe: %d KV heads x %d of %d pages of %d tokens, head_dim 128 bf16, K+V %.1f MB, cold L2\n",
              heads, shape.selected, shape.pages, page_size, bytes / 1e6);
  std::printf("reference: a cold 256 MB read at %.0f GB/s (same run); %% = gather GB/s / that\n", read_bw);
  std::printf("%-22s %-11s %s\n", "mechanism", "layout", "us (GB/s, %) at 1, 2, 3 ... blocks per SM");
  const char* names[] = {"LDG", "cp.async 16 B", "TMA bulk rows"};
  auto run = [&](auto kernel, int stages) -> int {
    const size_t smem = static_cast<size_t>(kWarps) * stages * 2 * page_size * kRowUint4 * 16;
    PROBE_CUDA(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
    int per_sm = 0;
    PROBE_CUDA(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kWarps * 32, smem));
    for (int mode = stages == 1 ? kLdg : kCpAsync; mode <= (stages == 1 ? kLdg : kBulk); ++mode) {
      for (int pool_layout = 1; pool_layout >= 0; --pool_layout) {
        std::printf("%-15s (%d st) %-11s", names[mode], stages, pool_layout ? "pool" : "contiguous");
        for (int per = 1; per <= per_sm; ++per) {
          const double us = cold_us([&] {
            kernel<<<sms * per, kWarps * 32, smem>>>(k, v, pages, items, shape.selected, heads, page_size, mode,
                                                     pool_layout != 0, sink);
          });
          std::printf("  %6.2f (%4.0f, %3.0f%%)", us, bytes / us / 1e3, 100 * bytes / us / 1e3 / read_bw);
        }
        std::printf("\n");
        PROBE_CUDA(cudaGetLastError());
      }
    }
    return 0;
  };
  if (run(GatherKernel<1>, 1) != 0 || run(GatherKernel<2>, 2) != 0 || run(GatherKernel<3>, 3) != 0) return 1;
  cudaFree(k);
  cudaFree(v);
  cudaFree(evict);
  cudaFree(sink);
  cudaFree(pages);
  return 0;
}

}  // namespace quest::bench
