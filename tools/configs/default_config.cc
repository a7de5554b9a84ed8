#include "tools/configs/default_config.h"

#include <cstdlib>
#include <filesystem>

#include "runtime/engine.h"

namespace quest::tools {
namespace {
constexpr char kDefaultConfig[] =
#include "tools/configs/default_config.inc"
    ;
}  // namespace

absl::StatusOr<config::EngineConfig> LoadConfigOrDefault(const std::string& path) {
  absl::StatusOr<config::EngineConfig> config =
      path.empty() ? ParseEngineConfig(kDefaultConfig, "embedded default config") : LoadEngineConfig(path);
  if (!config.ok()) return config.status();
  // Under `bazel run` the working directory is the runfiles tree; relative
  // model paths mean the workspace.
  const std::filesystem::path model_path = config->model().path();
  if (const char* ws = std::getenv("BUILD_WORKSPACE_DIRECTORY"); ws != nullptr && model_path.is_relative()) {
    config->mutable_model()->set_path((std::filesystem::path(ws) / model_path).string());
  }
  return config;
}

}  // namespace quest::tools
