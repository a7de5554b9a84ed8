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

struct DecodeSequence;

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

  // Split-KV (flash-decoding) path. Set by the caller before planning: the
  // most candidate keys (slots of selected chunks, or kv_len when dense) any
  // KV head visits for one query token.
  int64_t max_candidates = 0;
  // Set by PlanPagedAttention: the number of KV splits per (token, KV head,
  // head tile) and the candidates each covers (num_splits == 1: no merge).
  int num_splits = 1;
  int64_t split_len = 0;
  // With num_splits > 1: PagedAttentionPlan::workspace_floats floats and
  // PagedAttentionPlan::counters ints of device memory (counters: with
  // dynamic_splits only); the counters must be zero before the first
  // launch (the launch leaves them zero again).
  float* workspace = nullptr;
  int* counters = nullptr;
  // Set by PlanPagedAttention for long splits of one sequence's launch
  // (split_plan.h, DynamicSplits): the splits hand the unit's candidates out
  // at run time, a few tiles per warp at a time from a counter per unit
  // (PagedAttentionPlan::counters), so that blocks on SMs that stream
  // faster take more of them. Which split sums which tiles then depends on
  // timing, so such a launch's output is not bitwise repeatable (it varies
  // within fp32 rounding); short lists (Quest's selections) stay static.
  bool dynamic_splits = false;
  // Set by PlanPagedAttention(Batch) for a launch of short splits
  // (split_plan.h, PrefetchFirstTiles): each block asks L2 for its first
  // tiles' K and V before it waits for the previous kernel, through the
  // page table (which the kernel just before must not write; the host
  // uploads it in stream order) and, with a selection, through what the
  // selection holds then (a device table's previous contents while the
  // select rewrites it: a hint, never used for the result).
  bool prefetch_first_tiles = false;

  // Batched decode: when set, `batch_size` sequences of one layer, each
  // decoding one token (n must be 1), attend in one launch. Each brings its
  // own q, out, page table, kv_len and selection table (DecodeSequence, a
  // device array); the pools, shape, chunk and scale are the fields above.
  // No CSR selections, token masks or lse; q and out 16-byte aligned.
  const DecodeSequence* batch = nullptr;
  int batch_size = 0;

  // Optional, split kernels only: the selection tables come from the
  // SelectTopPages launch just before this one on the stream, which
  // publishes each KV head's row (TopPagesParams::ready / epoch). A block
  // then waits until ready[g] == ready_epoch for its KV head g instead of
  // for that launch's end, so a head's attention starts as soon as its row
  // is written. Everything else the launch reads must come from work
  // enqueued before that select (its first kernel waits for the end of
  // that work before it lets the next launch begin), and the caller keeps
  // any other programmatically launched kernel from coming between the
  // select and this launch. The blocks still wait for the select's end
  // before they exit, so this launch's end implies the select's.
  const unsigned* ready = nullptr;
  unsigned ready_epoch = 0;
};

// One sequence of a batched decode launch (PagedAttentionParams::batch).
// No padding between fields, so equal descriptors compare equal bytewise.
struct DecodeSequence {
  const void* q = nullptr;  // [num_heads, head_dim]
  void* out = nullptr;      // [num_heads * head_dim]
  const int32_t* page_table = nullptr;
  // nullptr: dense. Else KV head g attends the chunks chunks[g *
  // chunks_per_head .. (g + 1) * chunks_per_head) (SelectTopPages' table).
  const int32_t* chunks = nullptr;
  int64_t kv_len = 0;
  // Set by PlanPagedAttentionBatch: the length of the sequence's splits,
  // and where its partial results start in the launch's workspace (floats).
  int64_t split_len = 0;
  int64_t workspace_offset = 0;
  int chunks_per_head = 0;
  int num_splits = 1;  // set by PlanPagedAttentionBatch
};
static_assert(sizeof(DecodeSequence) == 4 * sizeof(void*) + 3 * sizeof(int64_t) + 2 * sizeof(int),
              "DecodeSequence has no padding");

// What LaunchPagedAttention needs beyond the inputs.
struct PagedAttentionPlan {
  size_t workspace_floats = 0;
  size_t counters = 0;
};

// Picks the split-KV launch for p (needs the shape fields, n, kv_len and
// max_candidates): sets p.num_splits and p.split_len and returns the
// workspace to provide. Short work gets one split (no workspace).
PagedAttentionPlan PlanPagedAttention(ElemType type, PagedAttentionParams& p);

// Plans a batched decode launch: `seqs` (host memory, `count` of them) get
// their splits, all of one length, so that the batch's candidate keys
// spread over one wave of resident blocks, but at most kMaxBatchSplitLen
// keys per block (split_plan.h), so a long batch runs as several waves (a
// short sequence gets one split, a long one many); p.num_splits becomes the
// most any sequence has (the grid's width). The caller then copies `seqs`
// to the device as p.batch.
PagedAttentionPlan PlanPagedAttentionBatch(ElemType type, PagedAttentionParams& p, DecodeSequence* seqs,
                                           int count);

// head_dim 64, 128 or 256 (16-byte aligned q and pages): split-KV
// (flash-decoding), any n (causal). Grid (KV split, KV head x head tile,
// query token); a block of 4 warps serves up to 8 query heads of its KV
// head's group (GB = 1, 2, 4 or 8; larger groups take several head tiles),
// so each K/V row is read once per KV head and tile. Each warp streams its
// share of the split's candidate rows through a cp.async pipeline in shared
// memory (16-byte copies, zero-filled for rows not attended) with an online
// softmax in fp32: on CUDA cores for GB 1-2 and head_dim 256, with
// mma.sync tensor cores for GB 4-8 (S = Q K^T with the heads padded to 16
// rows, O^T += V^T P^T with the 8 heads as columns). The block's warps are
// merged in shared memory; with several splits the partial results (max,
// sum, unnormalised output) go to the workspace and a second kernel,
// launched right after (programmatic dependent launch), merges each
// (token, KV head, tile)'s splits. (The merge ran in the split kernels'
// last block of each unit until session 16; with its code there the
// splits streamed ~8 % slower, tools/bench/RESULTS.md.) Each warp looks up
// a tile's rows (selection chunk, page-table entry, mask byte) one step
// before issuing its copies, and the prologue's tiles together. PlanPagedAttention sizes the splits so
// the grid is one wave of resident blocks, each warp getting at least the
// pipeline's prologue of tiles; lists up to two such blocks long get one
// split (no merge). The split kernels are launched with programmatic
// dependent launch: they wait for the previous grid before reading what
// they compute from, and with prefetch_first_tiles first ask L2 for their
// first tiles (reading only the page table, the selection and the batch's
// descriptors to find them).
// With p.batch (head_dim 64, 128 or 256 only), the grid's last dimension is
// the sequence instead of the query token.
// Other head_dims: one block per (query token, query head).
cudaError_t LaunchPagedAttention(ElemType type, const PagedAttentionParams& p, cudaStream_t stream);

// Softmax weights exp(s - lse) of every attended key, summed over the n
// queries into attention_sum and those of the last query into
// attention_last (needs lse from LaunchPagedAttention).
cudaError_t LaunchAttentionWeights(ElemType type, const PagedAttentionParams& p,
                                   cudaStream_t stream);

}  // namespace quest::ops::cuda

#endif  // QUEST_OPS_CUDA_ATTENTION_KERNELS_H_
