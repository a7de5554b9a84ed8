#include "models/checkpoint.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "models/safetensors.h"
#include "models/testing/tiny_checkpoint.h"
#include "nlohmann/json.hpp"
#include "runtime/tensor.h"

namespace quest::models {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

std::string FreshDir(const std::string& name) {
  const std::string dir = absl::StrCat(::testing::TempDir(), "/ckpt_", name);
  fs::remove_all(dir);
  return dir;
}

std::string ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void WriteText(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

bool SameBytes(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() &&
         std::memcmp(a.raw_data(), b.raw_data(), a.nbytes()) == 0;
}

// Checks that `checkpoint` holds exactly the tensors MakeTinyLlamaTensors(opts) makes.
void ExpectTinyTensors(const Checkpoint& checkpoint, const TinyCheckpointOptions& opts) {
  const auto expected = MakeTinyLlamaTensors(opts);
  EXPECT_EQ(checkpoint.tensors.size(), expected.size());
  for (const auto& [name, tensor] : expected) {
    auto it = checkpoint.tensors.find(name);
    ASSERT_NE(it, checkpoint.tensors.end()) << name;
    EXPECT_TRUE(SameBytes(it->second, tensor)) << name;
  }
}

// Rewrites model.safetensors of `dir` through `edit`.
template <typename Edit>
void EditWeights(const std::string& dir, Edit edit) {
  const std::string path = dir + "/model.safetensors";
  absl::StatusOr<SafetensorsFile> file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const std::string& name : file->names()) tensors.emplace_back(name, *file->Read(name));
  edit(tensors);
  ASSERT_TRUE(WriteSafetensors(path, tensors).ok());
}

void EditIndex(const std::string& dir, void (*edit)(nlohmann::json&)) {
  const std::string path = dir + "/model.safetensors.index.json";
  nlohmann::json index = nlohmann::json::parse(ReadText(path));
  edit(index);
  WriteText(path, index.dump());
}

absl::Status LoadError(const std::string& dir) {
  absl::StatusOr<Checkpoint> c = LoadHfCheckpoint(dir);
  EXPECT_FALSE(c.ok());
  return c.status();
}

TEST(LoadHfCheckpointTest, RoundTripF32) {
  const std::string dir = FreshDir("f32");
  TinyCheckpointOptions opts;
  ASSERT_TRUE(WriteTinyLlamaCheckpoint(dir, opts).ok());
  EXPECT_TRUE(fs::exists(dir + "/config.json"));
  EXPECT_TRUE(fs::exists(dir + "/model.safetensors"));

  absl::StatusOr<Checkpoint> c = LoadHfCheckpoint(dir);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->source, dir);
  EXPECT_EQ(c->config.architecture, "LlamaForCausalLM");
  EXPECT_EQ(c->config.vocab_size, opts.vocab);
  EXPECT_EQ(c->config.hidden_size, opts.hidden);
  EXPECT_EQ(c->config.intermediate_size, opts.inter);
  EXPECT_EQ(c->config.num_layers, opts.layers);
  EXPECT_EQ(c->config.num_heads, opts.heads);
  EXPECT_EQ(c->config.num_kv_heads, opts.kv_heads);
  EXPECT_EQ(c->config.head_dim, opts.hidden / opts.heads);
  EXPECT_EQ(c->config.max_position_embeddings, opts.max_position_embeddings);
  EXPECT_DOUBLE_EQ(c->config.rms_norm_eps, opts.rms_norm_eps);
  EXPECT_EQ(c->config.bos_token_id, opts.bos_token_id);
  EXPECT_THAT(c->config.eos_token_ids, ::testing::ElementsAre(opts.eos_token_id));
  EXPECT_FALSE(c->config.tie_word_embeddings);
  EXPECT_TRUE(c->tensors.contains("lm_head.weight"));
  ExpectTinyTensors(*c, opts);
  EXPECT_EQ(c->tensors.at("model.embed_tokens.weight").dtype(), DType::kFloat32);
}

