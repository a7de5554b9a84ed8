#include "models/llama_config.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "glog/logging.h"
#include "models/status_macros.h"
#include "nlohmann/json.hpp"

namespace quest::models {
namespace {

using json = nlohmann::json;

// A short rendering of a JSON value for messages.
std::string Show(const json& value) {
  std::string s = value.dump();
  if (s.size() > 80) s = absl::StrCat(s.substr(0, 77), "...");
  return s;
}

absl::Status FieldError(absl::string_view source, absl::string_view field,
                        absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(source, ": field \"", field, "\" ", what));
}

// Reads fields of one JSON object, naming `source` and the field (with
// `prefix`, e.g. "rope_scaling.") in every error. A field that is absent or
// null reads as std::nullopt.
class FieldReader {
 public:
  FieldReader(const json& object, absl::string_view source, std::string prefix = "")
      : object_(object), source_(source), prefix_(std::move(prefix)) {}

  bool Has(const char* name) const {
    auto it = object_.find(name);
    return it != object_.end() && !it->is_null();
  }

  absl::Status Error(const char* name, absl::string_view what) const {
    return FieldError(source_, absl::StrCat(prefix_, name), what);
  }

  absl::StatusOr<std::optional<int64_t>> Int(const char* name) const {
    auto it = object_.find(name);
    if (it == object_.end() || it->is_null()) return std::optional<int64_t>();
    if (it->is_number_unsigned()) {
      const uint64_t v = it->get<uint64_t>();
      if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return Error(name, absl::StrCat("is out of range: ", Show(*it)));
      }
      return std::optional<int64_t>(static_cast<int64_t>(v));
    }
    if (it->is_number_integer()) return std::optional<int64_t>(it->get<int64_t>());
    if (it->is_number_float()) {
      // Some exporters write integers as 4096.0; accept integral values.
      const double d = it->get<double>();
      if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9.0e15) {
        return std::optional<int64_t>(static_cast<int64_t>(d));
      }
    }
    return Error(name, absl::StrCat("must be an integer, got ", Show(*it)));
  }

  absl::StatusOr<int64_t> RequiredInt(const char* name) const {
    absl::StatusOr<std::optional<int64_t>> v = Int(name);
    if (!v.ok()) return v.status();
    if (!v->has_value()) return Error(name, "is missing");
    return **v;
  }

  absl::StatusOr<std::optional<double>> Double(const char* name) const {
    auto it = object_.find(name);
    if (it == object_.end() || it->is_null()) return std::optional<double>();
    if (!it->is_number()) return Error(name, absl::StrCat("must be a number, got ", Show(*it)));
    const double d = it->get<double>();
    if (!std::isfinite(d)) return Error(name, absl::StrCat("must be finite, got ", Show(*it)));
    return std::optional<double>(d);
  }

  absl::StatusOr<std::optional<bool>> Bool(const char* name) const {
    auto it = object_.find(name);
    if (it == object_.end() || it->is_null()) return std::optional<bool>();
    if (!it->is_boolean()) {
      return Error(name, absl::StrCat("must be true or false, got ", Show(*it)));
    }
    return std::optional<bool>(it->get<bool>());
  }

  absl::StatusOr<std::optional<std::string>> String(const char* name) const {
    auto it = object_.find(name);
    if (it == object_.end() || it->is_null()) return std::optional<std::string>();
    if (!it->is_string()) return Error(name, absl::StrCat("must be a string, got ", Show(*it)));
    return std::optional<std::string>(it->get<std::string>());
  }

 private:
  const json& object_;
  absl::string_view source_;
  std::string prefix_;
};

enum class Family { kLlama, kMistral, kQwen2 };

struct FamilyName {
  const char* model_type;
  const char* architecture;
  Family family;
};

constexpr FamilyName kFamilies[] = {
    {"llama", "LlamaForCausalLM", Family::kLlama},
    {"mistral", "MistralForCausalLM", Family::kMistral},
    {"qwen2", "Qwen2ForCausalLM", Family::kQwen2},
};

constexpr const char* kSupportedModelTypes = "llama, mistral, qwen2";
constexpr const char* kSupportedArchitectures =
    "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM";

const FamilyName* FamilyByModelType(absl::string_view model_type) {
  for (const FamilyName& f : kFamilies) {
    if (model_type == f.model_type) return &f;
  }
  return nullptr;
}

