// Which shapes the decode linear-layer kernels take (GemvSupported): host
// logic, checked without a GPU. The kernels themselves are checked on the
// GPU against the CPU reference (cuda_backend_test: DecodeLinear,
// LinearGroup).

#include "ops/cuda/gemv_kernels.h"

#include <cstdint>

#include "gtest/gtest.h"

namespace quest::ops::cuda {
namespace {

alignas(16) char buffer[64];

GemvParams Shape(int64_t m, int64_t k, int64_t n, int variant = 0) {
  GemvParams p;
  p.x = buffer;
  p.m = m;
  p.k = k;
  p.variant = variant;
  p.parts[0].w = buffer;
  p.parts[0].n = n;
  return p;
}

TEST(GemvSupportedTest, RowsOfX) {
  EXPECT_FALSE(GemvSupported(Shape(0, 4096, 4096)));
  for (int64_t m = 1; m <= kMaxGemvRows; ++m) EXPECT_TRUE(GemvSupported(Shape(m, 4096, 4096))) << m;
  EXPECT_FALSE(GemvSupported(Shape(kMaxGemvRows + 1, 4096, 4096)));
}

TEST(GemvSupportedTest, KMultipleOf8UpTo4RowsAndOf64Above) {
  EXPECT_FALSE(GemvSupported(Shape(1, 4100, 64)));  // not whole 16-byte vectors
  EXPECT_TRUE(GemvSupported(Shape(4, 4104, 64)));   // CUDA cores
  EXPECT_FALSE(GemvSupported(Shape(5, 4104, 64)));  // tensor cores need whole 64-element chunks
  EXPECT_TRUE(GemvSupported(Shape(5, 4096, 64)));
  EXPECT_FALSE(GemvSupported(Shape(1, 0, 64)));
}

TEST(GemvSupportedTest, VariantsTakeOnlyTheirShapes) {
  EXPECT_TRUE(GemvSupported(Shape(4, 4104, 64, /*variant=*/1)));
  EXPECT_FALSE(GemvSupported(Shape(5, 4096, 64, /*variant=*/1)));  // CUDA cores stop at 4 rows
  EXPECT_TRUE(GemvSupported(Shape(1, 4096, 64, /*variant=*/2)));
  EXPECT_FALSE(GemvSupported(Shape(1, 4104, 64, /*variant=*/2)));
}

TEST(GemvSupportedTest, AlignmentAndParts) {
  GemvParams p = Shape(1, 64, 8);
  p.x = buffer + 8;
  EXPECT_FALSE(GemvSupported(p));
  p = Shape(1, 64, 8);
  p.parts[0].w = buffer + 4;
  EXPECT_FALSE(GemvSupported(p));
  p = Shape(1, 64, 8);
  p.num_parts = kMaxGemvParts;
  for (int j = 1; j < kMaxGemvParts; ++j) p.parts[j] = p.parts[0];
  EXPECT_TRUE(GemvSupported(p));
  p.parts[kMaxGemvParts - 1].n = 0;  // an empty part
  EXPECT_FALSE(GemvSupported(p));
  p.parts[kMaxGemvParts - 1].n = 8;
  p.num_parts = 0;
  EXPECT_FALSE(GemvSupported(p));
  p.num_parts = kMaxGemvParts + 1;
  EXPECT_FALSE(GemvSupported(p));
}

}  // namespace
}  // namespace quest::ops::cuda
