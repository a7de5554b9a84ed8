// Engine::Create with backend CUDA, on any machine (CI has no GPU): host-only
// cache policies (an out-of-tree plugin's) and FLOAT32 are refused before the
// GPU is touched, and a missing GPU is a clear error.

#include <cuda_runtime_api.h>

#include <cstdlib>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/engine.h"
#include "tests/tiny_model.h"

namespace quest {
namespace {

using ::testing::HasSubstr;

config::EngineConfig TinyCudaConfig() {
  config::EngineConfig c = fixtures::TinyEngineConfig();
  c.set_backend(config::CUDA);
  return c;
}

// Every built-in policy runs on the GPU; an out-of-tree policy whose factory
// keeps the default RunsOn (host only) is refused before the GPU is touched.
TEST(CudaEngineConfigTest, HostOnlyPluginPolicyIsRefused) {
  config::EngineConfig c = TinyCudaConfig();
  c.add_cache_plugins(std::string(std::getenv("TEST_SRCDIR")) +
                      "/quest_runtime/cache/testdata/libsliding_window_plugin.so");
  c.mutable_cache()->set_policy("example_recent_pages");
  (*c.mutable_cache()->mutable_plugin()->mutable_fields())["pages"].set_number_value(2);
  auto e = Engine::Create(c);
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.status().code(), absl::StatusCode::kFailedPrecondition) << e.status();
  EXPECT_THAT(e.status().message(),
              HasSubstr("cache policy example_recent_pages does not run on the CUDA backend"));
}

TEST(CudaEngineConfigTest, Float32IsRefused) {
  config::EngineConfig c = TinyCudaConfig();
  c.set_dtype(config::FLOAT32);
  auto e = Engine::Create(c);
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(e.status().message(), HasSubstr("not supported by the CUDA backend"));
}

TEST(CudaEngineConfigTest, NoGpuIsAClearError) {
  int count = 0;
  if (cudaGetDeviceCount(&count) == cudaSuccess && count > 0) GTEST_SKIP() << "a GPU is present";
  auto e = Engine::Create(TinyCudaConfig());
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(e.status().message(), HasSubstr("CUDA backend: no usable GPU"));
}

}  // namespace
}  // namespace quest
