// Engine::Create with backend CUDA, on any machine (CI has no GPU): host-only
// cache policies and FLOAT32 are refused before the GPU is touched, and a
// missing GPU is a clear error.

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

TEST(CudaEngineConfigTest, HostOnlyPoliciesAreRefused) {
  for (const char* policy : {"quest", "h2o", "tova", "streaming_llm"}) {
    config::EngineConfig c = TinyCudaConfig();
    c.mutable_cache()->set_policy(policy);
    auto e = Engine::Create(c);
    ASSERT_FALSE(e.ok()) << policy;
    EXPECT_EQ(e.status().code(), absl::StatusCode::kFailedPrecondition) << e.status();
    EXPECT_THAT(e.status().message(),
                HasSubstr(std::string("cache policy ") + policy + " does not run on the CUDA backend yet"));
  }
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
