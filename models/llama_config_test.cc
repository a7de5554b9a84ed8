#include "models/llama_config.h"

#include <cmath>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace quest::models {
namespace {

using ::testing::AllOf;
using ::testing::DoubleNear;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kSource[] = "/ckpt/config.json";

// Meta-Llama-3.1-8B's config.json.
constexpr char kLlama31[] = R"({
  "architectures": ["LlamaForCausalLM"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "bos_token_id": 128000,
  "eos_token_id": [128001, 128008, 128009],
  "hidden_act": "silu",
  "hidden_size": 4096,
  "initializer_range": 0.02,
  "intermediate_size": 14336,
  "max_position_embeddings": 131072,
  "mlp_bias": false,
  "model_type": "llama",
  "num_attention_heads": 32,
  "num_hidden_layers": 32,
  "num_key_value_heads": 8,
  "pretraining_tp": 1,
  "rms_norm_eps": 1e-05,
  "rope_scaling": {
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
    "rope_type": "llama3"
  },
  "rope_theta": 500000.0,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.43.0.dev0",
  "use_cache": true,
  "vocab_size": 128256
})";

// A minimal llama config whose fields tests replace.
std::string Base(const std::string& extra = "") {
  return R"({"model_type": "llama", "vocab_size": 100, "hidden_size": 64,
             "intermediate_size": 128, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2,
             "max_position_embeddings": 1024)" +
         extra + "}";
}

absl::Status ParseError(const std::string& json) {
  absl::StatusOr<LlamaConfig> c = ParseHfConfigJson(json, kSource);
  EXPECT_FALSE(c.ok()) << json;
  return c.status();
}

TEST(ParseHfConfigJsonTest, Llama31) {
  absl::StatusOr<LlamaConfig> c = ParseHfConfigJson(kLlama31, kSource);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->architecture, "LlamaForCausalLM");
  EXPECT_EQ(c->vocab_size, 128256);
  EXPECT_EQ(c->hidden_size, 4096);
  EXPECT_EQ(c->intermediate_size, 14336);
  EXPECT_EQ(c->num_layers, 32);
  EXPECT_EQ(c->num_heads, 32);
  EXPECT_EQ(c->num_kv_heads, 8);
  EXPECT_EQ(c->head_dim, 128);
  EXPECT_EQ(c->max_position_embeddings, 131072);
  EXPECT_DOUBLE_EQ(c->rms_norm_eps, 1e-5);
  EXPECT_DOUBLE_EQ(c->rope_theta, 500000.0);
  EXPECT_FALSE(c->tie_word_embeddings);
  EXPECT_FALSE(c->attention_bias);
  EXPECT_EQ(c->bos_token_id, 128000);
  EXPECT_THAT(c->eos_token_ids, ElementsAre(128001, 128008, 128009));
  EXPECT_EQ(c->rope_scaling.type, RopeScaling::Type::kLlama3);
  EXPECT_DOUBLE_EQ(c->rope_scaling.factor, 8.0);
  EXPECT_DOUBLE_EQ(c->rope_scaling.low_freq_factor, 1.0);
  EXPECT_DOUBLE_EQ(c->rope_scaling.high_freq_factor, 4.0);
  EXPECT_EQ(c->rope_scaling.original_max_position_embeddings, 8192);
}

TEST(ParseHfConfigJsonTest, Llama2Defaults) {
  // Llama 2 7B: no num_key_value_heads, no rope_theta, eos an int.
  absl::StatusOr<LlamaConfig> c = ParseHfConfigJson(R"({
    "architectures": ["LlamaForCausalLM"], "bos_token_id": 1, "eos_token_id": 2,
    "hidden_act": "silu", "hidden_size": 4096, "intermediate_size": 11008,
    "max_position_embeddings": 4096, "model_type": "llama",
    "num_attention_heads": 32, "num_hidden_layers": 32, "rms_norm_eps": 1e-05,
    "rope_scaling": null, "vocab_size": 32000})",
                                                    kSource);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->num_kv_heads, 32);
  EXPECT_EQ(c->head_dim, 128);
  EXPECT_DOUBLE_EQ(c->rope_theta, 10000.0);
  EXPECT_EQ(c->rope_scaling.type, RopeScaling::Type::kNone);
  EXPECT_FALSE(c->tie_word_embeddings);
  EXPECT_EQ(c->bos_token_id, 1);
  EXPECT_THAT(c->eos_token_ids, ElementsAre(2));
}

