// A plugin that claims an API version the engine does not implement; the
// loader must refuse it before calling its registration entry point.

#include <cstdlib>

#include "cache/plugin_api.h"

extern "C" int quest_cache_plugin_api_version(void) { return quest::cache::kCachePluginApiVersion + 998; }

extern "C" int quest_cache_plugin_register(int, quest::cache::CachePolicyRegistry*) {
  std::abort();  // never called
}
