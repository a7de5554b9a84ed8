#ifndef QUEST_OPS_CUDA_ATTENTION_KERNELS_H_
#define QUEST_OPS_CUDA_ATTENTION_KERNELS_H_

// Paged attention over one sequence's KV pages (runtime/backend.h,
// PagedAttentionArgs, is the contract; the CPU backend is the reference).
// Plain C++ launchers over device pointers, like kernels.h.

#include <cuda_runtime_api.h>

#include <cstdint>

#include "ops/cuda/kernels.h"

namespace quest::ops::cuda {

// Largest head_dim PagedAttention supports (8 floats per lane of a warp).
inline constexpr int kMaxHeadDim = 256;

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
  // Selection (chunks of `chunk` tokens). chunks == nullptr: dense. Else
  // KV head g attends chunks[indptr[g] .. indptr[g+1]) (CSR), or, when
  // indptr is nullptr, the uniform table chunks[g * chunks_per_head ..
  // (g+1) * chunks_per_head) (a device-made selection: SelectTopPages).
  const int32_t* indptr = nullptr;
  const int32_t* chunks = nullptr;
  int chunks_per_head = 0;
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

#endif  // QUEST_OPS_CUDA_ATTENTION_KERNELS_H_