TEST(ParseHfConfigJsonTest, SmolLM) {
  absl::StatusOr<LlamaConfig> c = ParseHfConfigJson(R"({
    "architectures": ["LlamaForCausalLM"], "attention_bias": false,
    "bos_token_id": 0, "eos_token_id": 0, "hidden_act": "silu",
    "hidden_size": 576, "intermediate_size": 1536, "max_position_embeddings": 2048,
    "model_type": "llama", "num_attention_heads": 9, "num_hidden_layers": 30,
    "num_key_value_heads": 3, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
    "rope_scaling": null, "rope_theta": 10000.0, "tie_word_embeddings": true,
    "torch_dtype": "bfloat16", "vocab_size": 49152})",
                                                    kSource);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->head_dim, 64);
  EXPECT_EQ(c->num_kv_heads, 3);
  EXPECT_TRUE(c->tie_word_embeddings);
  EXPECT_EQ(c->bos_token_id, 0);
  EXPECT_THAT(c->eos_token_ids, ElementsAre(0));
}

TEST(ParseHfConfigJsonTest, MistralWithSlidingWindow) {
  absl::StatusOr<LlamaConfig> c = ParseHfConfigJson(R"({
    "architectures": ["MistralForCausalLM"], "bos_token_id": 1, "eos_token_id": 2,
    "hidden_act": "silu", "hidden_size": 4096, "intermediate_size": 14336,
    "max_position_embeddings": 32768, "model_type": "mistral",
    "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
    "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "sliding_window": 4096,
    "tie_word_embeddings": false, "vocab_size": 32000})",
                                                    kSource);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->architecture, "MistralForCausalLM");
  EXPECT_FALSE(c->attention_bias);
  EXPECT_EQ(c->num_kv_heads, 8);
}

TEST(ParseHfConfigJsonTest, Qwen2HasAttentionBiasAndYarn) {
  absl::StatusOr<LlamaConfig> c = ParseHfConfigJson(R"({
    "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0,
    "bos_token_id": 151643, "eos_token_id": 151645, "hidden_act": "silu",
    "hidden_size": 896, "intermediate_size": 4864, "max_position_embeddings": 32768,
    "max_window_layers": 21, "model_type": "qwen2", "num_attention_heads": 14,
    "num_hidden_layers": 24, "num_key_value_heads": 2, "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0, "sliding_window": 32768, "tie_word_embeddings": true,
    "use_sliding_window": false, "vocab_size": 151936,
    "rope_scaling": {"factor": 4.0, "original_max_position_embeddings": 32768, "type": "yarn"}})",
                                                    kSource);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->architecture, "Qwen2ForCausalLM");
  EXPECT_TRUE(c->attention_bias);
  EXPECT_TRUE(c->tie_word_embeddings);
  EXPECT_EQ(c->head_dim, 64);
  EXPECT_EQ(c->rope_scaling.type, RopeScaling::Type::kYarn);
  // The explicit factor wins over max_position / original (transformers >= 4.57).
  EXPECT_DOUBLE_EQ(c->rope_scaling.factor, 4.0);
  EXPECT_EQ(c->rope_scaling.original_max_position_embeddings, 32768);
  EXPECT_DOUBLE_EQ(c->rope_scaling.beta_fast, 32.0);
  EXPECT_DOUBLE_EQ(c->rope_scaling.beta_slow, 1.0);
  EXPECT_DOUBLE_EQ(c->rope_scaling.attention_factor, 0.0);  // derive from factor
}

