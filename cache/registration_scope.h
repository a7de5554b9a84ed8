#ifndef QUEST_CACHE_REGISTRATION_SCOPE_H_
#define QUEST_CACHE_REGISTRATION_SCOPE_H_

// For the plugin loader (cache/plugin_loader.cc), not for policies: while a
// RegistrationScope is alive on a thread, every CachePolicyRegistry::Register
// made on that thread (a plugin's entry point, or a plugin's static
// initialisers during dlopen) is attributed to the scope's origin, its
// failures are recorded instead of aborting, and Rollback() takes back what
// was registered, so that a plugin that fails to load leaves no factory
// behind (its code is about to be unloaded).

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace quest::cache::internal {

class RegistrationScope {
 public:
  // `origin` names the registrant in errors, e.g. "cache plugin /x/libp.so".
  explicit RegistrationScope(std::string origin);
  ~RegistrationScope();
  RegistrationScope(const RegistrationScope&) = delete;
  RegistrationScope& operator=(const RegistrationScope&) = delete;

  const std::string& origin() const { return origin_; }
  // The first failed registration in this scope, OK if none.
  const absl::Status& first_error() const { return first_error_; }
  // Names registered in this scope (and not rolled back), in order.
  const std::vector<std::string>& registered() const { return registered_; }
  // Unregisters (and destroys) every factory registered in this scope.
  void Rollback();

  // The innermost scope of the calling thread, nullptr outside any.
  static RegistrationScope* Current();

 private:
  friend class RegistryAccess;
  std::string origin_;
  absl::Status first_error_;
  std::vector<std::string> registered_;
  RegistrationScope* previous_;
};

}  // namespace quest::cache::internal

#endif  // QUEST_CACHE_REGISTRATION_SCOPE_H_
