#include "runtime/testing/random_tensor.h"

#include <cmath>
#include <random>

#include "gtest/gtest.h"

namespace quest {
namespace {

TEST(RandomTensorTest, ShapeDeterminismAndMoments) {
  std::mt19937 rng(1), same(1);
  const Tensor a = RandomTensor({64, 32}, rng, /*mean=*/3.0f, /*stddev=*/0.5f);
  const Tensor b = RandomTensor({64, 32}, same, 3.0f, 0.5f);
  EXPECT_EQ(a.dtype(), DType::kFloat32);
  EXPECT_EQ(a.shape(), (std::vector<int64_t>{64, 32}));
  double sum = 0, sum_sq = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    EXPECT_EQ(a.data<float>()[i], b.data<float>()[i]);
    sum += a.data<float>()[i];
    sum_sq += a.data<float>()[i] * a.data<float>()[i];
  }
  const double mean = sum / a.numel();
  EXPECT_NEAR(mean, 3.0, 0.05);
  EXPECT_NEAR(std::sqrt(sum_sq / a.numel() - mean * mean), 0.5, 0.05);
}

}  // namespace
}  // namespace quest