TEST(ParseHfConfigJsonTest, ArchitectureFromModelTypeOnly) {
  absl::StatusOr<LlamaConfig> c = ParseHfConfigJson(
      absl::StrReplaceAll(Base(), {{"\"llama\"", "\"qwen2\""}}), kSource);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->architecture, "Qwen2ForCausalLM");
  EXPECT_TRUE(c->attention_bias);
}

TEST(ParseHfConfigJsonTest, ArchitectureOnly) {
  absl::StatusOr<LlamaConfig> c = ParseHfConfigJson(
      absl::StrReplaceAll(Base(), {{"\"model_type\": \"llama\"",
                                    "\"architectures\": [\"MistralForCausalLM\"]"}}),
      kSource);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->architecture, "MistralForCausalLM");
}

TEST(ParseHfConfigJsonTest, ExplicitHeadDimAndIntegralFloats) {
  absl::StatusOr<LlamaConfig> c =
      ParseHfConfigJson(Base(R"(, "head_dim": 32, "rope_theta": 10000, "vocab_size": 100.0)"),
                        kSource);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->head_dim, 32);
  EXPECT_EQ(c->vocab_size, 100);
  EXPECT_DOUBLE_EQ(c->rope_theta, 10000.0);
}

TEST(ParseHfConfigJsonTest, AttentionBiasOnLlama) {
  absl::StatusOr<LlamaConfig> c = ParseHfConfigJson(Base(R"(, "attention_bias": true)"), kSource);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->attention_bias);
}

TEST(ParseHfConfigJsonTest, RopeLinear) {
  absl::StatusOr<LlamaConfig> c =
      ParseHfConfigJson(Base(R"(, "rope_scaling": {"type": "linear", "factor": 2.0})"), kSource);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope_scaling.type, RopeScaling::Type::kLinear);
  EXPECT_DOUBLE_EQ(c->rope_scaling.factor, 2.0);
}

TEST(ParseHfConfigJsonTest, RopeDynamic) {
  absl::StatusOr<LlamaConfig> c =
      ParseHfConfigJson(Base(R"(, "rope_scaling": {"rope_type": "dynamic", "factor": 4})"), kSource);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope_scaling.type, RopeScaling::Type::kDynamic);
  EXPECT_DOUBLE_EQ(c->rope_scaling.factor, 4.0);
  EXPECT_EQ(c->rope_scaling.original_max_position_embeddings, 1024);
}

TEST(ParseHfConfigJsonTest, RopeYarnParameters) {
  absl::StatusOr<LlamaConfig> c = ParseHfConfigJson(
      Base(R"(, "rope_scaling": {"rope_type": "yarn", "factor": 8.0, "beta_fast": 64,
               "beta_slow": 2.0, "attention_factor": 1.5})"),
      kSource);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope_scaling.type, RopeScaling::Type::kYarn);
  EXPECT_DOUBLE_EQ(c->rope_scaling.factor, 8.0);
  EXPECT_DOUBLE_EQ(c->rope_scaling.beta_fast, 64.0);
  EXPECT_DOUBLE_EQ(c->rope_scaling.beta_slow, 2.0);
  EXPECT_DOUBLE_EQ(c->rope_scaling.attention_factor, 1.5);
  // No original_max_position_embeddings: max_position_embeddings is taken as
  // the pre-yarn context (transformers' backward-compatible reading).
  EXPECT_EQ(c->rope_scaling.original_max_position_embeddings, 1024);
}

TEST(ParseHfConfigJsonTest, RopeYarnFactorFromContextsAndMscale) {
  absl::StatusOr<LlamaConfig> c = ParseHfConfigJson(
      Base(R"(, "rope_scaling": {"rope_type": "yarn", "original_max_position_embeddings": 256,
               "mscale": 1.0, "mscale_all_dim": 0.5})"),
      kSource);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_DOUBLE_EQ(c->rope_scaling.factor, 4.0);  // 1024 / 256
  const double expected = (0.1 * std::log(4.0) + 1.0) / (0.05 * std::log(4.0) + 1.0);
  EXPECT_THAT(c->rope_scaling.attention_factor, DoubleNear(expected, 1e-12));
}

