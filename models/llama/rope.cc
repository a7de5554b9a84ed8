#include "models/llama/rope.h"

#include <algorithm>
#include <cmath>

namespace quest::models {
namespace {

// 1 / base^(2i/dim) with torch's rounding: exponent in float32, power in
// float32.
std::vector<float> DefaultInvFreq(double base, int64_t dim) {
  std::vector<float> inv(dim / 2);
  for (int64_t i = 0; i < dim / 2; ++i) {
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(dim);
    inv[i] = 1.0f / std::pow(static_cast<float>(base), exponent);
  }
  return inv;
}

}  // namespace

RopeFrequencies ComputeRopeFrequencies(const LlamaConfig& c, int64_t seq_len) {
  const int64_t dim = c.head_dim;
  const RopeScaling& s = c.rope_scaling;
  RopeFrequencies out;
  switch (s.type) {
    case RopeScaling::Type::kNone:
      out.inv_freq = DefaultInvFreq(c.rope_theta, dim);
      break;
    case RopeScaling::Type::kLinear:
      out.inv_freq = DefaultInvFreq(c.rope_theta, dim);
      for (float& f : out.inv_freq) f /= static_cast<float>(s.factor);
      break;
    case RopeScaling::Type::kDynamic: {
      // NTK-aware base growth once the sequence outgrows the trained context.
      const double max_pos = static_cast<double>(c.max_position_embeddings);
      const double len = std::max<double>(static_cast<double>(seq_len), max_pos);
      const double base = c.rope_theta * std::pow(s.factor * len / max_pos - (s.factor - 1.0),
                                                  static_cast<double>(dim) / (dim - 2));
      out.inv_freq = DefaultInvFreq(base, dim);
      break;
    }
    case RopeScaling::Type::kYarn: {
      double factor = s.factor;
      int64_t original = c.max_position_embeddings;
      if (s.original_max_position_embeddings > 0) {
        original = s.original_max_position_embeddings;
        factor = static_cast<double>(c.max_position_embeddings) / original;
      }
      out.attention_scaling = static_cast<float>(
          s.attention_factor > 0 ? s.attention_factor
                                 : (factor > 1 ? 0.1 * std::log(factor) + 1.0 : 1.0));
      const double base = c.rope_theta;
      auto correction_dim = [&](double rotations) {
        return (dim * std::log(original / (rotations * 2 * M_PI))) / (2 * std::log(base));
      };
      double low = std::max(std::floor(correction_dim(s.beta_fast)), 0.0);
      double high = std::min(std::ceil(correction_dim(s.beta_slow)), static_cast<double>(dim - 1));
      if (low == high) high += 0.001;  // avoid a zero-width ramp
      out.inv_freq.resize(dim / 2);
      for (int64_t i = 0; i < dim / 2; ++i) {
        const float pos_freq = std::pow(static_cast<float>(base),
                                        static_cast<float>(2 * i) / static_cast<float>(dim));
        const float extrapolation = 1.0f / pos_freq;
        const float interpolation = 1.0f / (static_cast<float>(factor) * pos_freq);
        const float ramp = std::clamp(static_cast<float>((i - low) / (high - low)), 0.0f, 1.0f);
        const float extrapolation_weight = 1.0f - ramp;
        out.inv_freq[i] = interpolation * (1 - extrapolation_weight) + extrapolation * extrapolation_weight;
      }
      break;
    }
    case RopeScaling::Type::kLlama3: {
      out.inv_freq = DefaultInvFreq(c.rope_theta, dim);
      const double old_context = static_cast<double>(s.original_max_position_embeddings);
      const double low_freq_wavelen = old_context / s.low_freq_factor;
      const double high_freq_wavelen = old_context / s.high_freq_factor;
      for (float& f : out.inv_freq) {
        const double wavelen = 2 * M_PI / f;
        if (wavelen > low_freq_wavelen) {
          f = static_cast<float>(f / s.factor);
        } else if (wavelen >= high_freq_wavelen) {
          const double smooth =
              (old_context / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
          f = static_cast<float>((1 - smooth) * f / s.factor + smooth * f);
        }
      }
      break;
    }
  }
  // llama.cpp's rope_freqs: angle = position * inv_freq[i] / factor[i]
  // (ValidateLlamaConfig rejects factors of any other count).
  if (s.freq_factors.size() == out.inv_freq.size()) {
    for (size_t i = 0; i < out.inv_freq.size(); ++i) out.inv_freq[i] /= s.freq_factors[i];
  }
  return out;
}

}  // namespace quest::models
