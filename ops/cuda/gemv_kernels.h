#ifndef QUEST_OPS_CUDA_GEMV_KERNELS_H_
#define QUEST_OPS_CUDA_GEMV_KERNELS_H_

// Decode-shaped linear layers: y[m, n] = x[m, k] . w[n, k]^T (+ bias[n]) for
// a few rows of x (a decode step's tokens, or a decode batch's): on CUDA
// cores for 1-2 rows, on tensor cores for 3-8. Backend::Linear and
// Backend::LinearGroup (runtime/backend.h) are the contract; cuBLASLt
// serves every other shape.
//
// Why a kernel of our own: at m = 1..8 a linear layer is a stream over its
// weight, and the weights of a decode step are cold (each is read once per
// step, and a layer's 400 MB never fit the L2). cuBLASLt's picks read a cold
// 4096 x 4096 weight at 76 % of copy bandwidth on an H100 and a 1024 x 4096
// one (GQA's K and V projections) at 24-38 %; these kernels read them at
// ~100 % and 84 % with one row of x, 93 % and 59 % with eight
// (tools/bench/RESULTS.md, session 10).

#include <cuda_runtime_api.h>

#include <cstdint>

#include "ops/cuda/kernels.h"

namespace quest::ops::cuda {

// Most rows of x one launch takes.
inline constexpr int kMaxGemvRows = 8;

// Most weights one launch takes (a layer's q, k and v projections of one x).
inline constexpr int kMaxGemvParts = 3;

// One weight of a launch and its output.
struct GemvPart {
  const void* w = nullptr;     // [n, k], compute type
  const void* bias = nullptr;  // [n], compute type, or nullptr
  void* y = nullptr;           // [m, n]: compute type, or float32 with y_f32
  int64_t n = 0;
};

// y_j = x . w_j^T (+ bias_j) for each part j, in one launch: the parts'
// CTAs follow each other in the grid.
struct GemvParams {
  const void* x = nullptr;  // [m, k], compute type
  int num_parts = 1;
  GemvPart parts[kMaxGemvParts];
  bool y_f32 = false;  // every part's output
  int64_t m = 0;
  int64_t k = 0;
  // Implementation: 0 the default, 1 CUDA cores (m <= 4; each weight
  // element is multiplied with every row of x in registers, and every row
  // of x is re-read from L1 per weight vector, which bounds it past 4 rows:
  // on an H100 at m = 8 it reached 50-64 % of copy), 2 tensor cores (k a
  // multiple of 64; mma.sync with the weight rows as A and x as B).
  int variant = 0;
  // Weight rows per CTA of the CUDA-core kernel, 2, 4 or 8 (tuning; 0: the
  // default).
  int rows_per_cta = 0;
  // Launch with programmatic stream serialization: the CTAs start loading
  // their weight rows (never written by the stream) while the previous
  // kernel ends, and read x only after that kernel is complete.
  bool pdl = true;
};

// Whether LaunchGemv takes this shape: 1 <= m <= kMaxGemvRows, k a
// multiple of 8 (of 64 above 4 rows), 1 to kMaxGemvParts parts of n >= 1,
// x and every w 16-byte aligned (bias and y: any alignment), and the
// variant asked for takes it.
bool GemvSupported(const GemvParams& p);

cudaError_t LaunchGemv(ElemType type, const GemvParams& p, cudaStream_t stream);

}  // namespace quest::ops::cuda

#endif  // QUEST_OPS_CUDA_GEMV_KERNELS_H_