TEST(ParseHfConfigJsonTest, RopeDefaultAndNull) {
  for (const char* spec : {R"(null)", R"({"rope_type": "default"})", R"({"type": "default"})"}) {
    absl::StatusOr<LlamaConfig> c =
        ParseHfConfigJson(Base(std::string(R"(, "rope_scaling": )") + spec), kSource);
    ASSERT_TRUE(c.ok()) << spec << ": " << c.status();
    EXPECT_EQ(c->rope_scaling.type, RopeScaling::Type::kNone) << spec;
  }
}

TEST(ParseHfConfigJsonTest, RopeParametersV5Layout) {
  absl::StatusOr<LlamaConfig> c = ParseHfConfigJson(
      Base(R"(, "rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 500000.0})"),
      kSource);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope_scaling.type, RopeScaling::Type::kLinear);
  EXPECT_DOUBLE_EQ(c->rope_theta, 500000.0);
}

TEST(ParseHfConfigJsonTest, MalformedJson) {
  absl::Status s = ParseError(R"({"model_type": "llama",)");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), AllOf(HasSubstr(kSource), HasSubstr("malformed JSON")));
}

TEST(ParseHfConfigJsonTest, NotAnObject) {
  absl::Status s = ParseError("[1, 2]");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), AllOf(HasSubstr(kSource), HasSubstr("object")));
}

TEST(ParseHfConfigJsonTest, UnsupportedArchitecture) {
  absl::Status s = ParseError(absl::StrReplaceAll(
      Base(), {{"\"model_type\": \"llama\"", "\"architectures\": [\"GPT2LMHeadModel\"]"}}));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(),
              AllOf(HasSubstr(kSource), HasSubstr("architectures"), HasSubstr("GPT2LMHeadModel")));
}

TEST(ParseHfConfigJsonTest, UnsupportedArchitectureWithSupportedModelType) {
  absl::Status s = ParseError(Base(R"(, "architectures": ["GPT2LMHeadModel"])"));
  EXPECT_THAT(s.message(),
              AllOf(HasSubstr(kSource), HasSubstr("architectures"), HasSubstr("GPT2LMHeadModel")));
}

TEST(ParseHfConfigJsonTest, UnsupportedModelType) {
  absl::Status s = ParseError(absl::StrReplaceAll(Base(), {{"\"llama\"", "\"gpt2\""}}));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), AllOf(HasSubstr(kSource), HasSubstr("model_type"), HasSubstr("gpt2")));
}

TEST(ParseHfConfigJsonTest, NoArchitectureAtAll) {
  absl::Status s =
      ParseError(absl::StrReplaceAll(Base(), {{"\"model_type\": \"llama\",", ""}}));
  EXPECT_THAT(s.message(), AllOf(HasSubstr(kSource), HasSubstr("model_type")));
}

TEST(ParseHfConfigJsonTest, UnknownRopeType) {
  absl::Status s = ParseError(Base(R"(, "rope_scaling": {"rope_type": "longrope", "factor": 2.0})"));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), AllOf(HasSubstr(kSource), HasSubstr("rope_scaling.rope_type"),
                                 HasSubstr("longrope")));
  s = ParseError(Base(R"(, "rope_scaling": {"type": "su", "factor": 2.0})"));
  EXPECT_THAT(s.message(),
              AllOf(HasSubstr(kSource), HasSubstr("rope_scaling.type"), HasSubstr("su")));
}

