#ifndef QUEST_RUNTIME_FP8_H_
#define QUEST_RUNTIME_FP8_H_

// FP8 E4M3 (the OCP "e4m3fn" format of NVIDIA's __nv_fp8_e4m3: 1 sign bit,
// 4 exponent bits with bias 7, 3 mantissa bits, no infinities, 0x7F / 0xFF
// the only NaNs, largest finite value 448) with directed rounding.
//
// Quest keeps every page's elementwise min and max Keys and scores a page
// with sum_d max(q_d * max_d, q_d * min_d), an upper bound of q.k over the
// page. Stored as E4M3 with the min rounded down and the max rounded up the
// interval only widens, so the score stays an upper bound while the page
// metadata, which every decode step reads in full, halves against bf16.
// Keys beyond +-448 saturate to +-448 (there the bound is no longer strict;
// post-RoPE Keys of the supported models stay far below that).
//
// One definition for the host (the CPU reference) and the device (the CUDA
// kernels), so both store bit-identical bytes. Plain C++17, no CUDA headers.

#include <math.h>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define QUEST_FP8_FN __host__ __device__ inline
#else
#define QUEST_FP8_FN inline
#endif

namespace quest::fp8 {

inline constexpr uint8_t kE4M3Nan = 0x7F;
inline constexpr uint8_t kE4M3MaxCode = 0x7E;  // 448
inline constexpr float kE4M3Max = 448.0f;

namespace internal {

QUEST_FP8_FN uint32_t Bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
#endif
}

QUEST_FP8_FN float FromBits(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
#endif
}

// The code of the largest E4M3 magnitude <= a (a >= 0 or -0, not NaN),
// saturating at 448; *exact says whether it equals a. Bit operations, not
// frexpf / ldexpf: a decode step's bounds fold runs this per element.
QUEST_FP8_FN uint8_t TruncateMagnitude(float a, bool* exact) {
  if (a >= kE4M3Max) {
    *exact = a == kE4M3Max;
    return kE4M3MaxCode;
  }
  if (a < 0.015625f) {  // below 2^-6, the smallest normal: subnormal steps of 2^-9
    const float steps = a * 512.0f, whole = floorf(steps);
    *exact = whole == steps;
    return static_cast<uint8_t>(whole);
  }
  // A normal float in [2^-6, 448): its biased exponent - 120 is the E4M3
  // one (bias 127 vs 7), its top 3 mantissa bits the E4M3 mantissa.
  const uint32_t b = Bits(a);
  *exact = (b & 0xFFFFFu) == 0;
  return static_cast<uint8_t>(((((b >> 23) & 0xFFu) - 120u) << 3) | ((b >> 20) & 0x7u));
}

// Largest E4M3 value <= x (saturating at -448 below it); NaN stays NaN.
QUEST_FP8_FN uint8_t RoundDown(float x) {
  if (x != x) return kE4M3Nan;
  bool exact = true;
  if (!(x < 0.0f)) return TruncateMagnitude(x, &exact);
  uint8_t magnitude = TruncateMagnitude(-x, &exact);
  // A negative value rounds down by rounding its magnitude up.
  if (!exact && magnitude < kE4M3MaxCode) ++magnitude;
  return static_cast<uint8_t>(0x80 | magnitude);
}

}  // namespace internal

// The value of an E4M3 code (exact in float).
QUEST_FP8_FN float E4M3ToFloat(uint8_t code) {
  const uint32_t magnitude = code & 0x7Fu;
  float v;
  if (magnitude == 0x7Fu) {
    v = NAN;
  } else if (magnitude >= 8u) {
    v = internal::FromBits((magnitude << 20) + (120u << 23));  // 1.m * 2^(e-7): rebias the exponent
  } else {
    v = static_cast<float>(magnitude) * 0.001953125f;  // subnormal: m * 2^-9
  }
  return (code & 0x80u) ? -v : v;
}

// The E4M3 code of the largest value <= x: a page's min Keys.
QUEST_FP8_FN uint8_t E4M3RoundDown(float x) { return internal::RoundDown(x); }

// The E4M3 code of the smallest value >= x: a page's max Keys.
QUEST_FP8_FN uint8_t E4M3RoundUp(float x) {
  if (x != x) return kE4M3Nan;
  return static_cast<uint8_t>(internal::RoundDown(-x) ^ 0x80);
}

}  // namespace quest::fp8

#undef QUEST_FP8_FN

#endif  // QUEST_RUNTIME_FP8_H_
