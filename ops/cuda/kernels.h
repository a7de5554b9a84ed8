#ifndef QUEST_OPS_CUDA_KERNELS_H_
#define QUEST_OPS_CUDA_KERNELS_H_

// Plain C++ launchers of the CUDA backend's kernels (kernels.cu). Raw device
// pointers only: nvcc compiles the .cu side without Abseil, glog or
// protobuf; CudaBackend (cuda_backend.cc, gcc) owns tensors, checks shapes
// and checks every returned cudaError_t.
//
// Storage is the backend's compute type (bf16 or f16); every kernel computes
// in float32.

#include <cuda_runtime_api.h>

#include <cstdint>

namespace quest::ops::cuda {

enum class ElemType : int { kBFloat16, kFloat16 };

// The current device's multiprocessor count (looked up once; 132, an
// H100's, if the query fails).
int NumSms();

// out[t, :] = table[ids[t], :]; table [vocab, d], out [n, d].
cudaError_t LaunchEmbedding(ElemType type, const void* table, const int32_t* ids, int64_t n,
                            int64_t d, void* out, cudaStream_t stream);

// y = x * rsqrt(mean(x^2) + eps) * w per row of x [m, d].
cudaError_t LaunchRmsNorm(ElemType type, const void* x, const void* w, float eps, int64_t m,
                          int64_t d, void* y, cudaStream_t stream);

// x += r, then y = x * rsqrt(mean(x^2) + eps) * w of the updated rows of x
// [m, d] (the sum rounded to the storage type, as LaunchAdd leaves it).
cudaError_t LaunchAddRmsNorm(ElemType type, void* x, const void* r, const void* w, float eps, int64_t m,
                             int64_t d, void* y, cudaStream_t stream);

// x += y over n elements.
cudaError_t LaunchAdd(ElemType type, void* x, const void* y, int64_t n, cudaStream_t stream);

// out = silu(gate) * up over n elements (out may alias gate or up).
cudaError_t LaunchSiluMul(ElemType type, const void* gate, const void* up, void* out, int64_t n,
                          cudaStream_t stream);

// y[m, n] (float32) += bias[n] (compute type).
cudaError_t LaunchAddBiasF32(ElemType type, float* y, const void* bias, int64_t m, int64_t n,
                             cudaStream_t stream);

// In place on x [n, heads, d], Hugging Face half-split pairs; token t at
// positions[t]; inv_freq has d/2 floats.
cudaError_t LaunchRope(ElemType type, void* x, const int32_t* positions, const float* inv_freq,
                       float attention_scaling, int64_t n, int64_t heads, int64_t d,
                       cudaStream_t stream);

// k/v [n, row] of positions [start, start+n) into pages [*, page_size, row].
cudaError_t LaunchWriteKvPages(ElemType type, const void* k, const void* v,
                               const int32_t* page_table, int64_t start, int64_t n, int64_t row,
                               int page_size, void* k_pages, void* v_pages, cudaStream_t stream);

}  // namespace quest::ops::cuda

#endif  // QUEST_OPS_CUDA_KERNELS_H_