TEST(ParseHfConfigJsonTest, RopeScalingErrors) {
  struct Case {
    const char* spec;
    const char* field;
  };
  for (const Case& c : {
           Case{R"({"factor": 2.0})", "rope_scaling.rope_type"},
           Case{R"("linear")", "rope_scaling"},
           Case{R"({"rope_type": "linear"})", "rope_scaling.factor"},
           Case{R"({"rope_type": "linear", "factor": "2"})", "rope_scaling.factor"},
           Case{R"({"rope_type": "linear", "factor": -2})", "rope_scaling.factor"},
           Case{R"({"rope_type": "dynamic"})", "rope_scaling.factor"},
           Case{R"({"rope_type": "yarn"})", "rope_scaling.factor"},
           Case{R"({"rope_type": "llama3", "factor": 8.0, "high_freq_factor": 4.0,
                    "original_max_position_embeddings": 8192})",
                "rope_scaling.low_freq_factor"},
           Case{R"({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                    "original_max_position_embeddings": 8192})",
                "rope_scaling.high_freq_factor"},
           Case{R"({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                    "high_freq_factor": 4.0})",
                "rope_scaling.original_max_position_embeddings"},
           Case{R"({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0,
                    "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})",
                "rope_scaling.high_freq_factor"},
       }) {
    absl::Status s = ParseError(Base(std::string(R"(, "rope_scaling": )") + c.spec));
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.spec;
    EXPECT_THAT(s.message(), AllOf(HasSubstr(kSource), HasSubstr(c.field))) << c.spec;
  }
}

TEST(ParseHfConfigJsonTest, HiddenNotDivisibleByHeads) {
  absl::Status s =
      ParseError(absl::StrReplaceAll(Base(), {{"\"hidden_size\": 64", "\"hidden_size\": 66"}}));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), AllOf(HasSubstr(kSource), HasSubstr("hidden_size"),
                                 HasSubstr("num_attention_heads")));
}

TEST(ParseHfConfigJsonTest, HeadsNotMultipleOfKvHeads) {
  absl::Status s = ParseError(absl::StrReplaceAll(
      Base(), {{"\"num_key_value_heads\": 2", "\"num_key_value_heads\": 3"}}));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), AllOf(HasSubstr(kSource), HasSubstr("num_key_value_heads")));
}

TEST(ParseHfConfigJsonTest, NonPositiveSizes) {
  for (const char* field : {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                            "num_attention_heads", "num_key_value_heads",
                            "max_position_embeddings", "head_dim"}) {
    for (const char* value : {"0", "-4"}) {
      absl::Status s = ParseError(Base(absl::StrCat(", \"", field, "\": ", value)));
      EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << field << "=" << value;
      EXPECT_THAT(s.message(), AllOf(HasSubstr(kSource), HasSubstr(field)))
          << field << "=" << value;
    }
  }
}

TEST(ParseHfConfigJsonTest, MissingRequiredField) {
  for (const char* field : {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                            "num_attention_heads", "max_position_embeddings"}) {
    // Drop `"field": N` from Base().
    std::string json = Base();
    const std::string key = absl::StrCat("\"", field, "\"");
    const size_t at = json.find(key);
    ASSERT_NE(at, std::string::npos);
    const size_t end = json.find_first_of(",}", at);
    if (json[end] == ',') {
      json.erase(at, end - at + 1);
    } else {  // the last field: drop the comma before it
      const size_t comma = json.rfind(',', at);
      json.erase(comma, end - comma);
    }
    absl::Status s = ParseError(json);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << field;
    EXPECT_THAT(s.message(), AllOf(HasSubstr(kSource), HasSubstr(field), HasSubstr("missing")))
        << json;
  }
}

TEST(ParseHfConfigJsonTest, MistypedFields) {
  struct Case {
    const char* extra;
    const char* field;
  };
  for (const Case& c : {
           Case{R"(, "hidden_size": "64")", "hidden_size"},
           Case{R"(, "num_hidden_layers": 2.5)", "num_hidden_layers"},
           Case{R"(, "rms_norm_eps": "1e-5")", "rms_norm_eps"},
           Case{R"(, "rope_theta": [1])", "rope_theta"},
           Case{R"(, "tie_word_embeddings": 1)", "tie_word_embeddings"},
           Case{R"(, "eos_token_id": "2")", "eos_token_id"},
           Case{R"(, "eos_token_id": [2, "x"])", "eos_token_id"},
           Case{R"(, "bos_token_id": -5)", "bos_token_id"},
           Case{R"(, "architectures": "LlamaForCausalLM")", "architectures"},
           Case{R"(, "mlp_bias": true)", "mlp_bias"},
           Case{R"(, "hidden_act": "gelu")", "hidden_act"},
       }) {
    absl::Status s = ParseError(Base(c.extra));
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.extra;
    EXPECT_THAT(s.message(), AllOf(HasSubstr(kSource), HasSubstr(c.field))) << c.extra;
  }
}

