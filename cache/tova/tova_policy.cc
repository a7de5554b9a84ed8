// TOVA (Oren et al., "Transformers are Multi-State RNNs"): per layer, once
// the layer keeps more than `token_budget` tokens, evict the token(s) with
// the lowest current attention (the last query's softmax weights averaged
// over all query heads of the layer) until it keeps token_budget; ties evict
// the earlier position. The layer's KV heads share one kept set. Any token
// can be evicted, the newest included, and evictions are permanent.
//
// Timing: eviction for a layer happens right after that layer's attention of
// the step, from that attention (the step's own tokens were attended
// unevicted). A decode step therefore attends token_budget + 1 tokens; a
// prompt longer than the budget is prefilled densely and then cut down by
// its last token's attention.
//
// Limit: memory goes back to the pool only for pages that every layer
// evicted completely; layers keep different tokens, so most pages stay
// allocated (masked) and the saving is in attention, not in memory.

#include <algorithm>
#include <utility>

#include "cache/cache_policy.h"
#include "cache/eviction.h"

namespace quest::cache {
namespace {

class TovaPolicy final : public CachePolicy {
 public:
  TovaPolicy(int64_t budget, const CacheGeometry& g)
      : budget_(budget), geometry_(g), masks_(g.num_layers, g.num_kv_heads, g.page_size) {}

  void SelectPages(const SequenceLayerView& seq, const Tensor&, PageSelection& selection) override {
    masks_.Grow(static_cast<int64_t>(seq.page_table.size()) * geometry_.page_size);
    selection.token_valid = masks_.data(seq.layer);
  }

  bool WantsAttention() const override { return true; }

  void OnAttention(const SequenceLayerView& seq, int64_t, absl::Span<const float>,
                   absl::Span<const float> attention_last) override {
    const int layer = seq.layer;
    const int64_t kv_len = seq.length;
    masks_.Grow(static_cast<int64_t>(seq.page_table.size()) * geometry_.page_size);
    // Every head of the layer has the same kept set; positions >= kv_len are
    // unwritten and count as kept in the mask.
    const int64_t kept = masks_.kept_count(layer, 0) - (masks_.capacity() - kv_len);
    const int64_t excess = kept - budget_;
    if (excess <= 0) return;
    candidates_.clear();
    for (int64_t pos = 0; pos < kv_len; ++pos) {
      if (!masks_.kept(layer, 0, pos)) continue;
      double sum = 0.0;
      for (int h = 0; h < geometry_.num_heads; ++h) sum += attention_last[h * kv_len + pos];
      candidates_.emplace_back(sum / geometry_.num_heads, pos);
    }
    std::partial_sort(candidates_.begin(), candidates_.begin() + excess, candidates_.end());
    for (int64_t i = 0; i < excess; ++i) masks_.EvictAllHeads(layer, candidates_[i].second);
  }

  void AfterStep(int64_t, std::vector<int32_t>& released_pages) override {
    masks_.TakeReleasedPages(released_pages);
  }

 private:
  const int64_t budget_;
  const CacheGeometry geometry_;
  TokenMasks masks_;  // one mask per layer, the same for each of its KV heads
  std::vector<std::pair<double, int64_t>> candidates_;  // scratch
};

class TovaPolicyFactory final : public CachePolicyFactory {
 public:
  absl::string_view name() const override { return "tova"; }

  absl::Status Validate(const config::CacheConfig& config, const CacheGeometry&) const override {
    if (absl::Status s = CheckOptionsCase(config, config::CacheConfig::kTova, "tova"); !s.ok()) return s;
    if (config.tova().token_budget() == 0) {
      return absl::InvalidArgumentError("cache.tova.token_budget must be > 0");
    }
    return absl::OkStatus();
  }

  std::unique_ptr<CachePolicy> Create(const config::CacheConfig& config,
                                      const CacheGeometry& geometry) const override {
    return std::make_unique<TovaPolicy>(config.tova().token_budget(), geometry);
  }
  // The policy reads no K/V or query itself: it learns from the attention
  // weights the backend returns (copied to the host each layer: correct on
  // the GPU, not fast) and masks evicted tokens through token_valid.
  bool RunsOn(Device) const override { return true; }
};

QUEST_REGISTER_CACHE_POLICY(TovaPolicyFactory);

}  // namespace
}  // namespace quest::cache