const FamilyName* FamilyByArchitecture(absl::string_view architecture) {
  // "LLaMAForCausalLM" is what very old Llama conversions wrote.
  if (architecture == "LLaMAForCausalLM") return &kFamilies[0];
  for (const FamilyName& f : kFamilies) {
    if (architecture == f.architecture) return &f;
  }
  return nullptr;
}

// YaRN's default attention scaling (get_mscale in transformers).
double YarnMscale(double scale, double mscale) {
  if (scale <= 1.0) return 1.0;
  return 0.1 * mscale * std::log(scale) + 1.0;
}

// Parses `rope_scaling` (or transformers v5's `rope_parameters`), following
// transformers' modeling_rope_utils.py.
absl::Status ParseRopeScaling(const json& spec, const std::string& field,
                              int64_t max_position_embeddings, absl::string_view source,
                              RopeScaling* out) {
  *out = RopeScaling();
  if (spec.is_null()) return absl::OkStatus();
  if (!spec.is_object()) {
    return FieldError(source, field, absl::StrCat("must be null or an object, got ", Show(spec)));
  }
  FieldReader r(spec, source, field + ".");
  // BC: "rope_type" was originally "type"; rope_type wins when both appear.
  MODELS_ASSIGN_OR_RETURN(std::optional<std::string> rope_type, r.String("rope_type"));
  const char* type_field = "rope_type";
  if (!rope_type.has_value()) {
    MODELS_ASSIGN_OR_RETURN(rope_type, r.String("type"));
    type_field = "type";
  }
  if (!rope_type.has_value()) {
    // transformers v5 writes {"rope_type": "default", "rope_theta": ...}; an
    // object naming no type at all is an error in transformers too.
    return r.Error("rope_type", "is missing (neither \"rope_type\" nor \"type\" is set)");
  }
  MODELS_ASSIGN_OR_RETURN(std::optional<double> factor, r.Double("factor"));
  MODELS_ASSIGN_OR_RETURN(std::optional<int64_t> original, r.Int("original_max_position_embeddings"));
  if (original.has_value() && *original <= 0) {
    return r.Error("original_max_position_embeddings",
                   absl::StrCat("must be positive, got ", *original));
  }
  if (factor.has_value() && *factor <= 0) {
    return r.Error("factor", absl::StrCat("must be positive, got ", *factor));
  }

  const std::string& type = *rope_type;
  if (type == "default") return absl::OkStatus();
  if (type == "linear") {
    if (!factor.has_value()) return r.Error("factor", "is missing (required for rope type linear)");
    out->type = RopeScaling::Type::kLinear;
    out->factor = *factor;
    return absl::OkStatus();
  }
  if (type == "dynamic") {
    if (!factor.has_value()) {
      return r.Error("factor", "is missing (required for rope type dynamic)");
    }
    out->type = RopeScaling::Type::kDynamic;
    out->factor = *factor;
    // transformers grows the base once the sequence passes
    // max_position_embeddings.
    out->original_max_position_embeddings = original.value_or(max_position_embeddings);
    return absl::OkStatus();
  }
  if (type == "yarn") {
    out->type = RopeScaling::Type::kYarn;
    out->original_max_position_embeddings = original.value_or(max_position_embeddings);
    if (factor.has_value()) {
      out->factor = *factor;
    } else if (original.has_value()) {
      out->factor = static_cast<double>(max_position_embeddings) / static_cast<double>(*original);
    } else {
      return r.Error("factor", "is missing (required for rope type yarn)");
    }
    MODELS_ASSIGN_OR_RETURN(std::optional<double> attention_factor, r.Double("attention_factor"));
    MODELS_ASSIGN_OR_RETURN(std::optional<double> beta_fast, r.Double("beta_fast"));
    MODELS_ASSIGN_OR_RETURN(std::optional<double> beta_slow, r.Double("beta_slow"));
    MODELS_ASSIGN_OR_RETURN(std::optional<double> mscale, r.Double("mscale"));
    MODELS_ASSIGN_OR_RETURN(std::optional<double> mscale_all_dim, r.Double("mscale_all_dim"));
    MODELS_ASSIGN_OR_RETURN(std::optional<bool> truncate, r.Bool("truncate"));
    if (truncate.has_value() && !*truncate) {
      return r.Error("truncate", "= false is not supported");
    }
    if (attention_factor.has_value()) {
      if (*attention_factor <= 0) {
        return r.Error("attention_factor", absl::StrCat("must be positive, got ", *attention_factor));
      }
      out->attention_factor = *attention_factor;
    } else if (mscale.value_or(0) != 0 && mscale_all_dim.value_or(0) != 0) {
      out->attention_factor =
          YarnMscale(out->factor, *mscale) / YarnMscale(out->factor, *mscale_all_dim);
    }
    // transformers: `get("beta_fast") or 32`, so 0 also means the default.
    if (beta_fast.value_or(0) != 0) out->beta_fast = *beta_fast;
    if (beta_slow.value_or(0) != 0) out->beta_slow = *beta_slow;
    return absl::OkStatus();
  }
  if (type == "llama3") {
    out->type = RopeScaling::Type::kLlama3;
    MODELS_ASSIGN_OR_RETURN(std::optional<double> low, r.Double("low_freq_factor"));
    MODELS_ASSIGN_OR_RETURN(std::optional<double> high, r.Double("high_freq_factor"));
    if (!factor.has_value()) return r.Error("factor", "is missing (required for rope type llama3)");
    if (!low.has_value()) {
      return r.Error("low_freq_factor", "is missing (required for rope type llama3)");
    }
    if (!high.has_value()) {
      return r.Error("high_freq_factor", "is missing (required for rope type llama3)");
    }
    if (!original.has_value()) {
      return r.Error("original_max_position_embeddings",
                     "is missing (required for rope type llama3)");
    }
    out->factor = *factor;
    out->low_freq_factor = *low;
    out->high_freq_factor = *high;
    out->original_max_position_embeddings = *original;
    return absl::OkStatus();
  }
  return r.Error(type_field,
                 absl::StrCat("names unsupported rope scaling type \"", type,
                              "\" (supported: default, linear, dynamic, yarn, llama3)"));
}