TEST(ValidateLlamaConfigTest, AcceptsGoodConfig) {
  absl::StatusOr<LlamaConfig> c = ParseHfConfigJson(kLlama31, kSource);
  ASSERT_TRUE(c.ok());
  EXPECT_TRUE(ValidateLlamaConfig(*c, "x.gguf").ok());
}

// GGUF's rope_freqs (RopeScaling::freq_factors): one positive divisor per
// frequency.
TEST(ValidateLlamaConfigTest, ChecksFreqFactors) {
  LlamaConfig c = *ParseHfConfigJson(Base(), kSource);
  const int64_t half = c.head_dim / 2;
  c.rope_scaling.freq_factors.assign(half, 2.0f);
  EXPECT_TRUE(ValidateLlamaConfig(c, "m.gguf").ok());
  c.rope_scaling.freq_factors.pop_back();
  absl::Status s = ValidateLlamaConfig(c, "m.gguf");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), AllOf(HasSubstr("m.gguf"), HasSubstr("rope_scaling.freq_factors"),
                                 HasSubstr(absl::StrCat("needs ", half))));
  c.rope_scaling.freq_factors.assign(half, 2.0f);
  c.rope_scaling.freq_factors[1] = 0.0f;
  EXPECT_THAT(ValidateLlamaConfig(c, "m.gguf").message(), HasSubstr("[1] must be positive"));
  c.rope_scaling.freq_factors[1] = std::nanf("");
  EXPECT_EQ(ValidateLlamaConfig(c, "m.gguf").code(), absl::StatusCode::kInvalidArgument);
}

TEST(ValidateLlamaConfigTest, RejectsDefaultConfig) {
  absl::Status s = ValidateLlamaConfig(LlamaConfig(), "model.gguf");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), AllOf(HasSubstr("model.gguf"), HasSubstr("vocab_size")));
}

TEST(ValidateLlamaConfigTest, RejectsInconsistencies) {
  LlamaConfig good = *ParseHfConfigJson(Base(), kSource);
  ASSERT_TRUE(ValidateLlamaConfig(good, "m.gguf").ok());

  LlamaConfig c = good;
  c.head_dim = 15;
  EXPECT_THAT(ValidateLlamaConfig(c, "m.gguf").message(),
              AllOf(HasSubstr("m.gguf"), HasSubstr("head_dim")));
  c = good;
  c.num_kv_heads = 3;
  EXPECT_THAT(ValidateLlamaConfig(c, "m.gguf").message(), HasSubstr("num_key_value_heads"));
  c = good;
  c.rms_norm_eps = 0;
  EXPECT_THAT(ValidateLlamaConfig(c, "m.gguf").message(), HasSubstr("rms_norm_eps"));
  c = good;
  c.rope_theta = -1;
  EXPECT_THAT(ValidateLlamaConfig(c, "m.gguf").message(), HasSubstr("rope_theta"));
  c = good;
  c.rope_scaling.type = RopeScaling::Type::kLlama3;
  c.rope_scaling.factor = 8;
  EXPECT_THAT(ValidateLlamaConfig(c, "m.gguf").message(),
              HasSubstr("rope_scaling.original_max_position_embeddings"));
  c.rope_scaling.original_max_position_embeddings = 8192;
  EXPECT_TRUE(ValidateLlamaConfig(c, "m.gguf").ok());
  c.rope_scaling.factor = 0;
  EXPECT_THAT(ValidateLlamaConfig(c, "m.gguf").message(), HasSubstr("rope_scaling.factor"));
}

