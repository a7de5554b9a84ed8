// runtime/fp8.h against an exhaustive table of E4M3 values: every code
// decodes as the format defines, and directed rounding of any float gives
// the nearest code on the requested side (the property Quest's page bounds
// rely on: min rounded down, max rounded up, so the score stays an upper
// bound).

#include "runtime/fp8.h"

#include <algorithm>
#include <cmath>
#include <cstring>
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

// Every 97th float bit pattern (44 million, both signs, every exponent)
// plus random values in E4M3's range, against the table: rounding down
// gives the largest table value <= x, rounding up the smallest >= x.
TEST(Fp8Test, DirectedRoundingPicksTheNeighbourOnThatSide) {
  const std::vector<Entry> all = FiniteValuesAscending();
  std::vector<float> values;
  for (const Entry& e : all) values.push_back(e.value);
  auto check = [&](float x) {
    if (std::isnan(x) || std::fabs(x) > 448.0f) return;
    // First table value > x, and first >= x.
    const auto above = std::upper_bound(values.begin(), values.end(), x);
    const auto at_or_above = std::lower_bound(values.begin(), values.end(), x);
    ASSERT_TRUE(above != values.begin() && at_or_above != values.end()) << x;
    const float want_down = *(above - 1), want_up = *at_or_above;
    ASSERT_EQ(E4M3ToFloat(E4M3RoundDown(x)), want_down) << "x = " << x;
    ASSERT_EQ(E4M3ToFloat(E4M3RoundUp(x)), want_up) << "x = " << x;
  };
  for (uint64_t bits = 0; bits < (uint64_t{1} << 32); bits += 97) {
    const uint32_t b = static_cast<uint32_t>(bits);
    float x;
    std::memcpy(&x, &b, sizeof(x));
    check(x);
  }
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> exponent(-12.0f, 8.8f);
  for (int i = 0; i < 200000; ++i) check(std::exp2(exponent(rng)) * (rng() & 1 ? 1.0f : -1.0f));
  for (float x : {0.0f, -0.0f, 1e-30f, -1e-30f, 0.0009f, -0.0009f, 447.9f, -447.9f, 448.0f, -448.0f}) check(x);
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
