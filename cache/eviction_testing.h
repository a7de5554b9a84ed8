#ifndef QUEST_CACHE_EVICTION_TESTING_H_
#define QUEST_CACHE_EVICTION_TESTING_H_

// Test support: drives a CachePolicy through its hooks the way PagedKVCache
// does (SelectPages, OnAttention per layer, AfterStep per step) without any
// K/V storage, with attention weights made by hand.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "cache/cache_policy.h"
#include "glog/logging.h"

namespace quest::cache::testing {

// [num_heads, kv_len] each, row-major; empty when unused.
struct Attention {
  std::vector<float> sum, last;
};

// Rows of [num_heads][kv_len] flattened.
inline std::vector<float> Rows(const std::vector<std::vector<float>>& rows) {
  std::vector<float> out;
  for (const auto& r : rows) out.insert(out.end(), r.begin(), r.end());
  return out;
}

class PolicyDriver {
 public:
  // `spare_pages`: pages the fake page table holds beyond what the length
  // needs, so that the mask stride differs from the rounded-up length.
  PolicyDriver(const config::CacheConfig& config, const CacheGeometry& geometry, int spare_pages = 1)
      : geometry_(geometry), spare_pages_(spare_pages) {
    auto factory = CachePolicyRegistry::Global().Find(config.policy());
    CHECK(factory.ok()) << factory.status();
    absl::Status valid = (*factory)->Validate(config, geometry);
    CHECK(valid.ok()) << valid;
    policy_ = (*factory)->Create(config, geometry);
  }

  CachePolicy& policy() { return *policy_; }
  int64_t length() const { return length_; }
  const std::vector<int32_t>& page_table() const { return page_table_; }

  // One step of n new tokens through every layer; `attention(layer, kv_len)`
  // gives the weights the op would have produced. Returns the logical pages
  // released at the end of the step (checked: each once, wholly written).
  std::vector<int32_t> Step(int64_t n, const std::function<Attention(int, int64_t)>& attention) {
    const int ps = geometry_.page_size;
    const int64_t pages = (length_ + n + ps - 1) / ps + spare_pages_;
    while (static_cast<int64_t>(page_table_.size()) < pages) {
      page_table_.push_back(100 + static_cast<int32_t>(page_table_.size()));
    }
    const Tensor no_q;
    for (int layer = 0; layer < geometry_.num_layers; ++layer) {
      const SequenceLayerView view = View(layer, length_ + n);
      policy_->OnAppend(view, length_, n);
      PageSelection selection;
      policy_->SelectPages(view, no_q, selection);
      if (policy_->WantsAttention()) {
        const Attention a = attention(layer, length_ + n);
        const size_t size = static_cast<size_t>(geometry_.num_heads) * (length_ + n);
        CHECK_EQ(a.sum.size(), size);
        CHECK_EQ(a.last.size(), size);
        policy_->OnAttention(view, n, a.sum, a.last);
      }
    }
    length_ += n;
    std::vector<int32_t> released;
    policy_->AfterStep(length_, released);
    for (int32_t p : released) {
      CHECK(p >= 0 && p < static_cast<int32_t>(page_table_.size())) << p;
      CHECK_LE((p + 1) * ps, length_) << "page " << p << " is not wholly written";
      CHECK_GE(page_table_[p], 0) << "page " << p << " released twice";
      page_table_[p] = -1;
    }
    return released;
  }

  // The positions < length() that (layer, KV head) attends next step, from
  // the mask SelectPages hands out.
  std::vector<int64_t> Kept(int layer, int head) {
    const SequenceLayerView view = View(layer, length_);
    PageSelection selection;
    policy_->SelectPages(view, Tensor(), selection);
    const int64_t stride = static_cast<int64_t>(page_table_.size()) * geometry_.page_size;
    std::vector<int64_t> kept;
    for (int64_t pos = 0; pos < length_; ++pos) {
      const bool valid = selection.token_valid == nullptr || selection.token_valid[head * stride + pos] != 0;
      if (valid) {
        CHECK_GE(page_table_[pos / geometry_.page_size], 0) << "kept position " << pos << " on a released page";
        kept.push_back(pos);
      }
    }
    return kept;
  }

 private:
  SequenceLayerView View(int layer, int64_t length) const {
    SequenceLayerView v;
    v.layer = layer;
    v.page_table = page_table_;
    v.length = length;
    return v;
  }

  const CacheGeometry geometry_;
  const int spare_pages_;
  std::unique_ptr<CachePolicy> policy_;
  std::vector<int32_t> page_table_;
  int64_t length_ = 0;
};

}  // namespace quest::cache::testing

#endif  // QUEST_CACHE_EVICTION_TESTING_H_
