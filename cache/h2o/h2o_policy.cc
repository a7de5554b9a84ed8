// H2O (Zhang et al., "H2O: Heavy-Hitter Oracle for Efficient Generative
// Inference of Large Language Models"): per layer and per KV head, every
// cached token accumulates the attention it receives (a KV head's weight is
// the sum over its query heads, over every query, prefill included). Once a
// head keeps more than `token_budget` tokens, it keeps the `recent_tokens`
// most recent ones plus the highest-accumulated others and evicts the rest
// (lowest score first; ties evict the earlier position). Evictions are per
// head and permanent.
//
// Timing: eviction for a layer happens right after that layer's attention of
// the step (the step's own tokens were attended unevicted). A decode step
// therefore attends token_budget + 1 tokens per head.
//
// Limits: a token's score counts only the steps it was cached for (as in the
// paper, newer tokens have had fewer chances to gather attention). Memory
// goes back to the pool only for pages that every layer and KV head evicted
// completely; heads disagree about heavy hitters, so under H2O most pages
// stay allocated (masked) and the saving is in attention, not in memory.
// Scores cost 8 bytes per (layer, KV head, position), the mask 1 byte.

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "cache/cache_policy.h"
#include "cache/eviction.h"

namespace quest::cache {
namespace {

class H2oPolicy final : public CachePolicy {
 public:
  H2oPolicy(int64_t budget, int64_t recent, const CacheGeometry& g)
      : budget_(budget),
        recent_(recent),
        geometry_(g),
        masks_(g.num_layers, g.num_kv_heads, g.page_size),
        scores_(static_cast<size_t>(g.num_layers) * g.num_kv_heads) {}

  void SelectPages(const SequenceLayerView& seq, const Tensor&, PageSelection& selection) override {
    masks_.Grow(static_cast<int64_t>(seq.page_table.size()) * geometry_.page_size);
    selection.token_valid = masks_.data(seq.layer);
  }

  bool WantsAttention() const override { return true; }

  void OnAttention(const SequenceLayerView& seq, int64_t, absl::Span<const float> attention_sum,
                   absl::Span<const float>) override {
    const int layer = seq.layer;
    const int64_t kv_len = seq.length;
    masks_.Grow(static_cast<int64_t>(seq.page_table.size()) * geometry_.page_size);
    const int group = geometry_.num_heads / geometry_.num_kv_heads;
    for (int g = 0; g < geometry_.num_kv_heads; ++g) {
      std::vector<double>& score = scores_[layer * geometry_.num_kv_heads + g];
      if (static_cast<int64_t>(score.size()) < kv_len) score.resize(kv_len, 0.0);
      for (int64_t pos = 0; pos < kv_len; ++pos) {
        if (!masks_.kept(layer, g, pos)) continue;
        for (int h = g * group; h < (g + 1) * group; ++h) score[pos] += attention_sum[h * kv_len + pos];
      }
      // Positions >= kv_len are unwritten and count as kept in the mask.
      const int64_t kept = masks_.kept_count(layer, g) - (masks_.capacity() - kv_len);
      const int64_t excess = kept - budget_;
      if (excess <= 0) continue;
      candidates_.clear();
      for (int64_t pos = 0; pos < kv_len - recent_; ++pos) {
        if (masks_.kept(layer, g, pos)) candidates_.emplace_back(score[pos], pos);
      }
      // recent_ <= budget_, so the excess is always among the candidates.
      std::partial_sort(candidates_.begin(), candidates_.begin() + excess, candidates_.end());
      for (int64_t i = 0; i < excess; ++i) masks_.Evict(layer, g, candidates_[i].second);
    }
  }

  void AfterStep(int64_t, std::vector<int32_t>& released_pages) override {
    masks_.TakeReleasedPages(released_pages);
  }

 private:
  const int64_t budget_, recent_;
  const CacheGeometry geometry_;
  TokenMasks masks_;                                // one mask per layer
  std::vector<std::vector<double>> scores_;         // [layer * num_kv_heads + head][pos]
  std::vector<std::pair<double, int64_t>> candidates_;  // scratch
};

class H2oPolicyFactory final : public CachePolicyFactory {
 public:
  absl::string_view name() const override { return "h2o"; }

  absl::Status Validate(const config::CacheConfig& config, const CacheGeometry&) const override {
    if (absl::Status s = CheckOptionsCase(config, config::CacheConfig::kH2O, "h2o"); !s.ok()) return s;
    const config::H2oOptions& o = config.h2o();
    if (o.token_budget() == 0) return absl::InvalidArgumentError("cache.h2o.token_budget must be > 0");
    if (o.has_recent_tokens() && o.recent_tokens() > o.token_budget()) {
      return absl::InvalidArgumentError(
          absl::StrCat("cache.h2o.recent_tokens (", o.recent_tokens(),
                       ") must be <= cache.h2o.token_budget (", o.token_budget(), ")"));
    }
    return absl::OkStatus();
  }

  std::unique_ptr<CachePolicy> Create(const config::CacheConfig& config,
                                      const CacheGeometry& geometry) const override {
    const config::H2oOptions& o = config.h2o();
    const uint32_t recent = o.has_recent_tokens() ? o.recent_tokens() : o.token_budget() / 2;
    return std::make_unique<H2oPolicy>(o.token_budget(), recent, geometry);
  }
  // The policy reads no K/V or query itself: it learns from the attention
  // weights the backend returns (copied to the host each layer: correct on
  // the GPU, not fast) and masks evicted tokens through token_valid.
  bool RunsOn(Device) const override { return true; }
};

QUEST_REGISTER_CACHE_POLICY(H2oPolicyFactory);

}  // namespace
}  // namespace quest::cache
