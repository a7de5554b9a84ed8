#include "cache/cache_policy.h"

#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "cache/registration_scope.h"
#include "glog/logging.h"

namespace quest::cache {
namespace {

constexpr absl::string_view kBuiltinOrigin = "a built-in policy";

struct Entry {
  std::unique_ptr<CachePolicyFactory> factory;
  std::string origin;  // who registered it, for AlreadyExists errors
};

// The registry's one state per process. Binaries link cache_policy.cc once
// (statically); cache policy plugins are built without it and resolve the
// registry's symbols from the executable (see plugin_api.h), so this is the
// only instance whatever is loaded.
struct RegistryState {
  absl::Mutex mu;
  std::map<std::string, Entry, std::less<>> factories ABSL_GUARDED_BY(mu);
};

RegistryState& State() {
  static RegistryState* state = new RegistryState();  // never destroyed: used from static init
  return *state;
}

thread_local internal::RegistrationScope* current_scope = nullptr;

}  // namespace

namespace internal {

class RegistryAccess {
 public:
  static void Registered(RegistrationScope& scope, std::string name) {
    scope.registered_.push_back(std::move(name));
  }
  static void Failed(RegistrationScope& scope, const absl::Status& status) {
    if (scope.first_error_.ok()) scope.first_error_ = status;
  }
};

RegistrationScope::RegistrationScope(std::string origin)
    : origin_(std::move(origin)), previous_(current_scope) {
  current_scope = this;
}

RegistrationScope::~RegistrationScope() { current_scope = previous_; }

RegistrationScope* RegistrationScope::Current() { return current_scope; }

void RegistrationScope::Rollback() {
  RegistryState& s = State();
  std::vector<std::unique_ptr<CachePolicyFactory>> removed;
  {
    absl::MutexLock lock(&s.mu);
    for (const std::string& name : registered_) {
      auto it = s.factories.find(name);
      if (it == s.factories.end()) continue;
      removed.push_back(std::move(it->second.factory));
      s.factories.erase(it);
    }
  }
  registered_.clear();
  // `removed` destroys the factories here, outside the lock.
}

}  // namespace internal

CachePolicyRegistry& CachePolicyRegistry::Global() {
  static CachePolicyRegistry* registry = new CachePolicyRegistry();
  return *registry;
}

absl::Status CachePolicyRegistry::Register(std::unique_ptr<CachePolicyFactory> factory) {
  internal::RegistrationScope* scope = internal::RegistrationScope::Current();
  const std::string origin = scope != nullptr ? scope->origin() : std::string(kBuiltinOrigin);
  absl::Status status;
  if (factory == nullptr) {
    status = absl::InvalidArgumentError(absl::StrCat(origin, " registered a null cache policy factory"));
  } else if (factory->name().empty()) {
    status = absl::InvalidArgumentError(absl::StrCat(origin, " registered a cache policy with an empty name"));
  } else {
    std::string name(factory->name());
    RegistryState& s = State();
    absl::MutexLock lock(&s.mu);
    if (auto it = s.factories.find(name); it != s.factories.end()) {
      status = absl::AlreadyExistsError(absl::StrCat("cache policy \"", name, "\" from ", origin,
                                                     " is already registered by ", it->second.origin));
    } else {
      s.factories.emplace(name, Entry{std::move(factory), origin});
      if (scope != nullptr) internal::RegistryAccess::Registered(*scope, std::move(name));
    }
  }
  if (!status.ok() && scope != nullptr) internal::RegistryAccess::Failed(*scope, status);
  return status;
}

absl::StatusOr<const CachePolicyFactory*> CachePolicyRegistry::Find(absl::string_view name) const {
  RegistryState& s = State();
  absl::MutexLock lock(&s.mu);
  auto it = s.factories.find(name);
  if (it == s.factories.end()) {
    std::vector<std::string> names;
    for (const auto& [n, e] : s.factories) names.push_back(n);
    return absl::NotFoundError(absl::StrCat("unknown cache policy \"", name, "\"; known policies: ",
                                            absl::StrJoin(names, ", ")));
  }
  return it->second.factory.get();
}

std::vector<std::string> CachePolicyRegistry::Names() const {
  RegistryState& s = State();
  absl::MutexLock lock(&s.mu);
  std::vector<std::string> names;
  for (const auto& [n, e] : s.factories) names.push_back(n);
  return names;
}

namespace internal {
bool RegisterAtStartup(std::unique_ptr<CachePolicyFactory> factory) {
  absl::Status status = CachePolicyRegistry::Global().Register(std::move(factory));
  // Inside a RegistrationScope (a plugin's static initialisers run by the
  // loader's dlopen) the scope has recorded the error; the loader reports it.
  if (RegistrationScope::Current() != nullptr) return status.ok();
  CHECK(status.ok()) << status;  // two built-ins with one name is a build bug
  return true;
}
}  // namespace internal

}  // namespace quest::cache