TEST(LoadHfCheckpointTest, RoundTripHalfPrecisions) {
  for (DType dtype : {DType::kFloat16, DType::kBFloat16}) {
    const std::string dir = FreshDir(DTypeName(dtype));
    TinyCheckpointOptions opts;
    opts.dtype = dtype;
    opts.seed = 7;
    ASSERT_TRUE(WriteTinyLlamaCheckpoint(dir, opts).ok());
    absl::StatusOr<Checkpoint> c = LoadHfCheckpoint(dir);
    ASSERT_TRUE(c.ok()) << c.status();
    for (const auto& [name, t] : c->tensors) EXPECT_EQ(t.dtype(), dtype) << name;
    ExpectTinyTensors(*c, opts);
    // Values stay close to the f32 draw of the same seed.
    TinyCheckpointOptions f32_opts = opts;
    f32_opts.dtype = DType::kFloat32;
    const Tensor ref = MakeTinyLlamaTensors(f32_opts)[0].second;
    const Tensor got = c->tensors.at("model.embed_tokens.weight").ToFloat32();
    for (int64_t i = 0; i < ref.numel(); ++i) {
      ASSERT_NEAR(got.data<float>()[i], ref.data<float>()[i], 1e-2) << i;
    }
  }
}

TEST(LoadHfCheckpointTest, ShardedMatchesUnsharded) {
  const std::string dir = FreshDir("sharded");
  TinyCheckpointOptions opts;
  opts.layers = 4;
  opts.sharded = true;
  opts.dtype = DType::kBFloat16;
  ASSERT_TRUE(WriteTinyLlamaCheckpoint(dir, opts).ok());
  EXPECT_FALSE(fs::exists(dir + "/model.safetensors"));
  EXPECT_TRUE(fs::exists(dir + "/model.safetensors.index.json"));
  EXPECT_TRUE(fs::exists(dir + "/model-00001-of-00002.safetensors"));
  EXPECT_TRUE(fs::exists(dir + "/model-00002-of-00002.safetensors"));
  // Both shards hold something.
  EXPECT_GT(SafetensorsFile::Open(dir + "/model-00001-of-00002.safetensors")->size(), 1u);
  EXPECT_GT(SafetensorsFile::Open(dir + "/model-00002-of-00002.safetensors")->size(), 1u);

  absl::StatusOr<Checkpoint> c = LoadHfCheckpoint(dir);
  ASSERT_TRUE(c.ok()) << c.status();
  ExpectTinyTensors(*c, opts);
}

TEST(LoadHfCheckpointTest, TiedEmbeddingsHaveNoHead) {
  const std::string dir = FreshDir("tied");
  TinyCheckpointOptions opts;
  opts.tie_embeddings = true;
  ASSERT_TRUE(WriteTinyLlamaCheckpoint(dir, opts).ok());
  absl::StatusOr<Checkpoint> c = LoadHfCheckpoint(dir);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->config.tie_word_embeddings);
  EXPECT_FALSE(c->tensors.contains("lm_head.weight"));
}

TEST(LoadHfCheckpointTest, Qwen2WithBiasesAndRopeScaling) {
  const std::string dir = FreshDir("qwen2");
  TinyCheckpointOptions opts;
  opts.model_type = "qwen2";
  opts.heads = 8;
  opts.kv_heads = 2;
  opts.head_dim = 8;
  opts.tie_embeddings = true;
  opts.rope_scaling.type = RopeScaling::Type::kYarn;
  opts.rope_scaling.factor = 4.0;
  opts.rope_scaling.original_max_position_embeddings = 128;
  ASSERT_TRUE(WriteTinyLlamaCheckpoint(dir, opts).ok());
  absl::StatusOr<Checkpoint> c = LoadHfCheckpoint(dir);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->config.architecture, "Qwen2ForCausalLM");
  EXPECT_TRUE(c->config.attention_bias);
  EXPECT_EQ(c->config.head_dim, 8);
  EXPECT_EQ(c->config.rope_scaling.type, RopeScaling::Type::kYarn);
  EXPECT_EQ(c->config.rope_scaling.original_max_position_embeddings, 128);
  EXPECT_EQ(c->tensors.at("model.layers.1.self_attn.k_proj.bias").shape(),
            (std::vector<int64_t>{16}));
  EXPECT_EQ(c->tensors.at("model.layers.0.self_attn.q_proj.weight").shape(),
            (std::vector<int64_t>{64, 32}));
  ExpectTinyTensors(*c, opts);
}

