// An out-of-tree cache policy, built as a plugin (see cache/plugin_api.h):
// "example_recent_pages" lets each decode query attend only the last N
// pages of its sequence (the page being written included), a sliding
// window at page granularity. Prefill attends densely. Options:
//
//   cache { policy: "example_recent_pages"
//           plugin { fields { key: "pages" value { number_value: 2 } } } }

#include <cmath>
#include <memory>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "cache/cache_policy.h"
#include "cache/plugin_api.h"

namespace {

using ::quest::Tensor;
using ::quest::cache::CacheGeometry;
using ::quest::cache::CachePolicy;
using ::quest::cache::CachePolicyFactory;
using ::quest::cache::PageSelection;
using ::quest::cache::SequenceLayerView;
using ::quest::config::CacheConfig;

constexpr char kName[] = "example_recent_pages";

class RecentPagesPolicy final : public CachePolicy {
 public:
  RecentPagesPolicy(int pages, const CacheGeometry& geometry) : pages_(pages), geometry_(geometry) {}

  void SelectPages(const SequenceLayerView& seq, const Tensor& q, PageSelection& selection) override {
    if (q.dim(0) != 1) return;  // prefill: dense
    const int64_t num_pages = (seq.length + geometry_.page_size - 1) / geometry_.page_size;
    if (num_pages <= pages_) return;
    const int64_t first = num_pages - pages_;
    selection.indptr.push_back(0);
    for (int g = 0; g < geometry_.num_kv_heads; ++g) {
      for (int64_t p = first; p < num_pages; ++p) selection.chunks.push_back(static_cast<int32_t>(p));
      selection.indptr.push_back(static_cast<int32_t>(selection.chunks.size()));
    }
  }

 private:
  const int pages_;
  const CacheGeometry geometry_;
};

class RecentPagesFactory final : public CachePolicyFactory {
 public:
  absl::string_view name() const override { return kName; }

  absl::Status Validate(const CacheConfig& config, const CacheGeometry&) const override {
    return Pages(config).status();
  }

  std::unique_ptr<CachePolicy> Create(const CacheConfig& config,
                                      const CacheGeometry& geometry) const override {
    return std::make_unique<RecentPagesPolicy>(*Pages(config), geometry);
  }

 private:
  static absl::StatusOr<int> Pages(const CacheConfig& config) {
    const auto& fields = config.plugin().fields();
    for (const auto& [key, value] : fields) {
      if (key != "pages") {
        return absl::InvalidArgumentError(
            absl::StrCat("cache.plugin.", key, " is not an option of ", kName, " (it has: pages)"));
      }
    }
    auto it = fields.find("pages");
    if (it == fields.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("cache.plugin.pages is required by ", kName, " (the pages each decode query attends)"));
    }
    const double pages = it->second.number_value();
    if (!it->second.has_number_value() || !(pages > 0) || pages != std::floor(pages) || pages > 1e9) {
      return absl::InvalidArgumentError(absl::StrCat("cache.plugin.pages must be a positive integer, got ",
                                                     it->second.ShortDebugString()));
    }
    return static_cast<int>(pages);
  }
};

}  // namespace

QUEST_CACHE_PLUGIN_API_VERSION_FUNCTION()

extern "C" int quest_cache_plugin_register(int host_api_version,
                                           quest::cache::CachePolicyRegistry* registry) {
  if (host_api_version != quest::cache::kCachePluginApiVersion) return 1;
  return registry->Register(std::make_unique<RecentPagesFactory>()).ok() ? 0 : 1;
}
