#ifndef QUEST_CACHE_PLUGIN_LOADER_H_
#define QUEST_CACHE_PLUGIN_LOADER_H_

// Loads out-of-tree cache policies (see plugin_api.h for the contract and
// for how a plugin's symbols resolve against the executable).

#include <string>

#include "absl/status/status.h"

namespace quest::cache {

// dlopens the shared library at `path` (RTLD_NOW | RTLD_LOCAL), checks its
// quest_cache_plugin_api_version() against kCachePluginApiVersion and calls
// its quest_cache_plugin_register() with CachePolicyRegistry::Global().
// Loading a file that is already loaded (by this path or another path to
// the same file) is a no-op. Errors name `path`:
//   NotFound            the file does not exist;
//   FailedPrecondition  dlopen fails (dlerror() quoted: not a shared library,
//                       an unresolved symbol, ...), an entry point is
//                       missing, the API version differs (both versions
//                       named), the plugin registers nothing or returns
//                       non-zero;
//   AlreadyExists       a policy name is taken (naming the name and who
//                       holds it: a built-in policy or another plugin);
//   InvalidArgument     a factory with an empty name.
// A plugin that fails is unloaded and whatever it registered is taken back.
// Thread-safe. Loaded plugins stay loaded for the life of the process.
absl::Status LoadCachePolicyPlugin(const std::string& path);

}  // namespace quest::cache

#endif  // QUEST_CACHE_PLUGIN_LOADER_H_
