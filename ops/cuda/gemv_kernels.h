#ifndef QUEST_OPS_CUDA_GEMV_KERNELS_H_
#define QUEST_OPS_CUDA_GEMV_KERNELS_H_

// Decode-shaped linear layers: y[m, n] = x[m, k] . w[n, k]^T (+ bias[n]) for
// a few rows of x (a decode step's tokens), on CUDA cores. Backend::Linear
// (runtime/backend.h) is the contract; cuBLASLt serves every other shape.
//
// Why a kernel of our own: at m = 1..8 a linear layer is a stream over its
// weight, and the weights of a decode step are cold (each is read once per
// step, and a layer's 400 MB never fit the L2). cuBLASLt's picks read a cold
// 4096 x 4096 weight at 76 % of copy bandwidth on an H100 and a 1024 x 4096
// one (GQA's K and V projections) at 28 %; this kernel reads them at
// ~100 % and 84 % (tools/bench/RESULTS.md, "Decode linear layers").

#include <cuda_runtime_api.h>

#include <cstdint>

#include "ops/cuda/kernels.h"

namespace quest::ops::cuda {

// Most rows of x one launch takes. Each weight element is multiplied with
// every row in registers, and every row of x is read from L1 per weight
// vector: at 8 rows that L1 traffic, not DRAM, bounds it (H100: 50-64 % of
// copy, 0.56-0.74x cuBLASLt), while at 4 it still matches or beats
// cuBLASLt (RESULTS.md, "Decode linear layers").
inline constexpr int kMaxGemvRows = 4;

struct GemvParams {
  const void* x = nullptr;     // [m, k], compute type
  const void* w = nullptr;     // [n, k], compute type
  const void* bias = nullptr;  // [n], compute type, or nullptr
  void* y = nullptr;           // [m, n]: compute type, or float32 with y_f32
  bool y_f32 = false;
  int64_t m = 0;
  int64_t n = 0;
  int64_t k = 0;
  // Weight rows per CTA, 2, 4 or 8 (tuning; 0: the default).
  int rows_per_cta = 0;
  // Launch with programmatic stream serialization: the CTAs start loading
  // their weight rows (never written by the stream) while the previous
  // kernel ends, and read x only after that kernel is complete.
  bool pdl = true;
};

// Whether LaunchGemv takes this shape: 1 <= m <= kMaxGemvRows, k a
// multiple of 8, x and w 16-byte aligned (bias and y: any alignment).
bool GemvSupported(const GemvParams& p);

cudaError_t LaunchGemv(ElemType type, const GemvParams& p, cudaStream_t stream);

}  // namespace quest::ops::cuda

#endif  // QUEST_OPS_CUDA_GEMV_KERNELS_H_