TEST(LoadHfCheckpointTest, Llama3RopeScalingSnippet) {
  const std::string dir = FreshDir("llama3");
  TinyCheckpointOptions opts;
  opts.rope_scaling.type = RopeScaling::Type::kLlama3;
  opts.rope_scaling.factor = 8.0;
  opts.rope_scaling.low_freq_factor = 1.0;
  opts.rope_scaling.high_freq_factor = 4.0;
  opts.rope_scaling.original_max_position_embeddings = 64;
  ASSERT_TRUE(WriteTinyLlamaCheckpoint(dir, opts).ok());
  absl::StatusOr<Checkpoint> c = LoadHfCheckpoint(dir);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->config.rope_scaling.type, RopeScaling::Type::kLlama3);
  EXPECT_DOUBLE_EQ(c->config.rope_scaling.factor, 8.0);
}

TEST(LoadHfCheckpointTest, InMemoryTinyCheckpointMatchesDisk) {
  TinyCheckpointOptions opts;
  opts.seed = 99;
  opts.dtype = DType::kFloat16;
  absl::StatusOr<Checkpoint> mem = MakeTinyLlamaCheckpoint(opts);
  ASSERT_TRUE(mem.ok()) << mem.status();
  const std::string dir = FreshDir("mem");
  ASSERT_TRUE(WriteTinyLlamaCheckpoint(dir, opts).ok());
  absl::StatusOr<Checkpoint> disk = LoadHfCheckpoint(dir);
  ASSERT_TRUE(disk.ok()) << disk.status();
  ASSERT_EQ(mem->tensors.size(), disk->tensors.size());
  for (const auto& [name, t] : mem->tensors) EXPECT_TRUE(SameBytes(t, disk->tensors.at(name)));
  // A different seed gives different weights.
  opts.seed = 100;
  EXPECT_FALSE(SameBytes(MakeTinyLlamaTensors(opts)[0].second,
                         mem->tensors.at("model.embed_tokens.weight")));
}

TEST(LoadHfCheckpointTest, MissingDirectory) {
  const std::string dir = FreshDir("nowhere");
  absl::Status s = LoadError(dir);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), AllOf(HasSubstr(dir), HasSubstr("does not exist")));
}

TEST(LoadHfCheckpointTest, NotADirectory) {
  const std::string path = FreshDir("plain_file");
  WriteText(path, "x");
  absl::Status s = LoadError(path);
  EXPECT_THAT(s.message(), AllOf(HasSubstr(path), HasSubstr("not a directory")));
}

TEST(LoadHfCheckpointTest, MissingConfig) {
  const std::string dir = FreshDir("no_config");
  ASSERT_TRUE(WriteTinyLlamaCheckpoint(dir, {}).ok());
  fs::remove(dir + "/config.json");
  absl::Status s = LoadError(dir);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), HasSubstr(dir + "/config.json"));
}

TEST(LoadHfCheckpointTest, MalformedConfig) {
  const std::string dir = FreshDir("bad_config");
  ASSERT_TRUE(WriteTinyLlamaCheckpoint(dir, {}).ok());
  WriteText(dir + "/config.json", "{\"model_type\": ");
  absl::Status s = LoadError(dir);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), AllOf(HasSubstr(dir + "/config.json"), HasSubstr("malformed JSON")));
}

TEST(LoadHfCheckpointTest, UnsupportedArchitectureInConfig) {
  const std::string dir = FreshDir("gpt2");
  ASSERT_TRUE(WriteTinyLlamaCheckpoint(dir, {}).ok());
  nlohmann::json config = nlohmann::json::parse(ReadText(dir + "/config.json"));
  config["architectures"] = {"GPT2LMHeadModel"};
  config.erase("model_type");
  WriteText(dir + "/config.json", config.dump());
  absl::Status s = LoadError(dir);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), AllOf(HasSubstr(dir + "/config.json"), HasSubstr("architectures"),
                                 HasSubstr("GPT2LMHeadModel")));
}

