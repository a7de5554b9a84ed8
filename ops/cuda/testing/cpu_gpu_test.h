#ifndef QUEST_OPS_CUDA_TESTING_CPU_GPU_TEST_H_
#define QUEST_OPS_CUDA_TESTING_CPU_GPU_TEST_H_

// A gtest fixture for GPU tests that check a CUDA op against the CPU
// reference: both backends (CUDA in bf16), a seeded generator, and random
// inputs rounded to bf16 values so both backends see the same numbers.

#include <cstdint>
#include <memory>
#include <random>
#include <vector>

#include "absl/types/span.h"
#include "gtest/gtest.h"
#include "ops/cpu/cpu_backend.h"
#include "ops/cuda/cuda_backend.h"
#include "runtime/backend.h"

namespace quest::testing {

class CpuGpuTest : public ::testing::Test {
 protected:
  explicit CpuGpuTest(uint32_t seed) : rng_(seed) {}

  void SetUp() override {
    cpu_ = ops::CreateCpuBackend({/*num_threads=*/4});
    absl::StatusOr<std::unique_ptr<Backend>> g = ops::CreateCudaBackend();
    ASSERT_TRUE(g.ok()) << g.status();
    gpu_ = *std::move(g);
    ASSERT_EQ(gpu_->activation_dtype(), DType::kBFloat16);
  }

  // Uniform in [-scale, scale], rounded to bf16 values (host f32).
  Tensor Random(std::vector<int64_t> shape, float scale = 1.0f) {
    Tensor t = Tensor::Empty(DType::kFloat32, std::move(shape));
    std::uniform_real_distribution<float> dist(-scale, scale);
    for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = BFloat16ToFloat(FloatToBFloat16(dist(rng_)));
    return t;
  }
  Tensor OnCpu(const Tensor& host) { return *cpu_->UploadWeight(host); }
  Tensor OnGpu(const Tensor& host) {
    absl::StatusOr<Tensor> t = gpu_->UploadWeight(host);
    EXPECT_TRUE(t.ok()) << t.status();
    EXPECT_EQ(t->device(), Device::kCuda);
    return *t;
  }

  // UpdatePageBounds over positions [0, len) of a sequence whose pool
  // pages are `table`, one Quest page per pool page: the bounds prefill
  // leaves.
  static PageBoundsArgs WholeSequenceBounds(const Tensor& k_pages, absl::Span<const int32_t> table, int page_size,
                                            int64_t len) {
    PageBoundsArgs a;
    a.k_pages = &k_pages;
    a.page_table = table;
    a.page_size = page_size;
    a.bound_page = page_size;
    a.begin = 0;
    a.end = len;
    return a;
  }

  std::mt19937 rng_;
  std::unique_ptr<Backend> cpu_, gpu_;
};

}  // namespace quest::testing

#endif  // QUEST_OPS_CUDA_TESTING_CPU_GPU_TEST_H_
