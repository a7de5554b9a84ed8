#include "models/checkpoint.h"

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "glog/logging.h"
#include "models/safetensors.h"
#include "models/status_macros.h"
#include "nlohmann/json.hpp"

namespace quest::models {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr char kConfigFile[] = "config.json";
constexpr char kSingleFile[] = "model.safetensors";
constexpr char kIndexFile[] = "model.safetensors.index.json";

std::string ShapeStr(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

bool IsRegularFile(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);
}

absl::StatusOr<std::string> ReadTextFile(const std::string& path) {
  if (!IsRegularFile(path)) return absl::NotFoundError(absl::StrCat(path, ": file not found"));
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::PermissionDeniedError(absl::StrCat(path, ": cannot open for reading"));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat(path, ": read failed"));
  return ss.str();
}

// Loads the tensors of one safetensors file into `out`. Only names in `wanted`
// are loaded when it is non-null. Tensors of dtypes Quest cannot hold are
// skipped unless `needed` names them.
absl::Status LoadShard(const std::string& path, const std::vector<std::string>* wanted,
                       const absl::flat_hash_set<std::string>& needed,
                       absl::flat_hash_map<std::string, Tensor>* out) {
  MODELS_ASSIGN_OR_RETURN(SafetensorsFile file, SafetensorsFile::Open(path));
  const std::vector<std::string> names = wanted != nullptr ? *wanted : file.names();
  for (const std::string& name : names) {
    const SafetensorsEntry* entry = file.Find(name);
    if (entry == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": tensor \"", name, "\" is missing, though the index maps it to this shard"));
    }
    if (!entry->dtype.has_value() && !needed.contains(name)) {
      LOG(WARNING) << path << ": skipping tensor \"" << name << "\" of unsupported dtype "
                   << entry->dtype_name;
      continue;
    }
    if (out->contains(name)) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": tensor \"", name, "\" appears in more than one weights file"));
    }
    MODELS_ASSIGN_OR_RETURN(Tensor t, file.Read(name));
    out->emplace(name, std::move(t));
  }
  return absl::OkStatus();
}

// Parses model.safetensors.index.json into shard file -> tensor names.
absl::StatusOr<std::map<std::string, std::vector<std::string>>> ParseIndex(
    const std::string& index_path) {
  MODELS_ASSIGN_OR_RETURN(std::string text, ReadTextFile(index_path));
  json root;
  try {
    root = json::parse(text);
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(index_path, ": malformed JSON: ", e.what()));
  }
  if (!root.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(index_path, ": expected a JSON object at the top level"));
  }
  auto map_it = root.find("weight_map");
  if (map_it == root.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat(index_path, ": field \"weight_map\" is missing"));
  }
  if (!map_it->is_object() || map_it->empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        index_path, ": field \"weight_map\" must be a non-empty object of tensor -> file"));
  }
  std::map<std::string, std::vector<std::string>> shards;
  for (const auto& [tensor, file] : map_it->items()) {
    if (!file.is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(index_path, ": field \"weight_map\" entry \"",
                                                     tensor, "\" must name a file"));
    }
    const std::string shard = file.get<std::string>();
    const fs::path shard_path(shard);
    // Shards live beside the index; refuse paths that would leave the directory.
    bool escapes = shard.empty() || shard_path.is_absolute();
    for (const fs::path& part : shard_path) escapes = escapes || part == "..";
    if (escapes) {
      return absl::InvalidArgumentError(absl::StrCat(index_path, ": field \"weight_map\" entry \"",
                                                     tensor, "\" names an invalid shard file \"",
                                                     shard, "\""));
    }
    shards[shard].push_back(tensor);
  }
  return shards;
}

}  // namespace

std::vector<ExpectedTensor> LlamaTensorSpecs(const LlamaConfig& c) {
  const int64_t q_out = c.num_heads * c.head_dim;
  const int64_t kv_out = c.num_kv_heads * c.head_dim;
  std::vector<ExpectedTensor> specs;
  specs.reserve(4 + c.num_layers * 12);
  specs.push_back({"model.embed_tokens.weight", {c.vocab_size, c.hidden_size}});
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    specs.push_back({p + "input_layernorm.weight", {c.hidden_size}});
    specs.push_back({p + "self_attn.q_proj.weight", {q_out, c.hidden_size}});
    specs.push_back({p + "self_attn.k_proj.weight", {kv_out, c.hidden_size}});
    specs.push_back({p + "self_attn.v_proj.weight", {kv_out, c.hidden_size}});
    specs.push_back({p + "self_attn.o_proj.weight", {c.hidden_size, q_out}});
    if (c.attention_bias) {
      specs.push_back({p + "self_attn.q_proj.bias", {q_out}});
      specs.push_back({p + "self_attn.k_proj.bias", {kv_out}});
      specs.push_back({p + "self_attn.v_proj.bias", {kv_out}});
    }
    specs.push_back({p + "post_attention_layernorm.weight", {c.hidden_size}});
    specs.push_back({p + "mlp.gate_proj.weight", {c.intermediate_size, c.hidden_size}});
    specs.push_back({p + "mlp.up_proj.weight", {c.intermediate_size, c.hidden_size}});
    specs.push_back({p + "mlp.down_proj.weight", {c.hidden_size, c.intermediate_size}});
  }
  specs.push_back({"model.norm.weight", {c.hidden_size}});
  if (!c.tie_word_embeddings) specs.push_back({"lm_head.weight", {c.vocab_size, c.hidden_size}});
  return specs;
}