// A valid config with a value in every field, for the round trips.
LlamaConfig FullConfig() {
  LlamaConfig c;
  c.architecture = "LlamaForCausalLM";
  c.vocab_size = 100;
  c.hidden_size = 64;
  c.intermediate_size = 128;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 32;
  c.max_position_embeddings = 1024;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 500000.0;
  c.tie_word_embeddings = true;
  c.attention_bias = true;
  c.bos_token_id = 1;
  c.eos_token_ids = {2, 7, 9};
  return c;
}

void ExpectRoundTrip(const LlamaConfig& c) {
  const std::string json = LlamaConfigToHfJson(c, DType::kBFloat16);
  absl::StatusOr<LlamaConfig> parsed = ParseHfConfigJson(json, kSource);
  ASSERT_TRUE(parsed.ok()) << parsed.status() << "\n" << json;
  EXPECT_TRUE(*parsed == c) << json;
}

TEST(LlamaConfigToHfJsonTest, RoundTripsEachRopeScalingType) {
  using Type = RopeScaling::Type;
  for (const RopeScaling& rope : {
           RopeScaling{},
           RopeScaling{.type = Type::kLinear, .factor = 2.5},
           RopeScaling{.type = Type::kDynamic, .factor = 4.0,
                       .original_max_position_embeddings = 512},
           RopeScaling{.type = Type::kYarn, .factor = 4.0,
                       .original_max_position_embeddings = 256, .beta_fast = 16.0,
                       .beta_slow = 2.0},
           RopeScaling{.type = Type::kYarn, .factor = 4.0,
                       .original_max_position_embeddings = 256, .attention_factor = 1.25},
           RopeScaling{.type = Type::kLlama3, .factor = 8.0,
                       .original_max_position_embeddings = 8192, .low_freq_factor = 1.0,
                       .high_freq_factor = 4.0},
       }) {
    SCOPED_TRACE(static_cast<int>(rope.type));
    LlamaConfig c = FullConfig();
    c.rope_scaling = rope;
    ExpectRoundTrip(c);
  }
}

TEST(LlamaConfigToHfJsonTest, RoundTripsFamiliesAndSpecialTokens) {
  LlamaConfig c = FullConfig();
  c.architecture = "MistralForCausalLM";
  c.attention_bias = false;
  ExpectRoundTrip(c);
  c.architecture = "Qwen2ForCausalLM";
  c.attention_bias = true;  // Implied by Qwen2.
  ExpectRoundTrip(c);

  c = FullConfig();
  c.bos_token_id = -1;
  c.eos_token_ids = {};
  ExpectRoundTrip(c);
  c.eos_token_ids = {5};
  ExpectRoundTrip(c);
}

TEST(LlamaConfigToHfJsonTest, RoundTripsParsedConfig) {
  absl::StatusOr<LlamaConfig> c = ParseHfConfigJson(kLlama31, kSource);
  ASSERT_TRUE(c.ok()) << c.status();
  ExpectRoundTrip(*c);
}

TEST(LlamaConfigToHfJsonTest, WritesTransformersFields) {
  LlamaConfig c = FullConfig();
  c.architecture = "Qwen2ForCausalLM";
  const std::string json = LlamaConfigToHfJson(c, DType::kFloat16);
  EXPECT_THAT(json, AllOf(HasSubstr(R"("model_type": "qwen2")"),
                          HasSubstr(R"("architectures": [
    "Qwen2ForCausalLM"
  ])"),
                          HasSubstr(R"("torch_dtype": "float16")"),
                          HasSubstr(R"("hidden_act": "silu")"),
                          HasSubstr(R"("head_dim": 32)")));
  EXPECT_THAT(json, Not(HasSubstr("attention_bias")));
  EXPECT_THAT(LlamaConfigToHfJson(FullConfig(), DType::kFloat32),
              AllOf(HasSubstr(R"("model_type": "llama")"), HasSubstr(R"("attention_bias": true)"),
                    HasSubstr(R"("torch_dtype": "float32")")));
}

}  // namespace
}  // namespace quest::models
