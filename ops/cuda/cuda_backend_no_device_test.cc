// Creating the CUDA backend on a machine without a usable GPU (CI) is an
// error status naming the cause, never a crash.

#include <cuda_runtime_api.h>

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "ops/cuda/cuda_backend.h"

namespace quest::ops {
namespace {

using ::testing::HasSubstr;

bool HaveGpu() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

TEST(CudaBackendNoDeviceTest, CreateFailsWithAClearError) {
  if (HaveGpu()) GTEST_SKIP() << "a GPU is present; the GPU tests cover this build";
  absl::StatusOr<std::unique_ptr<Backend>> b = CreateCudaBackend();
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(b.status().message(), HasSubstr("CUDA backend: no usable GPU"));
}

TEST(CudaBackendNoDeviceTest, RejectsFloat32BeforeTouchingTheDevice) {
  CudaBackendOptions o;
  o.dtype = DType::kFloat32;
  absl::StatusOr<std::unique_ptr<Backend>> b = CreateCudaBackend(o);
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(b.status().message(), HasSubstr("f32"));
}

TEST(CudaBackendNoDeviceTest, RejectsAnUnknownSelectVariantBeforeTouchingTheDevice) {
  for (int variant : {-1, 3, 4, 7}) {
    CudaBackendOptions o;
    o.quest_select_variant = variant;
    absl::StatusOr<std::unique_ptr<Backend>> b = CreateCudaBackend(o);
    ASSERT_FALSE(b.ok()) << variant;
    EXPECT_EQ(b.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(b.status().message(), HasSubstr("quest_select_variant " + std::to_string(variant)));
  }
}

TEST(CudaBackendNoDeviceTest, RejectsAPerHeadWaitOnASelectThatPublishesNoRows) {
  CudaBackendOptions o;
  o.quest_select_variant = 5;
  o.per_head_select_wait = true;
  absl::StatusOr<std::unique_ptr<Backend>> b = CreateCudaBackend(o);
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(b.status().message(), HasSubstr("per_head_select_wait"));
}

TEST(CudaBackendNoDeviceTest, RejectsUnknownGemvOptionsBeforeTouchingTheDevice) {
  for (int variant : {-1, 3}) {
    CudaBackendOptions o;
    o.gemv_variant = variant;
    absl::StatusOr<std::unique_ptr<Backend>> b = CreateCudaBackend(o);
    ASSERT_FALSE(b.ok()) << variant;
    EXPECT_EQ(b.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(b.status().message(), HasSubstr("gemv_variant " + std::to_string(variant)));
  }
  for (int rows : {-2, 1, 3, 16}) {
    CudaBackendOptions o;
    o.gemv_rows_per_cta = rows;
    absl::StatusOr<std::unique_ptr<Backend>> b = CreateCudaBackend(o);
    ASSERT_FALSE(b.ok()) << rows;
    EXPECT_EQ(b.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(b.status().message(), HasSubstr("gemv_rows_per_cta " + std::to_string(rows)));
  }
}

}  // namespace
}  // namespace quest::ops