// The inverse of ParseRopeScaling.
json RopeScalingJson(const RopeScaling& s) {
  switch (s.type) {
    case RopeScaling::Type::kNone: return nullptr;
    case RopeScaling::Type::kLinear: return {{"rope_type", "linear"}, {"factor", s.factor}};
    case RopeScaling::Type::kDynamic: {
      json j = {{"rope_type", "dynamic"}, {"factor", s.factor}};
      if (s.original_max_position_embeddings > 0) {
        j["original_max_position_embeddings"] = s.original_max_position_embeddings;
      }
      return j;
    }
    case RopeScaling::Type::kYarn: {
      json j = {{"rope_type", "yarn"},
                {"factor", s.factor},
                {"original_max_position_embeddings", s.original_max_position_embeddings},
                {"beta_fast", s.beta_fast},
                {"beta_slow", s.beta_slow}};
      if (s.attention_factor > 0) j["attention_factor"] = s.attention_factor;
      return j;
    }
    case RopeScaling::Type::kLlama3:
      return {{"rope_type", "llama3"},
              {"factor", s.factor},
              {"low_freq_factor", s.low_freq_factor},
              {"high_freq_factor", s.high_freq_factor},
              {"original_max_position_embeddings", s.original_max_position_embeddings}};
  }
  return nullptr;
}

const char* TorchDTypeName(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return "float32";
    case DType::kFloat16: return "float16";
    case DType::kBFloat16: return "bfloat16";
    case DType::kInt32: return "int32";
    case DType::kFloat8E4M3: return "float8_e4m3fn";
  }
  return "float32";
}

}  // namespace

