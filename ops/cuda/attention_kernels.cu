// Paged attention kernels (see attention_kernels.h).

#include <cmath>

#include "ops/cuda/attention_kernels.h"
#include "ops/cuda/device_util.cuh"

namespace quest::ops::cuda {
namespace {

constexpr int kAttnWarps = 4;
constexpr int kPerLane = kMaxHeadDim / 32;

// Keys a (token, head) block walks: dense, every position up to its own
// (causal); selected, every slot of its KV head's chunks.
__device__ __forceinline__ int64_t NumCandidates(const PagedAttentionParams& p, int g, int64_t qpos) {
  if (p.chunks == nullptr) return qpos + 1 < p.kv_len ? qpos + 1 : p.kv_len;
  if (p.indptr == nullptr) return static_cast<int64_t>(p.chunks_per_head) * p.chunk;
  return static_cast<int64_t>(p.indptr[g + 1] - p.indptr[g]) * p.chunk;
}

// Position of candidate j, or -1 when it is not attended (past the
// sequence, causal, a page-table hole, evicted).
__device__ __forceinline__ int64_t KeyPosition(const PagedAttentionParams& p, int g, int64_t j,
                                               int64_t qpos) {
  int64_t pos = j;
  if (p.chunks != nullptr) {
    const int64_t first = p.indptr != nullptr ? p.indptr[g] : static_cast<int64_t>(g) * p.chunks_per_head;
    pos = static_cast<int64_t>(p.chunks[first + j / p.chunk]) * p.chunk + j % p.chunk;
  }
  if (pos >= p.kv_len || pos > qpos) return -1;
  if (p.page_table[pos / p.page_size] < 0) return -1;
  if (p.token_valid != nullptr && p.token_valid[g * p.mask_stride + pos] == 0) return -1;
  return pos;
}

template <typename T>
__device__ __forceinline__ const T* KvRow(const void* pages, const PagedAttentionParams& p,
                                          int64_t pos, int g) {
  const int64_t phys = p.page_table[pos / p.page_size];
  return static_cast<const T*>(pages) +
         ((phys * p.page_size + pos % p.page_size) * p.num_kv_heads + g) * p.head_dim;
}

// q . k * scale over the warp (every lane gets the sum); lane holds dims
// lane + 32 i.
template <typename T>
__device__ __forceinline__ float Score(const float (&q)[kPerLane], const T* k, int lane, int d,
                                       float scale) {
  float s = 0.0f;
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int e = lane + 32 * i;
    if (e < d) s += q[i] * F(k[e]);
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  return s * scale;
}

template <typename T>
__device__ __forceinline__ void LoadQuery(const PagedAttentionParams& p, int t, int h, int lane,
                                          float (&q)[kPerLane]) {
  const T* qr = static_cast<const T*>(p.q) + (static_cast<int64_t>(t) * p.num_heads + h) * p.head_dim;
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int e = lane + 32 * i;
    q[i] = e < p.head_dim ? F(qr[e]) : 0.0f;
  }
}

template <typename T>
__global__ void __launch_bounds__(kAttnWarps * 32) PagedAttentionKernel(PagedAttentionParams p) {
  const int h = blockIdx.x, t = blockIdx.y;
  const int g = h / (p.num_heads / p.num_kv_heads);
  const int d = p.head_dim;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t qpos = p.kv_len - p.n + t;

  float q[kPerLane], acc[kPerLane];
  LoadQuery<T>(p, t, h, lane, q);
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) acc[i] = 0.0f;
  float m = -INFINITY, l = 0.0f;

