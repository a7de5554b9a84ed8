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
// Metadata lives on the host, one flat float vector per (layer, KV head),
// laid out [page][min[head_dim], max[head_dim]] so that a page's bound is one
// contiguous 2*head_dim dot product (see SelectPages in the .cc).

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "cache/cache_policy.h"
#include "proto/engine_config.pb.h"

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
  void SelectPages(const SequenceLayerView& seq, const Tensor& q,
                   PageSelection& selection) override;

  // --- Inspection (tests, tools) ---
  const QuestParams& params() const { return params_; }
  // Quest pages with metadata in `layer`.
  int64_t num_pages(int layer) const;
  // min[head_dim] followed by max[head_dim] of one page's Keys.
  absl::Span<const float> PageBounds(int layer, int kv_head, int64_t page) const;
  // The group-combined score of every page of `layer` for the query heads of
  // `kv_head`; q is [1, num_heads, head_dim]. These are the values
  // SelectPages ranks.
  std::vector<float> PageScores(int layer, const Tensor& q, int kv_head) const;

 private:
  // Combined scores of pages [0, num_pages) into `scores`.
  void ScoreInto(int layer, const float* q, int kv_head, int64_t num_pages,
                 std::vector<float>& scores) const;

  const QuestParams params_;
  const CacheGeometry geometry_;
  // [layer * num_kv_heads + kv_head] -> [page][2][head_dim].
  std::vector<std::vector<float>> bounds_;
  // Tokens of each layer folded into bounds_.
  std::vector<int64_t> covered_;

  // Scratch reused across calls.
  mutable std::vector<float> split_q_;
  std::vector<float> scores_;
  std::vector<int32_t> candidates_;
  std::vector<float> row_;  // a converted K row for f16/bf16 pools
};

}  // namespace quest::cache

#endif  // QUEST_CACHE_QUEST_QUEST_POLICY_H_
