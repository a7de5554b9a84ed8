#ifndef QUEST_OPS_CUDA_DEVICE_UTIL_CUH_
#define QUEST_OPS_CUDA_DEVICE_UTIL_CUH_

// Device-side helpers shared by the backend's .cu files: float conversion
// of the storage types, grid-stride loops, the bf16/f16 dispatch and
// programmatic dependent launch.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "ops/cuda/kernels.h"

namespace quest::ops::cuda {

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
// float outputs (the GEMV's f32 logits) convert as the identity.
template <>
struct Cvt<float> {
  static __device__ __forceinline__ float ToF(float x) { return x; }
  static __device__ __forceinline__ float FromF(float x) { return x; }
};

template <typename T>
__device__ __forceinline__ float F(T x) { return Cvt<T>::ToF(x); }
template <typename T>
__device__ __forceinline__ T To(float x) { return Cvt<T>::FromF(x); }

// Two storage values packed in a 32-bit word (the lower one first) as
// floats, and eight of them in a 16-byte vector.
template <typename T>
__device__ __forceinline__ float2 Unpack2(uint32_t w);
template <>
__device__ __forceinline__ float2 Unpack2<__nv_bfloat16>(uint32_t w) {
  return make_float2(__uint_as_float(w << 16), __uint_as_float(w & 0xffff0000u));
}
template <>
__device__ __forceinline__ float2 Unpack2<__half>(uint32_t w) {
  __half2 h;
  *reinterpret_cast<uint32_t*>(&h) = w;
  return __half22float2(h);
}
template <typename T>
__device__ __forceinline__ void Unpack8(const uint4& v, float (&f)[8]) {
  const uint32_t words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 p = Unpack2<T>(words[i]);
    f[2 * i] = p.x;
    f[2 * i + 1] = p.y;
  }
}

__host__ __device__ __forceinline__ bool Aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

constexpr int kThreads = 256;

inline unsigned Blocks(int64_t n) {
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

// Programmatic dependent launch (sm_90): a kernel launched with
// programmatic stream serialization may start before the previous kernel
// on the stream ends; it waits for it (and its memory) at WaitPrimary(),
// which is a no-op for a normal launch. AllowDependents() lets the next
// such kernel start launching.
__device__ __forceinline__ void WaitPrimary() { asm volatile("griddepcontrol.wait;" ::: "memory"); }
__device__ __forceinline__ void AllowDependents() { asm volatile("griddepcontrol.launch_dependents;" ::: "memory"); }

template <typename... KArgs, typename... Args>
cudaError_t LaunchMaybePdl(bool pdl, void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem,
                           cudaStream_t stream, Args... args) {
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  config.attrs = attr;
  config.numAttrs = pdl ? 1 : 0;
  return cudaLaunchKernelEx(&config, kernel, args...);
}

}  // namespace quest::ops::cuda

#endif  // QUEST_OPS_CUDA_DEVICE_UTIL_CUH_