absl::StatusOr<LlamaConfig> ParseHfConfigJson(absl::string_view json_text,
                                              absl::string_view source) {
  json root;
  try {
    root = json::parse(json_text.begin(), json_text.end());
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": malformed JSON: ", e.what()));
  }
  if (!root.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": expected a JSON object at the top level, got ", Show(root)));
  }
  // Everything below reads through FieldReader and does not throw, but keep
  // the boundary exception-free whatever happens.
  try {
    FieldReader r(root, source);
    LlamaConfig config;

    // Architecture: model_type decides the family (as AutoModel does);
    // architectures, when present, must name a supported class too.
    MODELS_ASSIGN_OR_RETURN(std::optional<std::string> model_type, r.String("model_type"));
    const FamilyName* family = nullptr;
    if (model_type.has_value()) {
      family = FamilyByModelType(*model_type);
      if (family == nullptr) {
        return r.Error("model_type", absl::StrCat("names unsupported model type \"", *model_type,
                                                  "\" (supported: ", kSupportedModelTypes, ")"));
      }
    }
    if (r.Has("architectures")) {
      const json& archs = root["architectures"];
      if (!archs.is_array() || archs.empty()) {
        return r.Error("architectures",
                       absl::StrCat("must be a non-empty list of strings, got ", Show(archs)));
      }
      const FamilyName* arch_family = nullptr;
      std::string arch_name;
      for (const json& a : archs) {
        if (!a.is_string()) {
          return r.Error("architectures",
                         absl::StrCat("must be a list of strings, got ", Show(archs)));
        }
        arch_family = FamilyByArchitecture(a.get<std::string>());
        if (arch_family != nullptr) {
          arch_name = a.get<std::string>();
          break;
        }
      }
      if (arch_family == nullptr) {
        return r.Error("architectures",
                       absl::StrCat("names no supported architecture: ", Show(archs),
                                    " (supported: ", kSupportedArchitectures, ")"));
      }
      if (family == nullptr) family = arch_family;
      config.architecture = arch_name == "LLaMAForCausalLM" ? "LlamaForCausalLM" : arch_name;
    } else if (family != nullptr) {
      config.architecture = family->architecture;
    }
    if (family == nullptr) {
      return r.Error("model_type",
                     "is missing, and so is \"architectures\": cannot tell the architecture");
    }

    MODELS_ASSIGN_OR_RETURN(config.vocab_size, r.RequiredInt("vocab_size"));
    MODELS_ASSIGN_OR_RETURN(config.hidden_size, r.RequiredInt("hidden_size"));
    MODELS_ASSIGN_OR_RETURN(config.intermediate_size, r.RequiredInt("intermediate_size"));
    MODELS_ASSIGN_OR_RETURN(config.num_layers, r.RequiredInt("num_hidden_layers"));
    MODELS_ASSIGN_OR_RETURN(config.num_heads, r.RequiredInt("num_attention_heads"));
    MODELS_ASSIGN_OR_RETURN(std::optional<int64_t> kv_heads, r.Int("num_key_value_heads"));
    config.num_kv_heads = kv_heads.value_or(config.num_heads);
    MODELS_ASSIGN_OR_RETURN(config.max_position_embeddings, r.RequiredInt("max_position_embeddings"));

    // Fail on the sizes before deriving head_dim from them.
    if (config.num_heads <= 0) {
      return r.Error("num_attention_heads", absl::StrCat("must be positive, got ", config.num_heads));
    }
    if (config.hidden_size <= 0) {
      return r.Error("hidden_size", absl::StrCat("must be positive, got ", config.hidden_size));
    }
    MODELS_ASSIGN_OR_RETURN(std::optional<int64_t> head_dim, r.Int("head_dim"));
    config.head_dim = head_dim.value_or(config.hidden_size / config.num_heads);

    MODELS_ASSIGN_OR_RETURN(std::optional<double> eps, r.Double("rms_norm_eps"));
    if (eps.has_value()) config.rms_norm_eps = *eps;

    MODELS_ASSIGN_OR_RETURN(std::optional<bool> tie, r.Bool("tie_word_embeddings"));
    config.tie_word_embeddings = tie.value_or(false);

    if (family->family == Family::kQwen2) {
      // Qwen2Attention always has q/k/v biases (and none on o_proj).
      config.attention_bias = true;
    } else {
      MODELS_ASSIGN_OR_RETURN(std::optional<bool> bias, r.Bool("attention_bias"));
      config.attention_bias = bias.value_or(false);
    }
    MODELS_ASSIGN_OR_RETURN(std::optional<bool> mlp_bias, r.Bool("mlp_bias"));
    if (mlp_bias.value_or(false)) return r.Error("mlp_bias", "= true is not supported");

    MODELS_ASSIGN_OR_RETURN(std::optional<std::string> act, r.String("hidden_act"));
    if (act.has_value() && *act != "silu" && *act != "swish") {
      return r.Error("hidden_act",
                     absl::StrCat("names unsupported activation \"", *act, "\" (supported: silu)"));
    }

    // Sliding-window attention (Mistral v0.1, some Qwen2 configs) is not
    // modelled; the runtime attends to the whole context.
    MODELS_ASSIGN_OR_RETURN(std::optional<int64_t> sliding_window, r.Int("sliding_window"));
    MODELS_ASSIGN_OR_RETURN(std::optional<bool> use_sliding_window, r.Bool("use_sliding_window"));
    if (sliding_window.has_value() && use_sliding_window.value_or(true) &&
        *sliding_window < config.max_position_embeddings) {
      LOG(WARNING) << source << ": sliding_window=" << *sliding_window
                   << " is ignored; attention covers the whole context";
    }

    // RoPE. transformers v5 moved rope_theta and the scaling into
    // "rope_parameters"; accept either layout.
    const json* rope_spec = nullptr;
    std::string rope_field = "rope_scaling";
    if (r.Has("rope_scaling")) {
      rope_spec = &root["rope_scaling"];
    } else if (r.Has("rope_parameters")) {
      rope_spec = &root["rope_parameters"];
      rope_field = "rope_parameters";
    }
    MODELS_ASSIGN_OR_RETURN(std::optional<double> theta, r.Double("rope_theta"));
    if (!theta.has_value() && rope_field == "rope_parameters" && rope_spec->is_object()) {
      FieldReader rp(*rope_spec, source, "rope_parameters.");
      MODELS_ASSIGN_OR_RETURN(theta, rp.Double("rope_theta"));
    }
    config.rope_theta = theta.value_or(10000.0);
    if (rope_spec != nullptr) {
      absl::Status s = ParseRopeScaling(*rope_spec, rope_field, config.max_position_embeddings,
                                        source, &config.rope_scaling);
      if (!s.ok()) return s;
    }

    // Special tokens.
    MODELS_ASSIGN_OR_RETURN(std::optional<int64_t> bos, r.Int("bos_token_id"));
    if (bos.has_value()) {
      if (*bos < 0 || *bos > std::numeric_limits<int32_t>::max()) {
        return r.Error("bos_token_id", absl::StrCat("is out of range: ", *bos));
      }
      config.bos_token_id = static_cast<int32_t>(*bos);
    }
    if (r.Has("eos_token_id")) {
      const json& eos = root["eos_token_id"];
      std::vector<json> items;
      if (eos.is_array()) {
        items.assign(eos.begin(), eos.end());
      } else {
        items.push_back(eos);
      }
      for (const json& item : items) {
        if (!item.is_number_integer() || item.get<int64_t>() < 0 ||
            item.get<int64_t>() > std::numeric_limits<int32_t>::max()) {
          return r.Error("eos_token_id",
                         absl::StrCat("must be a token id or a list of token ids, got ", Show(eos)));
        }
        config.eos_token_ids.push_back(static_cast<int32_t>(item.get<int64_t>()));
      }
    }

    absl::Status valid = ValidateLlamaConfig(config, source);
    if (!valid.ok()) return valid;
    return config;
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": bad config: ", e.what()));
  }
}

