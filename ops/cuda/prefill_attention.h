#ifndef QUEST_OPS_CUDA_PREFILL_ATTENTION_H_
#define QUEST_OPS_CUDA_PREFILL_ATTENTION_H_

// Flash-attention-style prefill over the paged KV cache (n > 1 queries, the
// sequence's newest n tokens at positions [kv_len - n, kv_len), causal).
// Tiles of query rows of one query head against K/V tiles gathered from the
// pages into shared memory (cp.async), S = Q K^T and O += P V on tensor cores
// (Hopper wgmma by default, one warpgroup loading for two computing; fp32
// accumulate), online softmax in fp32; no n x kv matrix in memory. Covers
// the dense case only; everything else stays with LaunchPagedAttention
// (attention_kernels.h).

#include <cuda_runtime_api.h>

#include "ops/cuda/attention_kernels.h"

namespace quest::ops::cuda {

// The one dispatch predicate: true when LaunchPrefillAttention handles `p`:
// n >= 2, head_dim 64 or 128, a power-of-two page_size, dense (no
// selection, no token_valid mask), no lse / attention weights requested,
// scale > 0, 16-byte aligned q, pages and out. Page-table holes (-1) are
// allowed (those keys are skipped, as in the reference).
bool PrefillAttentionSupported(const PagedAttentionParams& p);

// cudaErrorNotSupported when !PrefillAttentionSupported(p) (nothing is
// launched then); else the launch's error.
cudaError_t LaunchPrefillAttention(ElemType type, const PagedAttentionParams& p,
                                   cudaStream_t stream);

// For tests and benchmarks: the mma.sync kernel (sm_80-style, the
// baseline the wgmma kernel is measured against) in one tile
// configuration, `warps` warps of 16 * `row_tiles` query rows each
// (supported: 4x1, 4x2, 8x1).
cudaError_t LaunchPrefillAttentionConfig(ElemType type, const PagedAttentionParams& p, int warps,
                                         int row_tiles, cudaStream_t stream);

// For tests and benchmarks: the Hopper warpgroup-MMA kernel (wgmma, sm_90a),
// `warpgroups` (1 or 2) warpgroups of 64 query rows each, every thread
// both loading and computing.
cudaError_t LaunchPrefillAttentionWgmma(ElemType type, const PagedAttentionParams& p, int warpgroups,
                                        cudaStream_t stream);

// For tests and benchmarks: the warp-specialized wgmma kernel, one
// warpgroup loading K/V tiles for two computing 64 query rows each.
// LaunchPrefillAttention picks between this and the 1-warpgroup kernel.
cudaError_t LaunchPrefillAttentionWarpSpecialized(ElemType type, const PagedAttentionParams& p,
                                                  cudaStream_t stream);

}  // namespace quest::ops::cuda

#endif  // QUEST_OPS_CUDA_PREFILL_ATTENTION_H_
