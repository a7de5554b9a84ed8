// Row top-k for sampling (see sampling_kernels.h).

#include <cmath>

#include "ops/cuda/sampling_kernels.h"

namespace quest::ops::cuda {
namespace {

constexpr int kThreads = 1024;
constexpr int kWarps = kThreads / 32;

// Order-preserving map of floats to unsigned ints (larger float, larger
// key); NaN maps to 0, below every number, and -0 to +0 (they compare equal).
__device__ __forceinline__ uint32_t Key(float f) {
  if (isnan(f)) return 0u;
  const uint32_t u = f == 0.0f ? 0u : __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__global__ void __launch_bounds__(kThreads) RowTopKKernel(const float* x, int64_t n, int k,
                                                          int32_t* ids, float* values) {
  const float* row = x + blockIdx.x * n;
  int32_t* out_ids = ids + static_cast<int64_t>(blockIdx.x) * k;
  float* out_values = values + static_cast<int64_t>(blockIdx.x) * k;
  __shared__ uint32_t hist[256];
  __shared__ uint32_t s_prefix, s_remaining, s_written, s_taken;
  __shared__ uint32_t warp_count[kWarps];

  // Radix select, 8 bits at a time from the top: the key of the k-th
  // largest value, and how many values equal to it are among the k.
  uint32_t prefix = 0, mask = 0, remaining = k;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int i = threadIdx.x; i < 256; i += blockDim.x) hist[i] = 0;
    __syncthreads();
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
      const uint32_t key = Key(row[i]);
      if ((key & mask) == prefix) atomicAdd(&hist[(key >> shift) & 255u], 1u);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      uint32_t above = 0;
      int b = 255;
      for (; b > 0 && above + hist[b] < remaining; --b) above += hist[b];
      s_prefix = prefix | (static_cast<uint32_t>(b) << shift);
      s_remaining = remaining - above;
    }
    __syncthreads();
    prefix = s_prefix;
    remaining = s_remaining;
    mask |= 255u << shift;
  }
  const uint32_t threshold = prefix;

  // Every value above the threshold is in; of those equal to it, the
  // `remaining` lowest indices. Chunks go in index order so the equal ones
  // are ranked by a block-wide prefix count.
  if (threadIdx.x == 0) {
    s_written = 0;
    s_taken = 0;
  }
  __syncthreads();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int64_t base = 0; base < n; base += blockDim.x) {
    const int64_t i = base + threadIdx.x;
    const uint32_t key = i < n ? Key(row[i]) : 0u;
    const bool above = i < n && key > threshold;
    const bool equal = i < n && key == threshold;
    if (above) {
      const uint32_t slot = atomicAdd(&s_written, 1u);
      out_ids[slot] = static_cast<int32_t>(i);
      out_values[slot] = row[i];
    }
    const uint32_t ballot = __ballot_sync(0xffffffffu, equal);
    if (lane == 0) warp_count[warp] = __popc(ballot);
    __syncthreads();
    uint32_t rank = s_taken + __popc(ballot & ((1u << lane) - 1u));
    for (int w = 0; w < warp; ++w) rank += warp_count[w];
    if (equal && rank < remaining) {
      const uint32_t slot = atomicAdd(&s_written, 1u);
      out_ids[slot] = static_cast<int32_t>(i);
      out_values[slot] = row[i];
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      for (int w = 0; w < kWarps; ++w) s_taken += warp_count[w];
    }
    __syncthreads();
    if (s_written >= static_cast<uint32_t>(k)) break;  // block-uniform: all k found
  }
}

// k = 1 (greedy decoding): the best (key, lowest index) of the row in one
// pass, 4 independent loads per thread in flight, a warp then a block
// reduction. The radix select above walks the row five times with a
// barrier-bound compaction; this is one read of it.
__device__ __forceinline__ bool Better(uint32_t ka, int64_t ia, uint32_t kb, int64_t ib) {
  return ka > kb || (ka == kb && ia < ib);
}

// The warp's best (key, index) into every lane's.
__device__ __forceinline__ void WarpBest(uint32_t& key, int64_t& index) {
#pragma unroll
  for (int off = 16; off >= 1; off >>= 1) {
    const uint32_t k = __shfl_xor_sync(0xffffffffu, key, off);
    const int64_t i = __shfl_xor_sync(0xffffffffu, index, off);
    if (Better(k, i, key, index)) {
      key = k;
      index = i;
    }
  }
}

__global__ void __launch_bounds__(kThreads) RowArgmaxKernel(const float* x, int64_t n, int32_t* ids, float* values) {
  const float* row = x + blockIdx.x * n;
  constexpr int kUnroll = 4;
  uint32_t best_key = 0;
  int64_t best = n;  // none yet: every real index is lower
  for (int64_t base = threadIdx.x; base < n; base += int64_t{kThreads} * kUnroll) {
    float v[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t i = base + u * kThreads;
      v[u] = i < n ? row[i] : 0.0f;
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t i = base + u * kThreads;
      if (i < n && Better(Key(v[u]), i, best_key, best)) {
        best_key = Key(v[u]);
        best = i;
      }
    }
  }
  WarpBest(best_key, best);
  __shared__ uint32_t warp_key[kWarps];
  __shared__ int64_t warp_best[kWarps];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) {
    warp_key[warp] = best_key;
    warp_best[warp] = best;
  }
  __syncthreads();
  if (warp != 0) return;
  static_assert(kWarps == 32, "warp 0 reduces one warp's best per lane");
  best_key = warp_key[lane];
  best = warp_best[lane];
  WarpBest(best_key, best);
  if (lane == 0) {
    ids[blockIdx.x] = static_cast<int32_t>(best);
    values[blockIdx.x] = row[best];
  }
}

}  // namespace

cudaError_t LaunchRowTopK(const float* x, int64_t rows, int64_t n, int k, int32_t* ids,
                          float* values, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  if (k < 1 || k > n || rows > 65535 * 1024LL) return cudaErrorInvalidValue;
  if (k == 1) {
    RowArgmaxKernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(x, n, ids, values);
  } else {
    RowTopKKernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(x, n, k, ids, values);
  }
  return cudaGetLastError();
}

}  // namespace quest::ops::cuda