  const int64_t count = NumCandidates(p, g, qpos);
  for (int64_t j = warp; j < count; j += kAttnWarps) {
    const int64_t pos = KeyPosition(p, g, j, qpos);  // warp-uniform
    if (pos < 0) continue;
    const float s = Score(q, KvRow<T>(p.k_pages, p, pos, g), lane, d, p.scale);
    const float m_new = fmaxf(m, s);
    const float corr = expf(m - m_new);  // 0 for the first key (m = -inf)
    const float w = expf(s - m_new);
    l = l * corr + w;
    const T* v = KvRow<T>(p.v_pages, p, pos, g);
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int e = lane + 32 * i;
      if (e < d) acc[i] = acc[i] * corr + w * F(v[e]);
    }
    m = m_new;
  }

  __shared__ float s_m[kAttnWarps], s_l[kAttnWarps];
  __shared__ float s_acc[kAttnWarps][kMaxHeadDim];
  if (lane == 0) {
    s_m[warp] = m;
    s_l[warp] = l;
  }
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int e = lane + 32 * i;
    if (e < d) s_acc[warp][e] = acc[i];
  }
  __syncthreads();
  float big = -INFINITY;
  for (int w = 0; w < kAttnWarps; ++w) {
    if (s_l[w] > 0.0f) big = fmaxf(big, s_m[w]);
  }
  float total = 0.0f;
  for (int w = 0; w < kAttnWarps; ++w) {
    if (s_l[w] > 0.0f) total += s_l[w] * expf(s_m[w] - big);
  }
  T* out = static_cast<T*>(p.out) + (static_cast<int64_t>(t) * p.num_heads + h) * d;
  for (int e = threadIdx.x; e < d; e += blockDim.x) {
    float o = 0.0f;
    if (total > 0.0f) {
      for (int w = 0; w < kAttnWarps; ++w) {
        if (s_l[w] > 0.0f) o += s_acc[w][e] * expf(s_m[w] - big);
      }
      o /= total;
    }
    out[e] = To<T>(o);
  }
  if (p.lse != nullptr && threadIdx.x == 0) {
    p.lse[static_cast<int64_t>(t) * p.num_heads + h] = total > 0.0f ? big + logf(total) : -INFINITY;
  }
}

template <typename T>
__global__ void __launch_bounds__(kAttnWarps * 32) AttentionWeightsKernel(PagedAttentionParams p) {
  const int h = blockIdx.x, t = blockIdx.y;
  const int g = h / (p.num_heads / p.num_kv_heads);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t qpos = p.kv_len - p.n + t;
  const float lse = p.lse[static_cast<int64_t>(t) * p.num_heads + h];
  if (lse == -INFINITY) return;  // attended nothing
  float q[kPerLane];
  LoadQuery<T>(p, t, h, lane, q);
  const bool last = t == p.n - 1;
  const int64_t count = NumCandidates(p, g, qpos);
  for (int64_t j = warp; j < count; j += kAttnWarps) {
    const int64_t pos = KeyPosition(p, g, j, qpos);
    if (pos < 0) continue;
    const float w = expf(Score(q, KvRow<T>(p.k_pages, p, pos, g), lane, p.head_dim, p.scale) - lse);
    if (lane == 0) {
      atomicAdd(&p.attention_sum[h * p.kv_len + pos], w);
      if (last) p.attention_last[h * p.kv_len + pos] = w;
    }
  }
}

}  // namespace

cudaError_t LaunchPagedAttention(ElemType type, const PagedAttentionParams& p, cudaStream_t stream) {
  if (p.n == 0 || p.num_heads == 0) return cudaSuccess;
  if (p.head_dim > kMaxHeadDim || p.n > 65535) return cudaErrorInvalidValue;
  const dim3 grid(static_cast<unsigned>(p.num_heads), static_cast<unsigned>(p.n));
  QUEST_DISPATCH(type, PagedAttentionKernel<T><<<grid, kAttnWarps * 32, 0, stream>>>(p));
  return cudaGetLastError();
}

cudaError_t LaunchAttentionWeights(ElemType type, const PagedAttentionParams& p,
                                   cudaStream_t stream) {
  if (p.n == 0 || p.num_heads == 0) return cudaSuccess;
  if (p.head_dim > kMaxHeadDim || p.n > 65535 || p.lse == nullptr) return cudaErrorInvalidValue;
  const dim3 grid(static_cast<unsigned>(p.num_heads), static_cast<unsigned>(p.n));
  QUEST_DISPATCH(type, AttentionWeightsKernel<T><<<grid, kAttnWarps * 32, 0, stream>>>(p));
  return cudaGetLastError();
}

}  // namespace quest::ops::cuda
