// StreamingLLM (Xiao et al., "Efficient Streaming Language Models with
// Attention Sinks"): keep the first `sink_tokens` tokens (attention sinks)
// and the most recent `window_tokens`; evict everything in between, in every
// layer and KV head alike. As the window slides, each page lying wholly
// between the sinks and the window goes back to the pool, so a sequence
// holds about (sink + window) / page_size + 2 pages however long it grows.
//
// Timing: eviction happens after a step's attention (KVCache::Commit), so
// the queries of a step see the kept tokens of the previous step plus the
// step's own tokens (causally): a decode step attends sink + window + 1
// tokens, and a prefill chunk attends densely within itself.
//
// Limit (vs. the paper): positions are not re-assigned within the cache.
// Keys stay rotated at their original positions, so the model never sees a
// position beyond what the sequence length gives (the engine caps it at the
// context length).

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "cache/cache_policy.h"
#include "cache/eviction.h"

namespace quest::cache {
namespace {

constexpr uint32_t kDefaultSinkTokens = 4;

class StreamingLlmPolicy final : public CachePolicy {
 public:
  StreamingLlmPolicy(int64_t sink, int64_t window, const CacheGeometry& g)
      : sink_(sink), window_(window), page_size_(g.page_size),
        masks_(/*num_masks=*/1, g.num_kv_heads, g.page_size), evicted_end_(sink) {}

  void SelectPages(const SequenceLayerView& seq, const Tensor&, PageSelection& selection) override {
    masks_.Grow(static_cast<int64_t>(seq.page_table.size()) * page_size_);
    // One mask for every layer: nothing changes between the layers of a step.
    if (evicted_end_ > sink_) selection.token_valid = masks_.data(0);
  }

  void AfterStep(int64_t length, std::vector<int32_t>& released_pages) override {
    const int64_t window_start = std::max(sink_, length - window_);
    if (window_start > evicted_end_) {
      masks_.Grow((length + page_size_ - 1) / page_size_ * page_size_);
      for (int64_t pos = evicted_end_; pos < window_start; ++pos) masks_.EvictAllHeads(0, pos);
      evicted_end_ = window_start;
    }
    masks_.TakeReleasedPages(released_pages);
  }

 private:
  const int64_t sink_, window_;
  const int page_size_;
  TokenMasks masks_;
  int64_t evicted_end_;  // [sink_, evicted_end_) is evicted
};

class StreamingLlmPolicyFactory final : public CachePolicyFactory {
 public:
  absl::string_view name() const override { return "streaming_llm"; }

  absl::Status Validate(const config::CacheConfig& config, const CacheGeometry&) const override {
    if (absl::Status s = CheckOptionsCase(config, config::CacheConfig::kStreamingLlm, "streaming_llm");
        !s.ok()) {
      return s;
    }
    if (config.streaming_llm().window_tokens() == 0) {
      return absl::InvalidArgumentError("cache.streaming_llm.window_tokens must be > 0");
    }
    return absl::OkStatus();
  }

  std::unique_ptr<CachePolicy> Create(const config::CacheConfig& config,
                                      const CacheGeometry& geometry) const override {
    const config::StreamingLlmOptions& o = config.streaming_llm();
    const uint32_t sink = o.has_sink_tokens() ? o.sink_tokens() : kDefaultSinkTokens;
    return std::make_unique<StreamingLlmPolicy>(sink, o.window_tokens(), geometry);
  }
  // The policy reads no K/V or query itself: it learns from the attention
  // weights the backend returns (copied to the host each layer: correct on
  // the GPU, not fast) and masks evicted tokens through token_valid.
  bool RunsOn(Device) const override { return true; }
};

QUEST_REGISTER_CACHE_POLICY(StreamingLlmPolicyFactory);

}  // namespace
}  // namespace quest::cache
