#ifndef QUEST_OPS_CUDA_DEVICE_UTIL_CUH_
#define QUEST_OPS_CUDA_DEVICE_UTIL_CUH_

// Device-side helpers shared by the backend's .cu files: float conversion
// of the storage types, grid-stride loops and the bf16/f16 dispatch.

#include <cuda_bf16.h>
#include <cuda_fp16.h>

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

template <typename T>
__device__ __forceinline__ float F(T x) { return Cvt<T>::ToF(x); }
template <typename T>
__device__ __forceinline__ T To(float x) { return Cvt<T>::FromF(x); }

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

}  // namespace quest::ops::cuda

#endif  // QUEST_OPS_CUDA_DEVICE_UTIL_CUH_