std::string LlamaConfigToHfJson(const LlamaConfig& c, DType torch_dtype) {
  const FamilyName* family = FamilyByArchitecture(c.architecture);
  json j;
  j["architectures"] = {c.architecture};
  if (family != nullptr) j["model_type"] = family->model_type;
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_hidden_layers"] = c.num_layers;
  j["num_attention_heads"] = c.num_heads;
  j["num_key_value_heads"] = c.num_kv_heads;
  j["head_dim"] = c.head_dim;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["rope_theta"] = c.rope_theta;
  j["rope_scaling"] = RopeScalingJson(c.rope_scaling);
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  // Qwen2 always has q/k/v biases; its config has no such field.
  if (family == nullptr || family->family != Family::kQwen2) {
    j["attention_bias"] = c.attention_bias;
  }
  j["bos_token_id"] = c.bos_token_id >= 0 ? json(c.bos_token_id) : json(nullptr);
  if (c.eos_token_ids.empty()) {
    j["eos_token_id"] = nullptr;
  } else if (c.eos_token_ids.size() == 1) {
    j["eos_token_id"] = c.eos_token_ids[0];
  } else {
    j["eos_token_id"] = c.eos_token_ids;
  }
  j["hidden_act"] = "silu";
  j["attention_dropout"] = 0.0;
  j["mlp_bias"] = false;
  j["initializer_range"] = 0.02;
  j["pretraining_tp"] = 1;
  j["use_cache"] = true;
  j["torch_dtype"] = TorchDTypeName(torch_dtype);
  return j.dump(2) + "\n";
}