TEST(LoadHfCheckpointTest, MissingWeights) {
  const std::string dir = FreshDir("no_weights");
  ASSERT_TRUE(WriteTinyLlamaCheckpoint(dir, {}).ok());
  fs::remove(dir + "/model.safetensors");
  absl::Status s = LoadError(dir);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), AllOf(HasSubstr(dir), HasSubstr("model.safetensors"),
                                 Not(HasSubstr("pytorch_model.bin"))));
  WriteText(dir + "/pytorch_model.bin", "zip");
  s = LoadError(dir);
  EXPECT_THAT(s.message(), HasSubstr("pytorch_model.bin"));
}

TEST(LoadHfCheckpointTest, CorruptWeights) {
  const std::string dir = FreshDir("corrupt");
  ASSERT_TRUE(WriteTinyLlamaCheckpoint(dir, {}).ok());
  const std::string path = dir + "/model.safetensors";
  const std::string bytes = ReadText(path);
  WriteText(path, bytes.substr(0, bytes.size() - 100));
  absl::Status s = LoadError(dir);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), AllOf(HasSubstr(path), HasSubstr("data_offsets")));
}

TEST(LoadHfCheckpointTest, MissingTensor) {
  const std::string dir = FreshDir("missing_tensor");
  ASSERT_TRUE(WriteTinyLlamaCheckpoint(dir, {}).ok());
  EditWeights(dir, [](std::vector<std::pair<std::string, Tensor>>& tensors) {
    std::erase_if(tensors, [](const auto& p) { return p.first == "model.layers.1.mlp.up_proj.weight"; });
  });
  absl::Status s = LoadError(dir);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), AllOf(HasSubstr(dir), HasSubstr("missing tensor"),
                                 HasSubstr("\"model.layers.1.mlp.up_proj.weight\"")));
}

TEST(LoadHfCheckpointTest, MissingLmHeadWhenUntied) {
  const std::string dir = FreshDir("no_head");
  ASSERT_TRUE(WriteTinyLlamaCheckpoint(dir, {}).ok());
  EditWeights(dir, [](std::vector<std::pair<std::string, Tensor>>& tensors) {
    std::erase_if(tensors, [](const auto& p) { return p.first == "lm_head.weight"; });
  });
  absl::Status s = LoadError(dir);
  EXPECT_THAT(s.message(), AllOf(HasSubstr(dir), HasSubstr("\"lm_head.weight\"")));
}

TEST(LoadHfCheckpointTest, MissingQwenBias) {
  const std::string dir = FreshDir("missing_bias");
  TinyCheckpointOptions opts;
  opts.model_type = "qwen2";
  ASSERT_TRUE(WriteTinyLlamaCheckpoint(dir, opts).ok());
  EditWeights(dir, [](std::vector<std::pair<std::string, Tensor>>& tensors) {
    std::erase_if(tensors,
                  [](const auto& p) { return p.first == "model.layers.0.self_attn.v_proj.bias"; });
  });
  absl::Status s = LoadError(dir);
  EXPECT_THAT(s.message(), HasSubstr("\"model.layers.0.self_attn.v_proj.bias\""));
}

TEST(LoadHfCheckpointTest, WrongShape) {
  const std::string dir = FreshDir("wrong_shape");
  TinyCheckpointOptions opts;  // hidden 32, kv 2 x head_dim 8
  ASSERT_TRUE(WriteTinyLlamaCheckpoint(dir, opts).ok());
  EditWeights(dir, [](std::vector<std::pair<std::string, Tensor>>& tensors) {
    for (auto& [name, t] : tensors) {
      if (name == "model.layers.0.self_attn.k_proj.weight") {
        t = Tensor::Zeros(DType::kFloat32, {32, 32});
      }
    }
  });
  absl::Status s = LoadError(dir);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(),
              AllOf(HasSubstr(dir), HasSubstr("\"model.layers.0.self_attn.k_proj.weight\""),
                    HasSubstr("[32, 32]"), HasSubstr("expected [16, 32]")));
}

TEST(LoadHfCheckpointTest, ShardedMissingShard) {
  const std::string dir = FreshDir("missing_shard");
  TinyCheckpointOptions opts;
  opts.sharded = true;
  ASSERT_TRUE(WriteTinyLlamaCheckpoint(dir, opts).ok());
  fs::remove(dir + "/model-00002-of-00002.safetensors");
  absl::Status s = LoadError(dir);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), AllOf(HasSubstr(dir + "/model-00002-of-00002.safetensors"),
                                 HasSubstr("model.safetensors.index.json")));
}

