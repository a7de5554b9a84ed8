// The dense policy: every query attends every cached token. It is the
// baseline the sparse policies are measured against, and the proof that the
// policy seam costs nothing when no selection is made.

#include "cache/cache_policy.h"

namespace quest::cache {
namespace {

class DensePolicy final : public CachePolicy {
 public:
  void SelectPages(const SequenceLayerView&, const Tensor&, PageSelection&) override {}
};

class DensePolicyFactory final : public CachePolicyFactory {
 public:
  absl::string_view name() const override { return "dense"; }
  absl::Status Validate(const config::CacheConfig&, const CacheGeometry&) const override {
    return absl::OkStatus();
  }
  std::unique_ptr<CachePolicy> Create(const config::CacheConfig&,
                                      const CacheGeometry&) const override {
    return std::make_unique<DensePolicy>();
  }
  // Selects nothing and reads no tensor: runs wherever the pool lives.
  bool RunsOn(Device) const override { return true; }
};

QUEST_REGISTER_CACHE_POLICY(DensePolicyFactory);

}  // namespace
}  // namespace quest::cache
