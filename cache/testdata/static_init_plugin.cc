// A plugin that (against plugin_api.h's advice) registers from a static
// initialiser, and a name that a built-in policy holds: the loader must
// report it, not abort the process.

#include <memory>

#include "cache/cache_policy.h"
#include "cache/plugin_api.h"

namespace {

class AnotherDenseFactory final : public quest::cache::CachePolicyFactory {
 public:
  absl::string_view name() const override { return "dense"; }
  absl::Status Validate(const quest::config::CacheConfig&, const quest::cache::CacheGeometry&) const override {
    return absl::OkStatus();
  }
  std::unique_ptr<quest::cache::CachePolicy> Create(const quest::config::CacheConfig&,
                                                    const quest::cache::CacheGeometry&) const override {
    return nullptr;
  }
};

QUEST_REGISTER_CACHE_POLICY(AnotherDenseFactory);

}  // namespace

QUEST_CACHE_PLUGIN_API_VERSION_FUNCTION()

extern "C" int quest_cache_plugin_register(int, quest::cache::CachePolicyRegistry*) { return 0; }
