// The CUDA backend's elementwise and row kernels: grid-stride loops, one
// block per row for RMSNorm. All but the embedding are launched with
// programmatic dependent launch: each waits for the previous kernel before
// it touches memory and lets the next one launch at once, so launch
// latency overlaps the work before it (and gemv_kernels.cu's CTAs stream
// their weights while an RMSNorm or SiluMul runs, reading its output only
// after it ends). Each template is instantiated for bf16 and f16
// only. Attention lives in attention_kernels.cu, Quest's page selection in
// quest_kernels.cu.

#include <cmath>

#include "ops/cuda/device_util.cuh"
#include "ops/cuda/kernels.h"

namespace quest::ops::cuda {
namespace {

template <typename T>
__global__ void EmbeddingKernel(const T* table, const int32_t* ids, int64_t n, int64_t d, T* out) {
  QUEST_GRID_STRIDE(i, n * d) {
    const int64_t t = i / d, e = i % d;
    out[i] = table[static_cast<int64_t>(ids[t]) * d + e];
  }
}

// Vectors of 8 values per thread that RmsNorm keeps in registers (rows of
// up to 8 * kThreads * kNormVecs values, 8192).
constexpr int kNormVecs = 4;

// One block per row. A row of whole, aligned 16-byte vectors that fits the
// registers is read once, with every load issued before the first use (a
// decode step's RMSNorm is a latency chain, not a stream: looping over the
// row's elements one load at a time made it ~10 us on an H100); others take
// the element loop. kAdd: first x += r (rounded to T and stored, exactly
// as AddKernel does), and the norm is of the rounded sum.
template <typename T, bool kAdd>
__global__ void RmsNormKernel(T* x, const T* r, const T* w, float eps, int64_t d, T* y) {
  AllowDependents();
  WaitPrimary();
  T* xr = x + blockIdx.x * d;
  const T* rr = kAdd ? r + blockIdx.x * d : nullptr;
  T* yr = y + blockIdx.x * d;
  const bool vectors = d % 8 == 0 && d <= int64_t{8} * kThreads * kNormVecs && Aligned16(xr) && Aligned16(yr) &&
                       Aligned16(w) && (!kAdd || Aligned16(rr));
  float xf[kNormVecs][8];
  float ss = 0.0f;
  if (vectors) {
    const int nv = static_cast<int>(d / 8);
    uint4 raw[kNormVecs], add[kNormVecs];
#pragma unroll
    for (int i = 0; i < kNormVecs; ++i) {
      const int v = threadIdx.x + i * kThreads;
      if (v < nv) {
        raw[i] = reinterpret_cast<const uint4*>(xr)[v];
        if constexpr (kAdd) add[i] = reinterpret_cast<const uint4*>(rr)[v];
      }
    }
#pragma unroll
    for (int i = 0; i < kNormVecs; ++i) {
      const int v = threadIdx.x + i * kThreads;
      if (v >= nv) continue;
      Unpack8<T>(raw[i], xf[i]);
      if constexpr (kAdd) {
        float af[8];
        Unpack8<T>(add[i], af);
        __align__(16) T sum[8];
#pragma unroll
        for (int e = 0; e < 8; ++e) {
          sum[e] = To<T>(xf[i][e] + af[e]);
          xf[i][e] = F(sum[e]);
        }
        reinterpret_cast<uint4*>(xr)[v] = *reinterpret_cast<const uint4*>(sum);
      }
#pragma unroll
      for (int e = 0; e < 8; ++e) ss += xf[i][e] * xf[i][e];
    }
  } else {
    for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
      float v = F(xr[j]);
      if constexpr (kAdd) {
        const T sum = To<T>(v + F(rr[j]));
        xr[j] = sum;
        v = F(sum);
      }
      ss += v * v;
    }
  }
  __shared__ float partial[kThreads / 32];
  for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
  if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = ss;
  __syncthreads();
  float total = 0.0f;
  for (int i = 0; i < static_cast<int>(blockDim.x >> 5); ++i) total += partial[i];
  const float inv = rsqrtf(total / static_cast<float>(d) + eps);
  if (vectors) {
    const int nv = static_cast<int>(d / 8);
#pragma unroll
    for (int i = 0; i < kNormVecs; ++i) {
      const int v = threadIdx.x + i * kThreads;
      if (v >= nv) continue;
      float wf[8];
      Unpack8<T>(reinterpret_cast<const uint4*>(w)[v], wf);
      __align__(16) T out[8];
#pragma unroll
      for (int e = 0; e < 8; ++e) out[e] = To<T>((xf[i][e] * inv) * wf[e]);
      reinterpret_cast<uint4*>(yr)[v] = *reinterpret_cast<const uint4*>(out);
    }
  } else {
    for (int64_t j = threadIdx.x; j < d; j += blockDim.x) yr[j] = To<T>((F(xr[j]) * inv) * F(w[j]));
  }
}

template <typename T>
__global__ void AddKernel(T* x, const T* y, int64_t n) {
  AllowDependents();
  WaitPrimary();
  QUEST_GRID_STRIDE(i, n) { x[i] = To<T>(F(x[i]) + F(y[i])); }
}

template <typename T>
__global__ void SiluMulKernel(const T* gate, const T* up, T* out, int64_t n) {
  AllowDependents();
  WaitPrimary();
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
  AllowDependents();
  WaitPrimary();
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
  AllowDependents();
  WaitPrimary();
  QUEST_GRID_STRIDE(i, n * row) {
    const int64_t t = i / row, e = i % row, pos = start + t;
    const int64_t page = page_table[pos / page_size];
    const int64_t off = (page * page_size + pos % page_size) * row + e;
    k_pages[off] = k[i];
    v_pages[off] = v[i];
  }
}

// RmsNorm, after x += r when kAdd.
template <bool kAdd>
cudaError_t LaunchNorm(ElemType type, void* x, const void* r, const void* w, float eps, int64_t m, int64_t d,
                       void* y, cudaStream_t stream) {
  if (m == 0) return cudaSuccess;
  QUEST_DISPATCH(type, return LaunchMaybePdl(true, &RmsNormKernel<T, kAdd>, dim3(static_cast<unsigned>(m)),
                                              dim3(kThreads), 0, stream, static_cast<T*>(x),
                                              static_cast<const T*>(r), static_cast<const T*>(w), eps, d,
                                              static_cast<T*>(y)));
  return cudaErrorInvalidValue;
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
  // (kAdd = false never writes x.)
  return LaunchNorm<false>(type, const_cast<void*>(x), nullptr, w, eps, m, d, y, stream);
}

cudaError_t LaunchAddRmsNorm(ElemType type, void* x, const void* r, const void* w, float eps, int64_t m,
                             int64_t d, void* y, cudaStream_t stream) {
  return LaunchNorm<true>(type, x, r, w, eps, m, d, y, stream);
}

cudaError_t LaunchAdd(ElemType type, void* x, const void* y, int64_t n, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  QUEST_DISPATCH(type, return LaunchMaybePdl(true, &AddKernel<T>, dim3(Blocks(n)), dim3(kThreads), 0, stream,
                                              static_cast<T*>(x), static_cast<const T*>(y), n));
  return cudaErrorInvalidValue;
}

cudaError_t LaunchSiluMul(ElemType type, const void* gate, const void* up, void* out, int64_t n,
                          cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  QUEST_DISPATCH(type, return LaunchMaybePdl(true, &SiluMulKernel<T>, dim3(Blocks(n)), dim3(kThreads), 0, stream,
                                              static_cast<const T*>(gate), static_cast<const T*>(up),
                                              static_cast<T*>(out), n));
  return cudaErrorInvalidValue;
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
  QUEST_DISPATCH(type, return LaunchMaybePdl(true, &RopeKernel<T>, dim3(Blocks(total)), dim3(kThreads), 0, stream,
                                              static_cast<T*>(x), positions, inv_freq, attention_scaling, n, heads,
                                              d));
  return cudaErrorInvalidValue;
}

cudaError_t LaunchWriteKvPages(ElemType type, const void* k, const void* v,
                               const int32_t* page_table, int64_t start, int64_t n, int64_t row,
                               int page_size, void* k_pages, void* v_pages, cudaStream_t stream) {
  if (n * row == 0) return cudaSuccess;
  QUEST_DISPATCH(type, return LaunchMaybePdl(true, &WriteKvPagesKernel<T>, dim3(Blocks(n * row)), dim3(kThreads), 0,
                                              stream, static_cast<const T*>(k), static_cast<const T*>(v), page_table,
                                              start, n, row, page_size, static_cast<T*>(k_pages),
                                              static_cast<T*>(v_pages)));
  return cudaErrorInvalidValue;
}

int NumSms() {
  static const int sms = [] {
    int dev = 0, n = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) {
      return 132;
    }
    return n;
  }();
  return sms;
}

}  // namespace quest::ops::cuda