absl::Status ValidateLlamaConfig(const LlamaConfig& config, absl::string_view source) {
  auto positive = [&](int64_t v, const char* field) -> absl::Status {
    if (v <= 0) return FieldError(source, field, absl::StrCat("must be positive, got ", v));
    return absl::OkStatus();
  };
  for (const auto& [value, field] : std::initializer_list<std::pair<int64_t, const char*>>{
           {config.vocab_size, "vocab_size"},
           {config.hidden_size, "hidden_size"},
           {config.intermediate_size, "intermediate_size"},
           {config.num_layers, "num_hidden_layers"},
           {config.num_heads, "num_attention_heads"},
           {config.num_kv_heads, "num_key_value_heads"},
           {config.head_dim, "head_dim"},
           {config.max_position_embeddings, "max_position_embeddings"},
       }) {
    absl::Status s = positive(value, field);
    if (!s.ok()) return s;
  }
  if (config.hidden_size % config.num_heads != 0) {
    return FieldError(source, "hidden_size",
                      absl::StrCat("(", config.hidden_size,
                                   ") is not divisible by num_attention_heads (", config.num_heads,
                                   ")"));
  }
  if (config.num_heads % config.num_kv_heads != 0) {
    return FieldError(source, "num_attention_heads",
                      absl::StrCat("(", config.num_heads,
                                   ") is not a multiple of num_key_value_heads (",
                                   config.num_kv_heads, ")"));
  }
  if (config.head_dim % 2 != 0) {
    return FieldError(source, "head_dim",
                      absl::StrCat("must be even for rotary embeddings, got ", config.head_dim));
  }
  if (!(config.rms_norm_eps > 0) || !std::isfinite(config.rms_norm_eps)) {
    return FieldError(source, "rms_norm_eps",
                      absl::StrCat("must be positive, got ", config.rms_norm_eps));
  }
  if (!(config.rope_theta > 0) || !std::isfinite(config.rope_theta)) {
    return FieldError(source, "rope_theta",
                      absl::StrCat("must be positive, got ", config.rope_theta));
  }
  // Token ids are not checked against vocab_size: some configs name ids of
  // added tokens, and an id the model never samples is harmless.
  if (config.bos_token_id < -1) {
    return FieldError(source, "bos_token_id",
                      absl::StrCat("must be a token id (or -1 for none), got ", config.bos_token_id));
  }
  for (int32_t eos : config.eos_token_ids) {
    if (eos < 0) {
      return FieldError(source, "eos_token_id", absl::StrCat("must not be negative, got ", eos));
    }
  }

  const RopeScaling& rs = config.rope_scaling;
  if (!rs.freq_factors.empty()) {
    if (static_cast<int64_t>(rs.freq_factors.size()) != config.head_dim / 2) {
      return FieldError(source, "rope_scaling.freq_factors",
                        absl::StrCat("has ", rs.freq_factors.size(), " values; head_dim ",
                                     config.head_dim, " needs ", config.head_dim / 2));
    }
    for (size_t i = 0; i < rs.freq_factors.size(); ++i) {
      if (!(rs.freq_factors[i] > 0) || !std::isfinite(rs.freq_factors[i])) {
        return FieldError(source, "rope_scaling.freq_factors",
                          absl::StrCat("[", i, "] must be positive, got ", rs.freq_factors[i]));
      }
    }
  }
  if (rs.type == RopeScaling::Type::kNone) return absl::OkStatus();
  if (!(rs.factor > 0) || !std::isfinite(rs.factor)) {
    return FieldError(source, "rope_scaling.factor",
                      absl::StrCat("must be positive, got ", rs.factor));
  }
  if (rs.type == RopeScaling::Type::kLlama3 || rs.type == RopeScaling::Type::kYarn) {
    if (rs.original_max_position_embeddings <= 0) {
      return FieldError(source, "rope_scaling.original_max_position_embeddings",
                        absl::StrCat("must be positive, got ", rs.original_max_position_embeddings));
    }
  }
  if (rs.type == RopeScaling::Type::kLlama3) {
    if (!(rs.low_freq_factor > 0)) {
      return FieldError(source, "rope_scaling.low_freq_factor",
                        absl::StrCat("must be positive, got ", rs.low_freq_factor));
    }
    if (!(rs.high_freq_factor > rs.low_freq_factor)) {
      return FieldError(source, "rope_scaling.high_freq_factor",
                        absl::StrCat("(", rs.high_freq_factor,
                                     ") must be greater than low_freq_factor (",
                                     rs.low_freq_factor, ")"));
    }
  }
  if (rs.type == RopeScaling::Type::kYarn) {
    if (rs.attention_factor < 0) {
      return FieldError(source, "rope_scaling.attention_factor",
                        absl::StrCat("must not be negative, got ", rs.attention_factor));
    }
    if (!(rs.beta_fast > 0) || !(rs.beta_slow > 0)) {
      return FieldError(source, "rope_scaling.beta_fast",
                        absl::StrCat("beta_fast (", rs.beta_fast, ") and beta_slow (",
                                     rs.beta_slow, ") must be positive"));
    }
  }
  return absl::OkStatus();
}

}  // namespace quest::models
