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

// Largest head_dim PagedAttention supports (8 floats per lane of a warp).
inline constexpr int kMaxHeadDim = 256;

// out[t, :] = table[ids[t], :]; table [vocab, d], out [n, d].
cudaError_t LaunchEmbedding(ElemType type, const void* table, const int32_t* ids, int64_t n,
                            int64_t d, void* out, cudaStream_t stream);

// y = x * rsqrt(mean(x^2) + eps) * w per row of x [m, d].
cudaError_t LaunchRmsNorm(ElemType type, const void* x, const void* w, float eps, int64_t m,
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

// Device-side arguments of paged attention (see runtime/backend.h,
// PagedAttentionArgs). All pointers are device pointers.
struct PagedAttentionParams {
  const void* q = nullptr;        // [n, num_heads, head_dim]
  const void* k_pages = nullptr;  // [pages, page_size, num_kv_heads, head_dim]
  const void* v_pages = nullptr;
  const int32_t* page_table = nullptr;  // logical -> physical page, -1 = hole
  int page_size = 0;
  int64_t kv_len = 0;
  int n = 0;
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  // nullptr: dense. Else CSR per KV head over `chunks` of `chunk` tokens.
  const int32_t* indptr = nullptr;
  const int32_t* chunks = nullptr;
  int chunk = 0;
  const uint8_t* token_valid = nullptr;  // [num_kv_heads, mask_stride] or nullptr
  int64_t mask_stride = 0;
  float scale = 1.0f;
  void* out = nullptr;  // [n, num_heads * head_dim]
  // Optional: log-sum-exp per (t, head) [n, num_heads], written by
  // LaunchPagedAttention and read by LaunchAttentionWeights.
  float* lse = nullptr;
  // [num_heads, kv_len], zeroed by the caller; filled by LaunchAttentionWeights.
  float* attention_sum = nullptr;
  float* attention_last = nullptr;
};

// One thread block per (query token, query head), one online softmax per
// warp over a strided share of the selected keys, merged at the end.
// TODO(next slice): split-KV (flash-decoding) for decode, where n * heads
// blocks leave most of the GPU idle on long contexts; a block per
// (token, KV head) sharing K/V loads across the group's query heads.
cudaError_t LaunchPagedAttention(ElemType type, const PagedAttentionParams& p, cudaStream_t stream);

// Softmax weights exp(s - lse) of every attended key, summed over the n
// queries into attention_sum and those of the last query into
// attention_last (needs lse from LaunchPagedAttention).
cudaError_t LaunchAttentionWeights(ElemType type, const PagedAttentionParams& p,
                                   cudaStream_t stream);

}  // namespace quest::ops::cuda

#endif  // QUEST_OPS_CUDA_KERNELS_H_