absl::Status ValidateLlamaTensors(const Checkpoint& checkpoint) {
  const std::string& source = checkpoint.source;
  MODELS_RETURN_IF_ERROR(ValidateLlamaConfig(checkpoint.config, source));
  std::vector<std::string> missing;
  for (const ExpectedTensor& spec : LlamaTensorSpecs(checkpoint.config)) {
    auto it = checkpoint.tensors.find(spec.name);
    if (it == checkpoint.tensors.end() || !it->second.defined()) {
      missing.push_back(spec.name);
      continue;
    }
    if (it->second.shape() != spec.shape) {
      return absl::InvalidArgumentError(absl::StrCat(
          source, ": tensor \"", spec.name, "\" has shape ", ShapeStr(it->second.shape()),
          ", expected ", ShapeStr(spec.shape)));
    }
  }
  if (!missing.empty()) {
    std::string more;
    if (missing.size() > 1) {
      more = absl::StrCat(" (", missing.size() - 1, " more missing, e.g. \"",
                          missing[1], "\")");
    }
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": missing tensor \"", missing[0], "\"", more));
  }
  // Llama with attention_bias also puts a bias on o_proj; the model applies it
  // when present.
  for (int64_t i = 0; i < checkpoint.config.num_layers; ++i) {
    const std::string name = absl::StrCat("model.layers.", i, ".self_attn.o_proj.bias");
    auto it = checkpoint.tensors.find(name);
    if (it != checkpoint.tensors.end() &&
        it->second.shape() != std::vector<int64_t>{checkpoint.config.hidden_size}) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": tensor \"", name, "\" has shape ",
                       ShapeStr(it->second.shape()), ", expected [",
                       checkpoint.config.hidden_size, "]"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<Checkpoint> LoadHfCheckpoint(absl::string_view dir_view) {
  const std::string dir(dir_view);
  std::error_code ec;
  if (!fs::exists(dir, ec)) {
    return absl::NotFoundError(absl::StrCat(dir, ": checkpoint directory does not exist"));
  }
  if (!fs::is_directory(dir, ec)) {
    return absl::InvalidArgumentError(absl::StrCat(dir, ": not a directory"));
  }
  const fs::path root(dir);

  Checkpoint checkpoint;
  checkpoint.source = dir;
  const std::string config_path = (root / kConfigFile).string();
  MODELS_ASSIGN_OR_RETURN(std::string config_text, ReadTextFile(config_path));
  MODELS_ASSIGN_OR_RETURN(checkpoint.config, ParseHfConfigJson(config_text, config_path));

  absl::flat_hash_set<std::string> needed;
  for (const ExpectedTensor& spec : LlamaTensorSpecs(checkpoint.config)) needed.insert(spec.name);

  const std::string single_path = (root / kSingleFile).string();
  const std::string index_path = (root / kIndexFile).string();
  if (IsRegularFile(single_path)) {
    MODELS_RETURN_IF_ERROR(LoadShard(single_path, nullptr, needed, &checkpoint.tensors));
  } else if (IsRegularFile(index_path)) {
    MODELS_ASSIGN_OR_RETURN(auto shards, ParseIndex(index_path));
    for (const auto& [shard, names] : shards) {
      const std::string shard_path = (root / shard).string();
      if (!IsRegularFile(shard_path)) {
        return absl::NotFoundError(absl::StrCat(shard_path, ": shard not found (named by ",
                                                index_path, " for tensor \"", names.front(),
                                                "\")"));
      }
      MODELS_RETURN_IF_ERROR(LoadShard(shard_path, &names, needed, &checkpoint.tensors));
    }
  } else {
    std::string hint;
    if (IsRegularFile(root / "pytorch_model.bin") ||
        IsRegularFile(root / "pytorch_model.bin.index.json")) {
      hint = " (pytorch_model.bin checkpoints are not supported; convert to safetensors)";
    }
    return absl::NotFoundError(absl::StrCat(dir, ": no weights file: neither ", kSingleFile,
                                            " nor ", kIndexFile, " exists", hint));
  }
  MODELS_RETURN_IF_ERROR(ValidateLlamaTensors(checkpoint));
  return checkpoint;
}

}  // namespace quest::models
