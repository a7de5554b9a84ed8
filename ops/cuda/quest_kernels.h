#ifndef QUEST_OPS_CUDA_QUEST_KERNELS_H_
#define QUEST_OPS_CUDA_QUEST_KERNELS_H_

// Quest's page metadata and page selection on the GPU (the contract is
// Backend::UpdatePageBounds / Backend::SelectTopPages in runtime/backend.h;
// the CPU backend is the reference). Plain C++ launchers over device
// pointers, like kernels.h.

#include <cuda_runtime_api.h>

#include <cstdint>

#include "ops/cuda/kernels.h"

namespace quest::ops::cuda {

// Folds the Keys at positions [begin, end) into `bounds` (storage type),
// laid out as runtime/page_bounds_layout.h says for `num_kv_heads` and
// `head_dim`: side 0 the elementwise min, side 1 the max over the Quest
// page's Keys. A position at a Quest page's start
// resets that page's bounds to its own Key, others widen them; positions in
// a page-table hole (-1) are skipped.
struct PageBoundsParams {
  const void* k_pages = nullptr;  // [pages, page_size, num_kv_heads, head_dim]
  // page_table[i] is the physical page of logical pool page table_base + i
  // (a slice covering [begin, end) is enough).
  const int32_t* page_table = nullptr;
  int64_t table_base = 0;
  // Or, when [begin, end) lies in one pool page (a decode step's token):
  // that page's physical index as an argument (page_table unused, no
  // upload); a hole (-1) folds nothing.
  bool one_page = false;
  int32_t phys_page = -1;
  // Launched with programmatic stream serialization (see TopPagesParams).
  bool pdl = true;
  int page_size = 0;   // pool page
  int bound_page = 0;  // Quest page (divides page_size)
  int64_t begin = 0;
  int64_t end = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  // Bounds storage: the Keys' type, or FP8 E4M3 codes with the min rounded
  // down and the max rounded up (runtime/fp8.h).
  bool bounds_fp8 = false;
  void* bounds = nullptr;
};
cudaError_t LaunchUpdatePageBounds(ElemType type, const PageBoundsParams& p, cudaStream_t stream);

// Per KV head g: scores every Quest page p in [0, num_pages - 1) with the
// query heads of g combined (sum or max over the group of
// sum_d max(q_d * min_pd, q_d * max_pd), each side read only where its
// coefficient min(q_d, 0) / max(q_d, 0) is nonzero), NaN counting as -inf,
// and writes
// the `k` best (ties: the lower page) in ascending page order, then
// num_pages - 1 (the current page), to selected[g * (k + 1) ..].
// 0 <= k <= num_pages - 1.
struct TopPagesParams {
  const void* q = nullptr;       // [1, num_heads, head_dim]
  const void* bounds = nullptr;  // as in PageBoundsParams
  bool bounds_fp8 = false;       // as in PageBoundsParams
  int64_t num_pages = 0;
  int64_t k = 0;
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  bool combine_sum = true;  // false: max over the group
  float* scores = nullptr;  // scratch [num_kv_heads, num_pages] floats
  // Scratch [num_kv_heads] counters, zero before the launch and left zero
  // (variant 2 counts each head's finished scoring CTAs in them). One
  // launch at a time may use them.
  unsigned* arrivals = nullptr;
  // Optional [num_kv_heads]: once KV head g's row is written, ready[g] =
  // epoch (a release at GPU scope), so a paged attention launched right
  // after may wait for its own head's row instead of for this launch's end
  // (PagedAttentionParams::ready). Variants 1 and 2 only (others:
  // cudaErrorInvalidValue). Each launch should bring a new epoch.
  unsigned* ready = nullptr;
  unsigned epoch = 0;
  int32_t* selected = nullptr;  // [num_kv_heads, k + 1]
  // Implementation (benchmarks and tests; every one gives the same output):
  // 0 the default (1),
  // 1 scoring + select kernels (a binned select, radix where ties crowd
  // the k-th score's bin),
  // 2 one kernel: scoring CTAs spread over one wave, the last of each KV
  // head's CTAs to finish selecting that head's row (needs `arrivals`,
  // head_dim 64/128/256 and at most 64K pages; else 1). On an H100, MHA
  // 32K B=2048 FP8, the Quest step with 2 and the attention's per-head
  // wait (CudaBackendOptions::per_head_select_wait) measured 5.37-5.38x
  // dense against 5.33-5.37x with 1: its heads are scored together, so
  // their rows are ready together and the attention starts no earlier,
  // 4 the scoring pass alone (timing only: `selected` is not written),
  // 5 / 6 one fused kernel: a thread-block cluster of 8 / 16 CTAs per KV
  // head scores its slices into shared memory and radix-selects over the
  // cluster's distributed shared memory (no scores round trip; falls back
  // to 1 where a cluster launch is refused or the shape is not a fast one;
  // slower than 1 on an H100 at 32K-128K tokens).
  int variant = 0;
  // Pages per scoring CTA of the two-kernel path (tuning; 0: the default,
  // one tile of the layout; else rounded up to whole tiles).
  int64_t score_pages_per_cta = 0;
  // Launch the kernels with programmatic stream serialization (each starts
  // launching while the previous kernel on the stream ends; it waits for
  // that kernel before reading anything).
  bool pdl = true;
  int* launched_variant = nullptr;  // optional (host): the implementation that ran
};
cudaError_t LaunchSelectTopPages(ElemType type, const TopPagesParams& p, cudaStream_t stream);

// Several decode queries' selections (a decode batch's, one layer) in two
// launches, scoring and select, instead of two per member. Each member has
// its own query, bounds, page count, k and output rows, with what
// TopPagesParams says of them; they share `shape`'s num_heads,
// num_kv_heads, head_dim, bounds dtype and combine. The members' scores go
// to shape.scores + scores_offset ([num_kv_heads, num_pages] floats each).
// The members travel in the kernel parameters (no upload, so the launch
// can be captured in a CUDA graph).
struct TopPagesMember {
  const void* q = nullptr;
  const void* bounds = nullptr;
  int32_t* selected = nullptr;  // [num_kv_heads, k + 1]
  int64_t num_pages = 0;
  int64_t k = 0;
  int64_t scores_offset = 0;  // floats
};
inline constexpr int kMaxTopPagesBatch = 48;
struct TopPagesBatchParams {
  // num_heads, num_kv_heads, head_dim, bounds_fp8, combine_sum, scores and
  // pdl; its per-query fields are unused.
  TopPagesParams shape;
  int count = 0;  // 1 .. kMaxTopPagesBatch
  TopPagesMember members[kMaxTopPagesBatch];
};
// Whether the batched launch takes this shape (head_dim 64/128/256,
// 16-byte aligned bounds); otherwise launch the members one by one.
bool SelectTopPagesBatchSupported(const TopPagesParams& shape, const void* bounds);
cudaError_t LaunchSelectTopPagesBatch(ElemType type, const TopPagesBatchParams& p, cudaStream_t stream);

}  // namespace quest::ops::cuda

#endif  // QUEST_OPS_CUDA_QUEST_KERNELS_H_
