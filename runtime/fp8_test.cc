// runtime/fp8.h against an exhaustive table of E4M3 values: every code
// decodes as the format defines, and directed rounding of any float gives
// the nearest code on the requested side (the property Quest's page bounds
// rely on: min rounded down, max rounded up, so the score stays an upper
// bound).

#include "runtime/fp8.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace quest::fp8 {
namespace {

// Every finite E4M3 value, ascending, with its code.
struct Entry {
  float value;
  uint8_t code;
};

std::vector<Entry> FiniteValuesAscending() {
  std::vector<Entry> out;
  for (int c = 0xFE; c >= 0x80; --c) {  // negatives, most negative first
    if (c == 0x80) continue;              // -0 is 0
    out.push_back({E4M3ToFloat(static_cast<uint8_t>(c)), static_cast<uint8_t>(c)});
  }
  for (int c = 0x00; c <= 0x7E; ++c) out.push_back({E4M3ToFloat(static_cast<uint8_t>(c)), static_cast<uint8_t>(c)});
  return out;
}

TEST(Fp8Test, DecodesTheFormat) {
  EXPECT_EQ(E4M3ToFloat(0x00), 0.0f);
  EXPECT_EQ(E4M3ToFloat(0x01), std::ldexp(1.0f, -9));  // smallest subnormal
  EXPECT_EQ(E4M3ToFloat(0x07), 7 * std::ldexp(1.0f, -9));
  EXPECT_EQ(E4M3ToFloat(0x08), std::ldexp(1.0f, -6));  // smallest normal
  EXPECT_EQ(E4M3ToFloat(0x38), 1.0f);
  EXPECT_EQ(E4M3ToFloat(0x39), 1.125f);
  EXPECT_EQ(E4M3ToFloat(0x7E), 448.0f);
  EXPECT_EQ(E4M3ToFloat(0xB8), -1.0f);
  EXPECT_TRUE(std::isnan(E4M3ToFloat(0x7F)));
  EXPECT_TRUE(std::isnan(E4M3ToFloat(0xFF)));
  const std::vector<Entry> all = FiniteValuesAscending();
  for (size_t i = 1; i < all.size(); ++i) {
    ASSERT_LT(all[i - 1].value, all[i].value) << "codes " << int{all[i - 1].code} << ", " << int{all[i].code};
  }
}

TEST(Fp8Test, RepresentableValuesRoundToThemselves) {
  for (const Entry& e : FiniteValuesAscending()) {
    EXPECT_EQ(E4M3ToFloat(E4M3RoundDown(e.value)), e.value) << e.value;
    EXPECT_EQ(E4M3ToFloat(E4M3RoundUp(e.value)), e.value) << e.value;
  }
}

TEST(Fp8Test, DirectedRoundingPicksTheNeighbourOnThatSide) {
  const std::vector<Entry> all = FiniteValuesAscending();
  std::mt19937 rng(7);
  std::vector<float> xs = {0.0f, -0.0f, 1e-30f, -1e-30f, 0.0009f, -0.0009f, 447.9f, -447.9f, 3.3f, -3.3f};
  std::uniform_real_distribution<float> exponent(-12.0f, 9.5f);
  for (int i = 0; i < 200000; ++i) {
    const float x = std::exp2(exponent(rng)) * (rng() & 1 ? 1.0f : -1.0f);
    if (std::fabs(x) < 448.0f) xs.push_back(x);
  }
  for (float x : xs) {
    const float down = E4M3ToFloat(E4M3RoundDown(x)), up = E4M3ToFloat(E4M3RoundUp(x));
    ASSERT_LE(down, x) << x;
    ASSERT_GE(up, x) << x;
    // Nothing representable lies strictly between the rounded value and x.
    for (const Entry& e : all) {
      ASSERT_FALSE(e.value > down && e.value < x) << x << " rounded down to " << down << ", skipping " << e.value;
      ASSERT_FALSE(e.value < up && e.value > x) << x << " rounded up to " << up << ", skipping " << e.value;
    }
  }
}

TEST(Fp8Test, SaturatesBeyond448AndKeepsNaN) {
  EXPECT_EQ(E4M3ToFloat(E4M3RoundUp(1000.0f)), 448.0f);
  EXPECT_EQ(E4M3ToFloat(E4M3RoundDown(1000.0f)), 448.0f);
  EXPECT_EQ(E4M3ToFloat(E4M3RoundDown(-1000.0f)), -448.0f);
  EXPECT_EQ(E4M3ToFloat(E4M3RoundUp(-1000.0f)), -448.0f);
  EXPECT_EQ(E4M3ToFloat(E4M3RoundUp(std::numeric_limits<float>::infinity())), 448.0f);
  EXPECT_EQ(E4M3ToFloat(E4M3RoundDown(-std::numeric_limits<float>::infinity())), -448.0f);
  EXPECT_EQ(E4M3ToFloat(E4M3RoundUp(-449.0f)), -448.0f);  // still >= x: exact side
  EXPECT_EQ(E4M3ToFloat(E4M3RoundDown(449.0f)), 448.0f);
  EXPECT_TRUE(std::isnan(E4M3ToFloat(E4M3RoundDown(std::nanf("")))));
  EXPECT_TRUE(std::isnan(E4M3ToFloat(E4M3RoundUp(std::nanf("")))));
}

}  // namespace
}  // namespace quest::fp8
