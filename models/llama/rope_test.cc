#include "models/llama/rope.h"

#include <cmath>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "models/llama_config.h"

namespace quest::models {
namespace {

LlamaConfig Config(int64_t head_dim, double theta) {
  LlamaConfig c;
  c.head_dim = head_dim;
  c.rope_theta = theta;
  c.max_position_embeddings = 131072;
  return c;
}

// What llama.cpp's convert_hf_to_gguf.py writes as rope_freqs.weight for a
// "llama3" rope_scaling: per frequency 1 (short wavelengths), `factor`
// (long ones), or 1 / ((1 - smooth) / factor + smooth) between. Written out
// here from that description, independently of rope.cc.
std::vector<float> Llama3FactorsAsLlamaCppWritesThem(int64_t head_dim, double theta,
                                                      const RopeScaling& s) {
  std::vector<float> factors;
  const double low_wavelen = s.original_max_position_embeddings / s.low_freq_factor;
  const double high_wavelen = s.original_max_position_embeddings / s.high_freq_factor;
  for (int64_t i = 0; i < head_dim; i += 2) {
    const double freq = 1.0 / std::pow(theta, static_cast<double>(i) / head_dim);
    const double wavelen = 2 * M_PI / freq;
    if (wavelen < high_wavelen) {
      factors.push_back(1.0f);
    } else if (wavelen > low_wavelen) {
      factors.push_back(static_cast<float>(s.factor));
    } else {
      const double smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor) /
                            (s.high_freq_factor - s.low_freq_factor);
      factors.push_back(static_cast<float>(1.0 / ((1 - smooth) / s.factor + smooth)));
    }
  }
  return factors;
}

TEST(RopeTest, DefaultFrequencies) {
  const RopeFrequencies f = ComputeRopeFrequencies(Config(8, 10000.0), 1);
  ASSERT_EQ(f.inv_freq.size(), 4u);
  for (int i = 0; i < 4; ++i) EXPECT_FLOAT_EQ(f.inv_freq[i], std::pow(10000.0, -2.0 * i / 8)) << i;
  EXPECT_EQ(f.attention_scaling, 1.0f);
}

TEST(RopeTest, FreqFactorsDivideAfterTheScaling) {
  LlamaConfig c = Config(8, 10000.0);
  c.rope_scaling.type = RopeScaling::Type::kLinear;
  c.rope_scaling.factor = 2.0;
  const RopeFrequencies linear = ComputeRopeFrequencies(c, 1);
  c.rope_scaling.freq_factors = {1.0f, 4.0f, 0.5f, 8.0f};
  const RopeFrequencies both = ComputeRopeFrequencies(c, 1);
  ASSERT_EQ(both.inv_freq.size(), 4u);
  for (int i = 0; i < 4; ++i) {
    EXPECT_FLOAT_EQ(both.inv_freq[i], linear.inv_freq[i] / c.rope_scaling.freq_factors[i]) << i;
  }
}

// A Llama 3.1 GGUF (factors) and its Hugging Face checkpoint (rope_scaling
// "llama3") rotate by the same angles: Llama 3.1 8B's head size, base and
// scaling, every frequency in one of the three regions.
TEST(RopeTest, Llama31FactorsMatchHuggingFacesLlama3Scaling) {
  const int64_t d = 128;
  const double theta = 500000.0;
  LlamaConfig hf = Config(d, theta);
  hf.rope_scaling.type = RopeScaling::Type::kLlama3;
  hf.rope_scaling.factor = 8.0;
  hf.rope_scaling.low_freq_factor = 1.0;
  hf.rope_scaling.high_freq_factor = 4.0;
  hf.rope_scaling.original_max_position_embeddings = 8192;
  LlamaConfig gguf = Config(d, theta);
  gguf.rope_scaling.freq_factors = Llama3FactorsAsLlamaCppWritesThem(d, theta, hf.rope_scaling);
  int ones = 0, full = 0, between = 0;
  for (float f : gguf.rope_scaling.freq_factors) {
    ones += f == 1.0f;
    full += f == 8.0f;
    between += f > 1.0f && f < 8.0f;
  }
  EXPECT_GT(ones, 0);
  EXPECT_GT(full, 0);
  EXPECT_GT(between, 0);

  const RopeFrequencies a = ComputeRopeFrequencies(hf, 1);
  const RopeFrequencies b = ComputeRopeFrequencies(gguf, 1);
  ASSERT_EQ(a.inv_freq.size(), b.inv_freq.size());
  for (size_t i = 0; i < a.inv_freq.size(); ++i) {
    EXPECT_NEAR(b.inv_freq[i], a.inv_freq[i], 2e-7 * a.inv_freq[i]) << "frequency " << i;
  }
  EXPECT_EQ(a.attention_scaling, b.attention_scaling);
}

}  // namespace
}  // namespace quest::models
