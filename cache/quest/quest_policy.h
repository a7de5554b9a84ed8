#ifndef QUEST_CACHE_QUEST_QUEST_POLICY_H_
#define QUEST_CACHE_QUEST_QUEST_POLICY_H_

// Quest (Tang et al., ICML 2024): query-aware page selection for decode.
//
// For every Quest page (page_size tokens; a power of two dividing the pool's
// page size), layer and KV head the policy keeps the elementwise min and max
// of the page's post-RoPE Keys. A decode query q scores page p with
//
//   score(q, p) = sum_d max(q_d * max_pd, q_d * min_pd)  >=  q.k  for every k in p,
//
// and attends only the current (last) page plus the best other pages, within
// a budget of ceil(token_budget / page_size) pages. Attention over the chosen
// pages is exact. With GQA the query heads of one KV head combine their
// scores (MAX or SUM) so that the group attends one page set.
//
// Dense cases (the selection is left empty): prefill (more than one query
// row), layers below dense_layers, and sequences no longer than the budget.
// Quest never evicts: every page stays in the pool.
//
// Metadata lives on the backend's device, one tensor per layer,
// PageBoundsShape(capacity, ...) (runtime/backend.h, its layout in
// runtime/page_bounds_layout.h) in the KV dtype or FP8 E4M3
// (QuestOptions.bounds_dtype; Backend::UpdatePageBounds fills it,
// Backend::SelectTopPages scores and ranks it), so on the GPU neither Keys
// nor scores ever travel to the host. The selection it hands the cache is
// the backend-resident table of SelectTopPages.
//
// Only complete Quest pages get bounds: the current page is always attended
// and never scored, so its bounds are folded once, by the append that
// completes it. A decode step thus launches no metadata work on 15 of 16
// steps (pages of 16).

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "cache/cache_policy.h"
#include "proto/engine_config.pb.h"
#include "runtime/tensor.h"

namespace quest::cache {

// QuestOptions resolved against the cache geometry: defaults applied.
struct QuestParams {
  int page_size = 0;         // Quest page (selection chunk), in tokens
  int64_t token_budget = 0;  // tokens a decode query attends
  int dense_layers = 0;      // layers [0, dense_layers) attend densely
  // Never UNSPECIFIED: that resolves to SUM, the measured better choice (see
  // ResolveQuestParams).
  config::QuestOptions::GqaCombine gqa_combine = config::QuestOptions::SUM;
  // Page bounds stored as FP8 E4M3 (outward-rounded) instead of the KV dtype.
  bool fp8_bounds = false;

  // Pages a decode query attends, the current page included.
  int64_t page_budget() const { return (token_budget + page_size - 1) / page_size; }
};

// Validates `config` (policy options must be `quest { ... }` or absent) and
// applies defaults. Errors are InvalidArgument naming the cache.quest.* field.
absl::StatusOr<QuestParams> ResolveQuestParams(const config::CacheConfig& config,
                                               const CacheGeometry& geometry);

class QuestPolicy final : public CachePolicy {
 public:
  QuestPolicy(const QuestParams& params, const CacheGeometry& geometry);

  // Computes the min/max of every Quest page that tokens [start, start + n)
  // complete, each from its first Key in the pool (so re-appending
  // positions of a step that was never committed leaves nothing stale).
  void OnAppend(const SequenceLayerView& seq, int64_t start, int64_t n) override;

  // Decode (q has one row): per KV head, the last page plus the top
  // page_budget-1 others by combined score (ties: lower page index), sorted
  // ascending; chunk_size = the Quest page size. Otherwise: empty (dense).
  // Quest never evicts, so its sequences have no page-table holes; were one
  // there, its page could be picked and then attends nothing.
  void SelectPages(const SequenceLayerView& seq, const Tensor& q,
                   PageSelection& selection) override;

  // --- Inspection (tests, tools); each copies the layer's bounds to the host ---
  const QuestParams& params() const { return params_; }
  // Quest pages with metadata in `layer`: the complete ones.
  int64_t num_pages(int layer) const;
  // min[head_dim] followed by max[head_dim] of one page's Keys, as float.
  std::vector<float> PageBounds(int layer, int kv_head, int64_t page) const;

 private:
  // Makes room for `pages` Quest pages in the layer's bounds; returns true
  // when it had to reallocate (the bounds are then empty).
  bool EnsureCapacity(const SequenceLayerView& seq, int64_t pages);

  const QuestParams params_;
  const CacheGeometry geometry_;
  Backend* backend_ = nullptr;  // the pool's backend, from the first OnAppend
  // [layer] -> PageBoundsShape(capacity, num_kv_heads, head_dim) on the backend.
  std::vector<Tensor> bounds_;
  // Tokens of each layer folded into bounds_.
  std::vector<int64_t> covered_;
  // [layer] -> [num_kv_heads * page_budget] int32 on the backend, and the
  // [num_kv_heads, k + 1] view of it that the layer's last SelectPages
  // handed out. One per layer, so that when a layer's next step launches
  // its select, the table still holds that layer's previous selection: the
  // CUDA attention reads it before the select is done, as a hint of which
  // pages to pull into L2 (consecutive steps' selections mostly overlap;
  // PagedAttentionParams::prefetch_first_tiles).
  std::vector<Tensor> selected_storage_;
  std::vector<Tensor> selected_;
};

}  // namespace quest::cache

#endif  // QUEST_CACHE_QUEST_QUEST_POLICY_H_
