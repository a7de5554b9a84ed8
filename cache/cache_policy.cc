#include "cache/cache_policy.h"

#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "glog/logging.h"

namespace quest::cache {
namespace {

struct RegistryState {
  absl::Mutex mu;
  std::map<std::string, std::unique_ptr<CachePolicyFactory>, std::less<>> factories ABSL_GUARDED_BY(mu);
};

RegistryState& State() {
  static RegistryState* state = new RegistryState();  // never destroyed: used from static init
  return *state;
}

}  // namespace

CachePolicyRegistry& CachePolicyRegistry::Global() {
  static CachePolicyRegistry* registry = new CachePolicyRegistry();
  return *registry;
}

absl::Status CachePolicyRegistry::Register(std::unique_ptr<CachePolicyFactory> factory) {
  RegistryState& s = State();
  absl::MutexLock lock(&s.mu);
  std::string name(factory->name());
  if (s.factories.count(name) > 0) {
    return absl::AlreadyExistsError(absl::StrCat("cache policy \"", name, "\" is already registered"));
  }
  s.factories.emplace(std::move(name), std::move(factory));
  return absl::OkStatus();
}

absl::StatusOr<const CachePolicyFactory*> CachePolicyRegistry::Find(absl::string_view name) const {
  RegistryState& s = State();
  absl::MutexLock lock(&s.mu);
  auto it = s.factories.find(name);
  if (it == s.factories.end()) {
    std::vector<std::string> names;
    for (const auto& [n, f] : s.factories) names.push_back(n);
    return absl::NotFoundError(absl::StrCat("unknown cache policy \"", name, "\"; known policies: ",
                                            absl::StrJoin(names, ", ")));
  }
  return it->second.get();
}

std::vector<std::string> CachePolicyRegistry::Names() const {
  RegistryState& s = State();
  absl::MutexLock lock(&s.mu);
  std::vector<std::string> names;
  for (const auto& [n, f] : s.factories) names.push_back(n);
  return names;
}

namespace internal {
bool RegisterAtStartup(std::unique_ptr<CachePolicyFactory> factory) {
  absl::Status status = CachePolicyRegistry::Global().Register(std::move(factory));
  CHECK(status.ok()) << status;  // two built-ins with one name is a build bug
  return true;
}
}  // namespace internal

}  // namespace quest::cache
