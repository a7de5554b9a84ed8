#include "runtime/tensor.h"

#include <cmath>
#include <limits>

#include "gtest/gtest.h"

namespace quest {
namespace {

TEST(HalfTest, RoundTripsRepresentableValues) {
  for (float f : {0.0f, -0.0f, 1.0f, -2.5f, 65504.0f, 6.103515625e-05f, 5.9604645e-08f, 0.333251953125f}) {
    EXPECT_EQ(HalfToFloat(FloatToHalf(f)), f) << f;
  }
}

TEST(HalfTest, RoundsToNearestEvenAndSaturates) {
  // 1 + 2^-11 is exactly between 1 and the next half (1 + 2^-10): ties to even.
  EXPECT_EQ(HalfToFloat(FloatToHalf(1.0f + std::ldexp(1.0f, -11))), 1.0f);
  EXPECT_EQ(HalfToFloat(FloatToHalf(1.0f + 3 * std::ldexp(1.0f, -11))), 1.0f + std::ldexp(1.0f, -9));
  EXPECT_TRUE(std::isinf(HalfToFloat(FloatToHalf(1e6f))));
  EXPECT_TRUE(std::isnan(HalfToFloat(FloatToHalf(std::numeric_limits<float>::quiet_NaN()))));
}

TEST(HalfTest, AllHalfBitPatternsRoundTrip) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = HalfToFloat(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    EXPECT_EQ(FloatToHalf(f), h) << std::hex << h;
  }
}

TEST(BFloat16Test, RoundTripAndRounding) {
  EXPECT_EQ(BFloat16ToFloat(FloatToBFloat16(3.0f)), 3.0f);
  EXPECT_EQ(BFloat16ToFloat(FloatToBFloat16(1.0f + std::ldexp(1.0f, -8))), 1.0f);  // tie to even
  EXPECT_EQ(BFloat16ToFloat(FloatToBFloat16(1.0f + 3 * std::ldexp(1.0f, -8))), 1.0f + std::ldexp(1.0f, -6));
}

TEST(TensorTest, SliceSharesStorageAndReshapeKeepsCount) {
  Tensor t = Tensor::FromFloats({0, 1, 2, 3, 4, 5}, {3, 2});
  Tensor s = t.Slice(1, 3);
  EXPECT_EQ(s.shape(), (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(s.data<float>()[0], 2.0f);
  s.data<float>()[0] = 42.0f;
  EXPECT_EQ(t.data<float>()[2], 42.0f);
  EXPECT_EQ(t.Reshape({6}).dim(0), 6);
  EXPECT_EQ(t.ShapeString(), "[3, 2] f32");
}

TEST(TensorTest, ToFloat32ConvertsHalfAndBf16) {
  Tensor h = Tensor::Empty(DType::kFloat16, {2});
  h.data<uint16_t>()[0] = FloatToHalf(1.5f);
  h.data<uint16_t>()[1] = FloatToHalf(-3.0f);
  Tensor f = h.ToFloat32();
  EXPECT_EQ(f.dtype(), DType::kFloat32);
  EXPECT_EQ(f.data<float>()[0], 1.5f);
  EXPECT_EQ(f.data<float>()[1], -3.0f);
  Tensor c = f.Clone();
  c.data<float>()[0] = 0;
  EXPECT_EQ(f.data<float>()[0], 1.5f);
}

TEST(TensorTest, AsTypeRoundsToNearestEvenAndKeepsSameType) {
  Tensor f = Tensor::FromFloats({1.0f + 1.0f / 256, -2.5f, 65504.0f}, {3});
  Tensor b = f.AsType(DType::kBFloat16);
  EXPECT_EQ(b.dtype(), DType::kBFloat16);
  EXPECT_EQ(b.data<uint16_t>()[0], FloatToBFloat16(1.0f + 1.0f / 256));
  EXPECT_EQ(BFloat16ToFloat(b.data<uint16_t>()[0]), 1.0f);  // the tie rounds to even
  Tensor h = b.AsType(DType::kFloat16);  // bf16 -> f16 through f32
  EXPECT_EQ(HalfToFloat(h.data<uint16_t>()[1]), -2.5f);
  EXPECT_EQ(f.AsType(DType::kFloat32).raw_data(), f.raw_data()) << "same dtype: a reference";
  EXPECT_EQ(h.AsType(DType::kFloat32).data<float>()[1], -2.5f);
}

}  // namespace
}  // namespace quest
