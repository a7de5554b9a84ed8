#include "cache/plugin_loader.h"

#include <dlfcn.h>

#include <filesystem>
#include <set>
#include <system_error>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "cache/cache_policy.h"
#include "cache/plugin_api.h"
#include "cache/registration_scope.h"
#include "glog/logging.h"

namespace quest::cache {
namespace {

namespace fs = std::filesystem;

constexpr char kVersionSymbol[] = "quest_cache_plugin_api_version";
constexpr char kRegisterSymbol[] = "quest_cache_plugin_register";

using VersionFn = decltype(&quest_cache_plugin_api_version);
using RegisterFn = decltype(&quest_cache_plugin_register);

struct LoaderState {
  absl::Mutex mu;
  std::set<std::string> paths ABSL_GUARDED_BY(mu);  // canonical paths loaded
  std::set<void*> handles ABSL_GUARDED_BY(mu);      // their dlopen handles
};

LoaderState& State() {
  static LoaderState* state = new LoaderState();
  return *state;
}

std::string DlError() {
  const char* e = dlerror();
  return e != nullptr ? e : "no dlerror() message";
}

}  // namespace

absl::Status LoadCachePolicyPlugin(const std::string& path) {
  if (path.empty()) return absl::InvalidArgumentError("cache plugin path is empty");
  std::error_code ec;
  const fs::path canonical = fs::canonical(path, ec);
  if (ec) {
    const std::string message = absl::StrCat("cache plugin ", path, ": ", ec.message());
    return ec == std::errc::no_such_file_or_directory ? absl::NotFoundError(message)
                                                       : absl::FailedPreconditionError(message);
  }
  const std::string file = canonical.string();

  LoaderState& state = State();
  absl::MutexLock lock(&state.mu);
  if (state.paths.count(file) > 0) return absl::OkStatus();

  // Registrations from here on (the plugin's static initialisers included)
  // are the plugin's, so they can be attributed and taken back.
  internal::RegistrationScope scope(absl::StrCat("cache plugin ", path));
  dlerror();
  void* handle = dlopen(file.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const std::string error = DlError();
    scope.Rollback();
    // An engine symbol the plugin needs that this executable does not have.
    const bool engine_symbol = absl::StrContains(error, "undefined symbol: _Z") && absl::StrContains(error, "5quest");
    return absl::FailedPreconditionError(absl::StrCat(
        "cache plugin ", path, ": dlopen failed: ", error,
        engine_symbol ? " (a plugin can only use engine code that this executable links and exports; "
                        "see cache/plugin_api.h)"
                      : ""));
  }
  if (state.handles.count(handle) > 0) {  // the same file by another name
    dlclose(handle);                        // drops the reference just taken
    state.paths.insert(file);
    return absl::OkStatus();
  }
  auto fail = [&](absl::Status status) {
    scope.Rollback();  // factories' code lives in the library: destroy them first
    dlclose(handle);
    return status;
  };

  dlerror();
  auto version_fn = reinterpret_cast<VersionFn>(dlsym(handle, kVersionSymbol));
  if (version_fn == nullptr) {
    return fail(absl::FailedPreconditionError(
        absl::StrCat("cache plugin ", path, " is not a cache policy plugin: it does not export ",
                     kVersionSymbol, " (", DlError(), "); see cache/plugin_api.h")));
  }
  const int version = version_fn();
  if (version != kCachePluginApiVersion) {
    return fail(absl::FailedPreconditionError(absl::StrCat(
        "cache plugin ", path, " was built for cache plugin API version ", version,
        ", but this engine implements version ", kCachePluginApiVersion,
        "; rebuild the plugin against this engine's cache/plugin_api.h")));
  }
  dlerror();
  auto register_fn = reinterpret_cast<RegisterFn>(dlsym(handle, kRegisterSymbol));
  if (register_fn == nullptr) {
    return fail(absl::FailedPreconditionError(
        absl::StrCat("cache plugin ", path, " is not a cache policy plugin: it does not export ",
                     kRegisterSymbol, " (", DlError(), "); see cache/plugin_api.h")));
  }
  const int rc = register_fn(kCachePluginApiVersion, &CachePolicyRegistry::Global());
  if (!scope.first_error().ok()) return fail(scope.first_error());  // names path and holder
  if (rc != 0) {
    return fail(absl::FailedPreconditionError(
        absl::StrCat("cache plugin ", path, ": ", kRegisterSymbol, " returned ", rc)));
  }
  if (scope.registered().empty()) {
    return fail(absl::FailedPreconditionError(
        absl::StrCat("cache plugin ", path, " registered no cache policy")));
  }
  state.paths.insert(file);
  state.handles.insert(handle);
  LOG(INFO) << "cache plugin " << path << " registered " << absl::StrJoin(scope.registered(), ", ");
  return absl::OkStatus();
}

}  // namespace quest::cache