TEST(LoadHfCheckpointTest, ShardedTensorNotInItsShard) {
  const std::string dir = FreshDir("wrong_shard");
  TinyCheckpointOptions opts;
  opts.sharded = true;
  ASSERT_TRUE(WriteTinyLlamaCheckpoint(dir, opts).ok());
  EditIndex(dir, [](nlohmann::json& index) {
    index["weight_map"]["model.norm.weight"] = "model-00001-of-00002.safetensors";
  });
  absl::Status s = LoadError(dir);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), AllOf(HasSubstr(dir + "/model-00001-of-00002.safetensors"),
                                 HasSubstr("\"model.norm.weight\"")));
}

TEST(LoadHfCheckpointTest, ShardedTensorMissingFromIndex) {
  const std::string dir = FreshDir("unmapped");
  TinyCheckpointOptions opts;
  opts.sharded = true;
  ASSERT_TRUE(WriteTinyLlamaCheckpoint(dir, opts).ok());
  EditIndex(dir, [](nlohmann::json& index) { index["weight_map"].erase("model.norm.weight"); });
  absl::Status s = LoadError(dir);
  EXPECT_THAT(s.message(), AllOf(HasSubstr(dir), HasSubstr("missing tensor \"model.norm.weight\"")));
}

TEST(LoadHfCheckpointTest, BadIndex) {
  struct Case {
    void (*edit)(nlohmann::json&);
    const char* expect;
  };
  for (const Case& c : {
           Case{[](nlohmann::json& j) { j.erase("weight_map"); }, "\"weight_map\" is missing"},
           Case{[](nlohmann::json& j) { j["weight_map"] = nlohmann::json::array(); },
                "\"weight_map\" must be"},
           Case{[](nlohmann::json& j) { j["weight_map"]["model.norm.weight"] = 3; },
                "\"model.norm.weight\" must name a file"},
           Case{[](nlohmann::json& j) { j["weight_map"]["model.norm.weight"] = "../x.safetensors"; },
                "invalid shard file"},
           Case{[](nlohmann::json& j) { j["weight_map"]["model.norm.weight"] = "/etc/passwd"; },
                "invalid shard file"},
       }) {
    const std::string dir = FreshDir("bad_index");
    TinyCheckpointOptions opts;
    opts.sharded = true;
    ASSERT_TRUE(WriteTinyLlamaCheckpoint(dir, opts).ok());
    EditIndex(dir, c.edit);
    absl::Status s = LoadError(dir);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.expect;
    EXPECT_THAT(s.message(),
                AllOf(HasSubstr(dir + "/model.safetensors.index.json"), HasSubstr(c.expect)));
  }
  const std::string dir = FreshDir("malformed_index");
  TinyCheckpointOptions opts;
  opts.sharded = true;
  ASSERT_TRUE(WriteTinyLlamaCheckpoint(dir, opts).ok());
  WriteText(dir + "/model.safetensors.index.json", "{\"weight_map\": {");
  absl::Status s = LoadError(dir);
  EXPECT_THAT(s.message(),
              AllOf(HasSubstr(dir + "/model.safetensors.index.json"), HasSubstr("malformed JSON")));
}

// A safetensors file holding one I64 tensor `name`, written by hand since
// Quest tensors cannot be I64.
void WriteI64Shard(const std::string& path, const std::string& name) {
  const std::string header =
      absl::StrCat(R"({")", name, R"(":{"dtype":"I64","shape":[2],"data_offsets":[0,16]}})");
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
  WriteText(path, bytes + header + std::string(16, '\0'));
}

