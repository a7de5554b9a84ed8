#ifndef QUEST_CACHE_PLUGIN_API_H_
#define QUEST_CACHE_PLUGIN_API_H_

// The contract of an out-of-tree cache policy plugin: a shared library,
// named in EngineConfig.cache_plugins, that registers one or more
// CachePolicyFactory (cache_policy.h) when the engine starts. Nothing in
// cache/ changes to add a policy this way.
//
// WHAT A PLUGIN EXPORTS (C linkage, looked up with dlsym):
//
//   QUEST_CACHE_PLUGIN_API_VERSION_FUNCTION()   // defines quest_cache_plugin_api_version()
//
//   extern "C" int quest_cache_plugin_register(
//       int host_api_version, quest::cache::CachePolicyRegistry* registry) {
//     absl::Status s = registry->Register(std::make_unique<MyFactory>());
//     return s.ok() ? 0 : 1;
//   }
//
// The loader (plugin_loader.h) dlopens the library (RTLD_NOW | RTLD_LOCAL),
// calls quest_cache_plugin_api_version() first and refuses a plugin built
// for another kCachePluginApiVersion before any of its C++ is used, then
// calls quest_cache_plugin_register() once with the host's version and the
// process's registry. It returns 0 on success, anything else on failure;
// a failed Register (e.g. a name that is already taken) is reported by the
// loader with the registry's message even when the plugin ignores it, and
// whatever a failed plugin registered is taken back before it is unloaded.
// Register in the entry point, not with QUEST_REGISTER_CACHE_POLICY: static
// initialisers run inside dlopen, before the version check. Options come in
// CacheConfig.plugin (a google.protobuf.Struct); a factory's Validate names
// them as cache.plugin.<key>.
//
// ABI. The interface past the two C entry points is C++: factories, policies,
// absl::Status, protobuf messages cross the boundary as C++ objects. A plugin
// must therefore be compiled against the same headers (this source tree at
// the same revision, the same proto/engine_config.proto, the same Abseil and
// protobuf) with the same compiler, standard library and flags as the
// engine. kCachePluginApiVersion catches deliberate API changes only; it
// cannot detect a plugin built against mismatched headers.
//
// SYMBOL RESOLUTION. Our own code links statically into each binary
// (--dynamic_mode=off), so the registry, CacheConfig's descriptors and
// default instances etc. live in the executable, once. A plugin must not
// carry a second copy: a second cache_policy.o would be a second registry,
// and a second engine_config.pb.o would register the same .proto with
// libprotobuf twice, which aborts. So:
//   * a plugin is compiled against headers only: in Bazel, link it with
//     cache_policy_plugin() from //cache:plugin.bzl (a cc_binary with
//     linkshared = 1 on //cache:plugin_sdk, which carries the include paths
//     of //cache:cache_policy and its deps but none of their objects, plus
//     the system libraries - Abseil, protobuf, glog - which are shared
//     libraries and so one copy per process anyway). The plugin's
//     references to our symbols (CachePolicyRegistry::Register, Tensor's
//     out-of-line methods, ...) stay undefined in the .so. Outside Bazel:
//     compile with -fPIC against the same include paths, link with
//     -shared and the system libraries only, never with the engine's own
//     archives or generated .pb.cc files;
//   * every executable that can load plugins exports the symbols of
//     namespace quest through a dynamic list (cache/plugin_host_exports.lds,
//     linked by //cache:plugin_loader, so any binary depending on it - the
//     engine, its tests, the service - gets it without doing anything). At
//     dlopen the plugin's undefined symbols bind to the executable's
//     definitions; RTLD_NOW makes a missing one a load error naming it.
//     Only quest's symbols are exported (not -rdynamic's everything), so the
//     executable's copies of template code never interpose on system
//     libraries.
// A plugin can use what the executable links (everything the engine uses);
// a symbol that no part of the executable needs is not there to bind to.

#include "cache/cache_policy.h"

namespace quest::cache {

// Bumped on any incompatible change to this contract or to the C++ types a
// plugin sees (cache_policy.h, the CacheConfig proto). 2: PageSelection
// gained defer_select / pending (a deferred Backend::SelectTopPages).
inline constexpr int kCachePluginApiVersion = 2;

}  // namespace quest::cache

// Exported even from a plugin compiled with -fvisibility=hidden.
#define QUEST_CACHE_PLUGIN_EXPORT __attribute__((visibility("default")))

extern "C" {

// The version of this header the plugin was built with.
QUEST_CACHE_PLUGIN_EXPORT int quest_cache_plugin_api_version(void);

// Registers the plugin's factories with `registry`. `host_api_version` is the
// loader's kCachePluginApiVersion (already checked equal to the plugin's).
// Returns 0 on success.
QUEST_CACHE_PLUGIN_EXPORT int quest_cache_plugin_register(int host_api_version,
                                                          quest::cache::CachePolicyRegistry* registry);

}  // extern "C"

// Defines quest_cache_plugin_api_version() returning this header's version.
// Use once per plugin, at namespace scope.
#define QUEST_CACHE_PLUGIN_API_VERSION_FUNCTION() \
  extern "C" int quest_cache_plugin_api_version(void) { return ::quest::cache::kCachePluginApiVersion; }

#endif  // QUEST_CACHE_PLUGIN_API_H_
