#include "tools/gguf_to_hf/gguf_to_hf.h"

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "models/checkpoint.h"
#include "models/gguf/gguf_checkpoint.h"
#include "models/gguf/gguf_test_writer.h"
#include "models/safetensors.h"
#include "nlohmann/json.hpp"

namespace quest::tools {
namespace {

using ::quest::models::testing::kHeadDim;
using ::quest::models::testing::MakeTinyLlama;
using ::quest::models::testing::TempPath;
using ::quest::models::testing::TinyLlama;
using ::testing::HasSubstr;

std::string ReadText(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string WriteGguf(const TinyLlama& m) {
  const std::string path = TempPath("tiny.gguf");
  EXPECT_TRUE(m.writer.WriteTo(path).ok());
  return path;
}

TEST(GgufToHfTest, F32RoundTripsThroughTheHuggingFaceLoader) {
  TinyLlama m = MakeTinyLlama();
  const std::string gguf = WriteGguf(m);
  const std::string out = TempPath("hf_f32") + "/nested";
  ASSERT_TRUE(ConvertGgufToHf(gguf, out, DType::kFloat32).ok());

  const nlohmann::json config = nlohmann::json::parse(ReadText(out + "/config.json"));
  EXPECT_EQ(config["architectures"][0], "LlamaForCausalLM");
  EXPECT_EQ(config["model_type"], "llama");
  EXPECT_EQ(config["hidden_size"], 32);
  EXPECT_EQ(config["intermediate_size"], 64);
  EXPECT_EQ(config["num_hidden_layers"], 2);
  EXPECT_EQ(config["num_attention_heads"], 4);
  EXPECT_EQ(config["num_key_value_heads"], 2);
  EXPECT_EQ(config["head_dim"], 8);
  EXPECT_EQ(config["max_position_embeddings"], 256);
  EXPECT_EQ(config["rms_norm_eps"], 1e-5);
  EXPECT_EQ(config["rope_theta"], 100000.0);
  EXPECT_TRUE(config["rope_scaling"].is_null());
  EXPECT_EQ(config["tie_word_embeddings"], true);
  EXPECT_EQ(config["vocab_size"], 16);
  EXPECT_EQ(config["bos_token_id"], 1);
  EXPECT_EQ(config["eos_token_id"], 2);
  EXPECT_EQ(config["hidden_act"], "silu");
  EXPECT_EQ(config["torch_dtype"], "float32");

  absl::StatusOr<models::Checkpoint> hf = models::LoadHfCheckpoint(out);
  ASSERT_TRUE(hf.ok()) << hf.status();
  absl::StatusOr<models::Checkpoint> direct = models::LoadGgufCheckpoint(gguf);
  ASSERT_TRUE(direct.ok()) << direct.status();
  const models::LlamaConfig& a = hf->config;
  const models::LlamaConfig& b = direct->config;
  EXPECT_EQ(a.hidden_size, b.hidden_size);
  EXPECT_EQ(a.num_kv_heads, b.num_kv_heads);
  EXPECT_EQ(a.head_dim, b.head_dim);
  EXPECT_EQ(a.rms_norm_eps, b.rms_norm_eps);
  EXPECT_EQ(a.rope_theta, b.rope_theta);
  EXPECT_EQ(a.tie_word_embeddings, b.tie_word_embeddings);
  EXPECT_EQ(a.bos_token_id, b.bos_token_id);
  EXPECT_EQ(a.eos_token_ids, b.eos_token_ids);
  EXPECT_EQ(a.vocab_size, b.vocab_size);

  // Exactly the expected Hugging Face tensors, no lm_head (tied).
  EXPECT_EQ(hf->tensors.size(), m.hf.size());
  EXPECT_FALSE(hf->tensors.contains("lm_head.weight"));
  for (const auto& [name, want] : m.hf) {
    ASSERT_TRUE(hf->tensors.contains(name)) << name;
    const Tensor& t = hf->tensors.at(name);
    ASSERT_EQ(t.dtype(), DType::kFloat32) << name;
    EXPECT_EQ(std::vector<float>(t.data<float>(), t.data<float>() + t.numel()), want) << name;
  }
  absl::StatusOr<models::SafetensorsFile> st =
      models::SafetensorsFile::Open(out + "/model.safetensors");
  ASSERT_TRUE(st.ok()) << st.status();
  EXPECT_EQ(st->metadata().at("format"), "pt");
}

TEST(GgufToHfTest, HalfPrecisionAndUntiedHead) {
  TinyLlama m = MakeTinyLlama({.tied = false});
  const std::string gguf = WriteGguf(m);
  for (DType dtype : {DType::kFloat16, DType::kBFloat16}) {
    const std::string out = TempPath("hf_half");
    ASSERT_TRUE(ConvertGgufToHf(gguf, out, dtype).ok());
    const nlohmann::json config = nlohmann::json::parse(ReadText(out + "/config.json"));
    EXPECT_EQ(config["torch_dtype"], dtype == DType::kFloat16 ? "float16" : "bfloat16");
    EXPECT_EQ(config["tie_word_embeddings"], false);
    absl::StatusOr<models::Checkpoint> hf = models::LoadHfCheckpoint(out);
    ASSERT_TRUE(hf.ok()) << hf.status();
    ASSERT_TRUE(hf->tensors.contains("lm_head.weight"));
    for (const auto& [name, want] : m.hf) {
      const Tensor& t = hf->tensors.at(name);
      ASSERT_EQ(t.dtype(), dtype) << name;
      const uint16_t* v = t.data<uint16_t>();
      for (size_t i = 0; i < want.size(); ++i) {
        const uint16_t expect =
            dtype == DType::kFloat16 ? FloatToHalf(want[i]) : FloatToBFloat16(want[i]);
        ASSERT_EQ(v[i], expect) << name << "[" << i << "]";
      }
    }
  }
}

TEST(GgufToHfTest, Errors) {
  EXPECT_THAT(ParseDTypeFlag("f8").status().message(), HasSubstr("--dtype=f8"));
  EXPECT_EQ(*ParseDTypeFlag("bf16"), DType::kBFloat16);
  const std::string gguf = WriteGguf(MakeTinyLlama({.architecture = "gemma"}));
  absl::Status s = ConvertGgufToHf(gguf, TempPath("hf_bad"), DType::kFloat32);
  EXPECT_THAT(s.message(), HasSubstr("'general.architecture' is \"gemma\""));
  EXPECT_EQ(ConvertGgufToHf("/no/such.gguf", TempPath("x"), DType::kFloat32).code(),
            absl::StatusCode::kNotFound);
}

// config.json cannot carry GGUF's RoPE frequency factors (Llama 3.1's
// rope_freqs.weight): the conversion refuses rather than drop them.
TEST(GgufToHfTest, RopeFreqsAreRefused) {
  TinyLlama m = MakeTinyLlama();
  m.writer.AddF32Tensor("rope_freqs.weight", {kHeadDim / 2},
                        std::vector<float>(kHeadDim / 2, 2.0f));
  const absl::Status s = ConvertGgufToHf(WriteGguf(m), TempPath("hf_rope_freqs"), DType::kFloat32);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(s.message(), HasSubstr("rope_freqs.weight"));
}

}  // namespace
}  // namespace quest::tools