TEST(LoadHfCheckpointTest, SkipsUnneededTensorsOfUnsupportedDType) {
  const std::string dir = FreshDir("i64_extra");
  TinyCheckpointOptions opts;
  opts.sharded = true;
  ASSERT_TRUE(WriteTinyLlamaCheckpoint(dir, opts).ok());
  WriteI64Shard(dir + "/extra.safetensors", "model.position_ids");
  EditIndex(dir, [](nlohmann::json& index) {
    index["weight_map"]["model.position_ids"] = "extra.safetensors";
  });
  absl::StatusOr<Checkpoint> c = LoadHfCheckpoint(dir);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FALSE(c->tensors.contains("model.position_ids"));
  ExpectTinyTensors(*c, opts);

  // A needed tensor of an unsupported dtype is an error naming it.
  WriteI64Shard(dir + "/extra.safetensors", "model.norm.weight");
  EditIndex(dir, [](nlohmann::json& index) {
    index["weight_map"].erase("model.position_ids");
    index["weight_map"]["model.norm.weight"] = "extra.safetensors";
  });
  absl::Status s = LoadError(dir);
  EXPECT_THAT(s.message(), AllOf(HasSubstr(dir + "/extra.safetensors"),
                                 HasSubstr("\"model.norm.weight\""), HasSubstr("I64")));
}

TEST(ValidateLlamaTensorsTest, AcceptsTinyCheckpointAndExtras) {
  absl::StatusOr<Checkpoint> c = MakeTinyLlamaCheckpoint({});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(ValidateLlamaTensors(*c).ok());
  c->tensors["model.layers.0.self_attn.rotary_emb.inv_freq"] = Tensor::Zeros(DType::kFloat32, {4});
  EXPECT_TRUE(ValidateLlamaTensors(*c).ok());
}

TEST(ValidateLlamaTensorsTest, ReportsMissingAndMisshapen) {
  absl::StatusOr<Checkpoint> c = MakeTinyLlamaCheckpoint({});
  ASSERT_TRUE(c.ok()) << c.status();
  c->source = "/models/tiny.gguf";

  Checkpoint missing = *c;
  missing.tensors.erase("model.norm.weight");
  missing.tensors.erase("model.embed_tokens.weight");
  absl::Status s = ValidateLlamaTensors(missing);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), AllOf(HasSubstr("/models/tiny.gguf"),
                                 HasSubstr("missing tensor \"model.embed_tokens.weight\""),
                                 HasSubstr("1 more missing"), HasSubstr("model.norm.weight")));

  Checkpoint misshapen = *c;
  misshapen.tensors["model.norm.weight"] = Tensor::Zeros(DType::kFloat32, {1, 32});
  s = ValidateLlamaTensors(misshapen);
  EXPECT_THAT(s.message(), AllOf(HasSubstr("/models/tiny.gguf"), HasSubstr("\"model.norm.weight\""),
                                 HasSubstr("[1, 32]"), HasSubstr("expected [32]")));

  Checkpoint bad_bias = *c;
  bad_bias.tensors["model.layers.1.self_attn.o_proj.bias"] = Tensor::Zeros(DType::kFloat32, {16});
  s = ValidateLlamaTensors(bad_bias);
  EXPECT_THAT(s.message(), AllOf(HasSubstr("\"model.layers.1.self_attn.o_proj.bias\""),
                                 HasSubstr("expected [32]")));

  Checkpoint bad_config = *c;
  bad_config.config.num_kv_heads = 3;
  s = ValidateLlamaTensors(bad_config);
  EXPECT_THAT(s.message(), AllOf(HasSubstr("/models/tiny.gguf"), HasSubstr("num_key_value_heads")));
}

TEST(LlamaTensorSpecsTest, CountsAndShapes) {
  LlamaConfig config = MakeTinyLlamaCheckpoint({})->config;
  EXPECT_EQ(LlamaTensorSpecs(config).size(), 2u * 9 + 3);
  config.tie_word_embeddings = true;
  EXPECT_EQ(LlamaTensorSpecs(config).size(), 2u * 9 + 2);
  config.attention_bias = true;
  const std::vector<ExpectedTensor> specs = LlamaTensorSpecs(config);
  EXPECT_EQ(specs.size(), 2u * 12 + 2);
  for (const ExpectedTensor& spec : specs) {
    if (spec.name == "model.layers.1.self_attn.o_proj.weight") {
      EXPECT_EQ(spec.shape, (std::vector<int64_t>{32, 32}));
    }
    if (spec.name == "model.layers.1.mlp.down_proj.weight") {
      EXPECT_EQ(spec.shape, (std::vector<int64_t>{32, 64}));
    }
  }
}

}  // namespace
}  // namespace quest::models
