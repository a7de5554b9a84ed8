#ifndef QUEST_TOOLS_CONFIGS_DEFAULT_CONFIG_H_
#define QUEST_TOOLS_CONFIGS_DEFAULT_CONFIG_H_

#include <string>

#include "absl/status/statusor.h"
#include "proto/engine_config.pb.h"

namespace quest::tools {

// The embedded default (tools/configs/default.textproto, compiled in), or the
// file at `path` when it is not empty. A relative model path is resolved
// against the Bazel workspace when run under `bazel run`.
absl::StatusOr<config::EngineConfig> LoadConfigOrDefault(const std::string& path);

}  // namespace quest::tools

#endif  // QUEST_TOOLS_CONFIGS_DEFAULT_CONFIG_H_
