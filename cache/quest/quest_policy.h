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
// [capacity, num_kv_heads, 2, head_dim] in the KV dtype (Backend::
// UpdatePageBounds fills it, Backend::SelectTopPages scores and ranks it), so
// on the GPU neither Keys nor scores ever travel to the host. The selection
// it hands the cache is the backend-resident table of SelectTopPages.

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

  // Folds the Keys of tokens [start, start + n) into their pages' min/max.
  // Appending after the covered prefix is incremental; re-appending
  // positions already covered (a step that was never committed) recomputes
  // the affected first page from the pool.
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
  // Quest pages with metadata in `layer`.
  int64_t num_pages(int layer) const;
  // min[head_dim] followed by max[head_dim] of one page's Keys, as float.
  std::vector<float> PageBounds(int layer, int kv_head, int64_t page) const;
  // The group-combined score of every page of `layer` for the query heads of
  // `kv_head`, computed on the host from the bounds; q is a host f32 [1,
  // num_heads, head_dim]. These are the values SelectTopPages ranks.
  std::vector<float> PageScores(int layer, const Tensor& q, int kv_head) const;

 private:
  // Makes room for `pages` Quest pages in the layer's bounds; returns true
  // when it had to reallocate (the bounds are then empty).
  bool EnsureCapacity(const SequenceLayerView& seq, int64_t pages);

  const QuestParams params_;
  const CacheGeometry geometry_;
  Backend* backend_ = nullptr;  // the pool's backend, from the first OnAppend
  // [layer] -> [capacity, num_kv_heads, 2, head_dim] on the backend.
  std::vector<Tensor> bounds_;
  // Tokens of each layer folded into bounds_.
  std::vector<int64_t> covered_;
  // [num_kv_heads * page_budget] int32 on the backend, and the [num_kv_heads,
  // k + 1] view of it that the last SelectPages handed out.
  Tensor selected_storage_;
  Tensor selected_;
};

}  // namespace quest::cache

#endif  // QUEST_CACHE_QUEST_QUEST_POLICY_H_
