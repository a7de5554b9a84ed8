// The CUDA backend's kernels. Correct first: simple grid-stride elementwise
// kernels, one block per row for RMSNorm, and a straightforward paged
// attention (see kernels.h). Each template is instantiated for bf16 and f16
// only.

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>

#include "ops/cuda/kernels.h"

namespace quest::ops::cuda {
namespace {

template <typename T>
struct Cvt;
template <>
struct Cvt<__nv_bfloat16> {
  static __device__ __forceinline__ float ToF(__nv_bfloat16 x) { return __bfloat162float(x); }
  static __device__ __forceinline__ __nv_bfloat16 FromF(float x) { return __float2bfloat16(x); }
};
template <>
struct Cvt<__half> {
  static __device__ __forceinline__ float ToF(__half x) { return __half2float(x); }
  static __device__ __forceinline__ __half FromF(float x) { return __float2half(x); }
};

template <typename T>
__device__ __forceinline__ float F(T x) { return Cvt<T>::ToF(x); }
template <typename T>
__device__ __forceinline__ T To(float x) { return Cvt<T>::FromF(x); }

constexpr int kThreads = 256;

__forceinline__ unsigned Blocks(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(b < 65536 ? (b < 1 ? 1 : b) : 65536);
}

#define QUEST_GRID_STRIDE(i, n) \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)

// Runs BODY with `T` bound to the storage type of `type`.
#define QUEST_DISPATCH(type, ...)          \
  do {                                     \
    if ((type) == ElemType::kBFloat16) {   \
      using T = __nv_bfloat16;             \
      __VA_ARGS__;                         \
    } else {                               \
      using T = __half;                    \
      __VA_ARGS__;                         \
    }                                      \
  } while (0)

template <typename T>
__global__ void EmbeddingKernel(const T* table, const int32_t* ids, int64_t n, int64_t d, T* out) {
  QUEST_GRID_STRIDE(i, n * d) {
    const int64_t t = i / d, e = i % d;
    out[i] = table[static_cast<int64_t>(ids[t]) * d + e];
  }
}

template <typename T>
__global__ void RmsNormKernel(const T* x, const T* w, float eps, int64_t d, T* y) {
  const T* xr = x + blockIdx.x * d;
  T* yr = y + blockIdx.x * d;
  float ss = 0.0f;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
    const float v = F(xr[j]);
    ss += v * v;
  }
  __shared__ float partial[kThreads / 32];
  for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
  if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = ss;
  __syncthreads();
  float total = 0.0f;
  for (int i = 0; i < static_cast<int>(blockDim.x >> 5); ++i) total += partial[i];
  const float inv = rsqrtf(total / static_cast<float>(d) + eps);
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) yr[j] = To<T>((F(xr[j]) * inv) * F(w[j]));
}

template <typename T>
__global__ void AddKernel(T* x, const T* y, int64_t n) {
  QUEST_GRID_STRIDE(i, n) { x[i] = To<T>(F(x[i]) + F(y[i])); }
}

template <typename T>
__global__ void SiluMulKernel(const T* gate, const T* up, T* out, int64_t n) {
  QUEST_GRID_STRIDE(i, n) {
    const float g = F(gate[i]);
    out[i] = To<T>(g / (1.0f + expf(-g)) * F(up[i]));
  }
}

template <typename T>
__global__ void AddBiasF32Kernel(float* y, const T* bias, int64_t m, int64_t n) {
  QUEST_GRID_STRIDE(i, m * n) { y[i] += F(bias[i % n]); }
}

template <typename T>
__global__ void RopeKernel(T* x, const int32_t* positions, const float* inv_freq, float scaling,
                           int64_t n, int64_t heads, int64_t d) {
  const int64_t half = d / 2;
  QUEST_GRID_STRIDE(idx, n * heads * half) {
    const int64_t i = idx % half, row = idx / half, t = row / heads;
    // Same rounding as the reference: the angle is a float32 product.
    const float angle = static_cast<float>(positions[t]) * inv_freq[i];
    const float c = cosf(angle) * scaling, s = sinf(angle) * scaling;
    T* v = x + row * d;
    const float a = F(v[i]), b = F(v[i + half]);
    v[i] = To<T>(a * c - b * s);
    v[i + half] = To<T>(b * c + a * s);
  }
}

template <typename T>
__global__ void WriteKvPagesKernel(const T* k, const T* v, const int32_t* page_table, int64_t start,
                                   int64_t n, int64_t row, int page_size, T* k_pages, T* v_pages) {
  QUEST_GRID_STRIDE(i, n * row) {
    const int64_t t = i / row, e = i % row, pos = start + t;
    const int64_t page = page_table[pos / page_size];
    const int64_t off = (page * page_size + pos % page_size) * row + e;
    k_pages[off] = k[i];
    v_pages[off] = v[i];
  }
}

// ---- Paged attention ----

constexpr int kAttnWarps = 4;
constexpr int kPerLane = kMaxHeadDim / 32;

// Keys a (token, head) block walks: dense, every position up to its own
// (causal); selected, every slot of its KV head's chunks.
__device__ __forceinline__ int64_t NumCandidates(const PagedAttentionParams& p, int g, int64_t qpos) {
  if (p.indptr == nullptr) return qpos + 1 < p.kv_len ? qpos + 1 : p.kv_len;
  return static_cast<int64_t>(p.indptr[g + 1] - p.indptr[g]) * p.chunk;
}

// Position of candidate j, or -1 when it is not attended (past the
// sequence, causal, a page-table hole, evicted).
__device__ __forceinline__ int64_t KeyPosition(const PagedAttentionParams& p, int g, int64_t j,
                                               int64_t qpos) {
  int64_t pos = j;
  if (p.indptr != nullptr) {
    pos = static_cast<int64_t>(p.chunks[p.indptr[g] + j / p.chunk]) * p.chunk + j % p.chunk;
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

cudaError_t LaunchEmbedding(ElemType type, const void* table, const int32_t* ids, int64_t n,
                            int64_t d, void* out, cudaStream_t stream) {
  if (n * d == 0) return cudaSuccess;
  QUEST_DISPATCH(type, EmbeddingKernel<T><<<Blocks(n * d), kThreads, 0, stream>>>(
                           static_cast<const T*>(table), ids, n, d, static_cast<T*>(out)));
  return cudaGetLastError();
}

cudaError_t LaunchRmsNorm(ElemType type, const void* x, const void* w, float eps, int64_t m,
                          int64_t d, void* y, cudaStream_t stream) {
  if (m == 0) return cudaSuccess;
  QUEST_DISPATCH(type, RmsNormKernel<T><<<static_cast<unsigned>(m), kThreads, 0, stream>>>(
                           static_cast<const T*>(x), static_cast<const T*>(w), eps, d,
                           static_cast<T*>(y)));
  return cudaGetLastError();
}

cudaError_t LaunchAdd(ElemType type, void* x, const void* y, int64_t n, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  QUEST_DISPATCH(type, AddKernel<T><<<Blocks(n), kThreads, 0, stream>>>(
                           static_cast<T*>(x), static_cast<const T*>(y), n));
  return cudaGetLastError();
}

cudaError_t LaunchSiluMul(ElemType type, const void* gate, const void* up, void* out, int64_t n,
                          cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  QUEST_DISPATCH(type, SiluMulKernel<T><<<Blocks(n), kThreads, 0, stream>>>(
                           static_cast<const T*>(gate), static_cast<const T*>(up),
                           static_cast<T*>(out), n));
  return cudaGetLastError();
}

cudaError_t LaunchAddBiasF32(ElemType type, float* y, const void* bias, int64_t m, int64_t n,
                             cudaStream_t stream) {
  if (m * n == 0) return cudaSuccess;
  QUEST_DISPATCH(type, AddBiasF32Kernel<T><<<Blocks(m * n), kThreads, 0, stream>>>(
                           y, static_cast<const T*>(bias), m, n));
  return cudaGetLastError();
}

cudaError_t LaunchRope(ElemType type, void* x, const int32_t* positions, const float* inv_freq,
                       float attention_scaling, int64_t n, int64_t heads, int64_t d,
                       cudaStream_t stream) {
  const int64_t total = n * heads * (d / 2);
  if (total == 0) return cudaSuccess;
  QUEST_DISPATCH(type, RopeKernel<T><<<Blocks(total), kThreads, 0, stream>>>(
                           static_cast<T*>(x), positions, inv_freq, attention_scaling, n, heads, d));
  return cudaGetLastError();
}

cudaError_t LaunchWriteKvPages(ElemType type, const void* k, const void* v,
                               const int32_t* page_table, int64_t start, int64_t n, int64_t row,
                               int page_size, void* k_pages, void* v_pages, cudaStream_t stream) {
  if (n * row == 0) return cudaSuccess;
  QUEST_DISPATCH(type, WriteKvPagesKernel<T><<<Blocks(n * row), kThreads, 0, stream>>>(
                           static_cast<const T*>(k), static_cast<const T*>(v), page_table, start, n,
                           row, page_size, static_cast<T*>(k_pages), static_cast<T*>(v_pages)));
  return cudaGetLastError();
}

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
