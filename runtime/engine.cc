#include "runtime/engine.h"

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "cache/kv_cache.h"
#include "cache/plugin_loader.h"
#include "google/protobuf/io/tokenizer.h"
#include "google/protobuf/text_format.h"
#include "models/checkpoint.h"
#include "models/gguf/gguf_checkpoint.h"
#include "models/gguf/gguf_file.h"
#include "models/gguf/gguf_tokenizer.h"
#include "models/llama/llama_model.h"
#include "ops/cpu/cpu_backend.h"
#include "ops/cuda/cuda_backend.h"
#include "runtime/sampler.h"
#include "runtime/scheduler.h"
#include "runtime/tokenizer/sentencepiece_tokenizer.h"

namespace quest {
namespace {

namespace fs = std::filesystem;

constexpr int kDefaultPageSize = 16;
constexpr int kDefaultMaxNewTokens = 4096;
constexpr int kDefaultMaxConcurrent = 4;
// Prompt tokens per forward step (limits.prefill_chunk_tokens' default):
// bounds activation memory for long prompts.
// 2048: on an H100 (decode_bench, Llama-3.1-8B shape, 32 layers, the
// mma.sync prefill kernel of session 12) a 128K prompt prefilled in 19.3 s
// against 22.9 s with 512-token chunks (32K: 1.9 vs 2.2 s); 4096 gained 1 %
// more. With the wgmma prefill kernel (session 14, same tool, one H100
// call): 128K in 14.3 / 14.3 / 14.2 s with 2048- / 4096- / 8192-token
// chunks, so the smaller chunk stays (it holds a decode step back less).
constexpr int kDefaultPrefillChunk = 2048;
// Requests that may wait for a place in the running batch (bounded queue).
constexpr int kMinQueued = 64;
constexpr int kQueuedPerSlot = 8;

struct LoadedModel {
  models::Checkpoint checkpoint;
  std::unique_ptr<Tokenizer> tokenizer;
  std::string chat_template;
};

absl::StatusOr<LoadedModel> LoadModel(const config::ModelConfig& m) {
  if (m.path().empty()) return absl::InvalidArgumentError("model.path is empty");
  std::error_code ec;
  if (!fs::exists(m.path(), ec)) {
    return absl::NotFoundError(absl::StrCat("model.path: ", m.path(), " does not exist"));
  }
  LoadedModel out;
  if (fs::is_regular_file(m.path(), ec) && absl::EndsWith(m.path(), ".gguf")) {
    // One mapping of the file serves weights, tokenizer and chat template.
    absl::StatusOr<std::unique_ptr<models::GgufFile>> file = models::GgufFile::Open(m.path());
    if (!file.ok()) return file.status();
    absl::StatusOr<models::Checkpoint> ckpt = models::LoadGgufCheckpoint(**file);
    if (!ckpt.ok()) return ckpt.status();
    out.checkpoint = *std::move(ckpt);
    if (m.tokenizer_path().empty()) {
      absl::StatusOr<std::unique_ptr<Tokenizer>> tok = models::LoadGgufTokenizer(**file);
      if (!tok.ok()) return tok.status();
      out.tokenizer = *std::move(tok);
    }
    if ((*file)->Has("tokenizer.chat_template")) {
      absl::StatusOr<std::string> t = (*file)->GetString("tokenizer.chat_template");
      if (t.ok()) out.chat_template = *t;
    }
  } else if (fs::is_directory(m.path(), ec)) {
    absl::StatusOr<models::Checkpoint> ckpt = models::LoadHfCheckpoint(m.path());
    if (!ckpt.ok()) return ckpt.status();
    out.checkpoint = *std::move(ckpt);
    const std::string sp = (fs::path(m.path()) / "tokenizer.model").string();
    if (m.tokenizer_path().empty() && fs::exists(sp, ec)) {
      absl::StatusOr<std::unique_ptr<SentencePieceTokenizer>> tok = SentencePieceTokenizer::Load(sp);
      if (!tok.ok()) return tok.status();
      out.tokenizer = *std::move(tok);
    }
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "model.path: ", m.path(), " is neither a Hugging Face checkpoint directory nor a .gguf file"));
  }
  if (!m.tokenizer_path().empty()) {
    absl::StatusOr<std::unique_ptr<SentencePieceTokenizer>> tok =
        SentencePieceTokenizer::Load(m.tokenizer_path());
    if (!tok.ok()) return tok.status();
    out.tokenizer = *std::move(tok);
  }
  return out;
}

class LocalEngine final : public Engine {
 public:
  LocalEngine(config::EngineConfig config, std::unique_ptr<Backend> backend,
              std::unique_ptr<models::LlamaModel> model, std::unique_ptr<cache::KVCache> cache,
              std::unique_ptr<Tokenizer> tokenizer, ModelInfo info)
      : config_(std::move(config)),
        backend_(std::move(backend)),
        model_(std::move(model)),
        cache_(std::move(cache)),
        tokenizer_(std::move(tokenizer)),
        info_(std::move(info)) {
    SchedulerOptions options;
    options.max_batch = static_cast<int>(config_.limits().max_concurrent_requests());
    options.max_queued = std::max(kMinQueued, kQueuedPerSlot * options.max_batch);
    options.prefill_chunk = static_cast<int>(config_.limits().prefill_chunk_tokens());
    options.max_context_tokens = config_.limits().max_context_tokens();
    scheduler_ = std::make_unique<Scheduler>(
        *model_, *cache_, tokenizer_.get(),
        tokenizer_ ? tokenizer_->eos_ids() : model_->config().eos_token_ids, options);
  }

  ~LocalEngine() override {
    scheduler_.reset();  // it drives the model and the cache
    // The cache's pages live on the backend: release them first.
    cache_.reset();
    model_.reset();
  }

  absl::StatusOr<api::GenerateResponse> Generate(const api::GenerateRequest& request,
                                                 const TokenCallback& on_token) override;

  bool Cancel(absl::string_view request_id) override { return scheduler_->Cancel(request_id); }

  const ModelInfo& model_info() const override { return info_; }
  const config::EngineConfig& config() const override { return config_; }
  const Tokenizer* tokenizer() const override { return tokenizer_.get(); }
  std::pair<int, int> kv_pages() const override {
    const cache::CacheStats s = cache_->stats();
    return {s.pages_in_use, s.total_pages};
  }
  SchedulerStats scheduler_stats() const override { return scheduler_->stats(); }

 private:
  absl::StatusOr<std::vector<int32_t>> PromptTokens(const api::GenerateRequest& request) const;

  const config::EngineConfig config_;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<models::LlamaModel> model_;
  std::unique_ptr<cache::KVCache> cache_;
  std::unique_ptr<Tokenizer> tokenizer_;
  const ModelInfo info_;

  std::unique_ptr<Scheduler> scheduler_;  // owns the model and cache between Create and destruction
  std::atomic<int64_t> next_internal_id_{1};
};

absl::StatusOr<std::vector<int32_t>> LocalEngine::PromptTokens(const api::GenerateRequest& request) const {
  std::vector<int32_t> ids;
  switch (request.prompt_case()) {
    case api::GenerateRequest::kText: {
      if (request.text().empty()) return absl::InvalidArgumentError("prompt: text is empty");
      if (tokenizer_ == nullptr) {
        return absl::FailedPreconditionError(absl::StrCat(
            "prompt: the model at ", info_.source,
            " has no tokenizer; send token_ids or set model.tokenizer_path"));
      }
      if (tokenizer_->add_bos() && tokenizer_->bos_id() >= 0) ids.push_back(tokenizer_->bos_id());
      absl::StatusOr<std::vector<int32_t>> enc = tokenizer_->Encode(request.text());
      if (!enc.ok()) return enc.status();
      ids.insert(ids.end(), enc->begin(), enc->end());
      break;
    }
    case api::GenerateRequest::kTokenIds: {
      if (request.token_ids().ids().empty()) {
        return absl::InvalidArgumentError("prompt: token_ids is empty");
      }
      for (int i = 0; i < request.token_ids().ids_size(); ++i) {
        const int32_t t = request.token_ids().ids(i);
        if (t < 0 || t >= info_.vocab_size) {
          return absl::InvalidArgumentError(absl::StrCat("prompt: token_ids[", i, "] = ", t,
                                                         " is outside the vocabulary [0, ",
                                                         info_.vocab_size, ")"));
        }
        ids.push_back(t);
      }
      break;
    }
    default:
      return absl::InvalidArgumentError("prompt: neither text nor token_ids is set");
  }
  return ids;
}

absl::StatusOr<api::GenerateResponse> LocalEngine::Generate(const api::GenerateRequest& request,
                                                            const TokenCallback& on_token) {
  const api::SamplingParams& sp = request.sampling();
  const config::Limits& limits = config_.limits();
  if (sp.max_tokens() <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("sampling.max_tokens must be > 0, got ", sp.max_tokens()));
  }
  if (static_cast<uint32_t>(sp.max_tokens()) > limits.max_new_tokens()) {
    return absl::InvalidArgumentError(absl::StrCat("sampling.max_tokens ", sp.max_tokens(),
                                                   " exceeds the configured limit ",
                                                   limits.max_new_tokens()));
  }
  for (int i = 0; i < sp.stop_size(); ++i) {
    if (sp.stop(i).empty()) {
      return absl::InvalidArgumentError(absl::StrCat("sampling.stop[", i, "] is empty"));
    }
  }
  absl::StatusOr<std::unique_ptr<Sampler>> sampler = Sampler::Create(sp);
  if (!sampler.ok()) return sampler.status();
  absl::StatusOr<std::vector<int32_t>> prompt = PromptTokens(request);
  if (!prompt.ok()) return prompt.status();
  const int64_t prompt_len = static_cast<int64_t>(prompt->size());
  if (prompt_len > limits.max_prompt_tokens()) {
    return absl::OutOfRangeError(absl::StrCat("prompt: ", prompt_len, " tokens exceed the limit of ",
                                              limits.max_prompt_tokens()));
  }
  if (prompt_len + sp.max_tokens() > limits.max_context_tokens()) {
    return absl::OutOfRangeError(absl::StrCat("prompt (", prompt_len, " tokens) + sampling.max_tokens (",
                                              sp.max_tokens(), ") exceed the context length of ",
                                              limits.max_context_tokens()));
  }

  ScheduledRequest scheduled;
  scheduled.id = request.request_id().empty() ? absl::StrCat("internal-", next_internal_id_++)
                                              : request.request_id();
  scheduled.prompt = *std::move(prompt);
  scheduled.sampling = sp;
  scheduled.has_cache = request.has_cache();
  if (request.has_cache()) scheduled.cache = request.cache();
  scheduled.sampler = *std::move(sampler);
  // Queued (cancellable from here on) and run by the scheduler thread.
  return scheduler_->Run(std::move(scheduled), on_token);
}

absl::Status FillDefaultsAndValidate(config::EngineConfig& c, const models::LlamaConfig& model) {
  if (c.backend() == config::BACKEND_UNSPECIFIED) c.set_backend(config::CPU);
  if (c.dtype() == config::DTYPE_UNSPECIFIED) {
    c.set_dtype(c.backend() == config::CUDA ? config::BFLOAT16 : config::FLOAT32);
  }
  if (c.backend() == config::CUDA && c.dtype() == config::FLOAT32) {
    return absl::InvalidArgumentError(
        "dtype FLOAT32 is not supported by the CUDA backend, which computes in BFLOAT16 or FLOAT16");
  }
  if (c.backend() == config::CPU && c.dtype() != config::FLOAT32) {
    return absl::InvalidArgumentError(absl::StrCat("dtype ", config::DType_Name(c.dtype()),
                                                   " is not supported by the CPU backend, which computes in FLOAT32"));
  }
  config::CacheConfig& cache = *c.mutable_cache();
  if (cache.policy().empty()) cache.set_policy("dense");
  if (cache.page_size() == 0) cache.set_page_size(kDefaultPageSize);
  config::Limits& l = *c.mutable_limits();
  const uint32_t context = static_cast<uint32_t>(model.max_position_embeddings);
  if (l.max_context_tokens() == 0) l.set_max_context_tokens(context);
  if (l.max_prompt_tokens() == 0) l.set_max_prompt_tokens(l.max_context_tokens());
  if (l.max_new_tokens() == 0) l.set_max_new_tokens(kDefaultMaxNewTokens);
  if (l.max_concurrent_requests() == 0) l.set_max_concurrent_requests(kDefaultMaxConcurrent);
  if (l.prefill_chunk_tokens() == 0) {
    l.set_prefill_chunk_tokens(std::min<uint32_t>(kDefaultPrefillChunk, l.max_context_tokens()));
  }
  if (l.prefill_chunk_tokens() > l.max_context_tokens()) {
    return absl::InvalidArgumentError(absl::StrCat("limits.prefill_chunk_tokens ", l.prefill_chunk_tokens(),
                                                   " exceeds limits.max_context_tokens ", l.max_context_tokens()));
  }
  if (l.max_prompt_tokens() > l.max_context_tokens()) {
    return absl::InvalidArgumentError(absl::StrCat("limits.max_prompt_tokens ", l.max_prompt_tokens(),
                                                   " exceeds limits.max_context_tokens ", l.max_context_tokens()));
  }
  if (cache.num_pages() == 0) {
    const uint32_t per_sequence = (l.max_context_tokens() + cache.page_size() - 1) / cache.page_size();
    cache.set_num_pages(per_sequence * l.max_concurrent_requests());
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(const config::EngineConfig& input) {
  config::EngineConfig c = input;
  // Out-of-tree cache policies register before anything names a policy.
  for (int i = 0; i < c.cache_plugins_size(); ++i) {
    if (absl::Status s = cache::LoadCachePolicyPlugin(c.cache_plugins(i)); !s.ok()) {
      return absl::Status(s.code(), absl::StrCat("cache_plugins[", i, "]: ", s.message()));
    }
  }
  absl::StatusOr<LoadedModel> loaded = LoadModel(c.model());
  if (!loaded.ok()) return loaded.status();
  const models::LlamaConfig& mc = loaded->checkpoint.config;
  if (absl::Status s = FillDefaultsAndValidate(c, mc); !s.ok()) return s;

  std::unique_ptr<Backend> backend;
  if (c.backend() == config::CUDA) {
    // Policies that only run on the host are refused before the GPU is
    // touched (the KV cache checks again per request).
    absl::StatusOr<const cache::CachePolicyFactory*> policy =
        cache::CachePolicyRegistry::Global().Find(c.cache().policy());
    if (policy.ok() && !(*policy)->RunsOn(Device::kCuda)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "cache policy ", c.cache().policy(),
          " does not run on the CUDA backend (its factory's RunsOn says host only)"));
    }
    ops::CudaBackendOptions cuda;
    cuda.dtype = c.dtype() == config::FLOAT16 ? DType::kFloat16 : DType::kBFloat16;
    absl::StatusOr<std::unique_ptr<Backend>> b = ops::CreateCudaBackend(cuda);
    if (!b.ok()) return b.status();
    backend = *std::move(b);
  } else {
    ops::CpuBackendOptions cpu;
    cpu.num_threads = static_cast<int>(c.num_threads());
    backend = ops::CreateCpuBackend(cpu);
  }
  absl::StatusOr<std::unique_ptr<models::LlamaModel>> model =
      models::LlamaModel::Create(loaded->checkpoint, *backend);
  if (!model.ok()) return model.status();
  loaded->checkpoint.tensors.clear();  // the backend holds its own copies now

  cache::PagedKVCacheOptions cache_options;
  cache_options.geometry = (*model)->CacheGeometryFor(static_cast<int>(c.cache().page_size()));
  cache_options.num_pages = static_cast<int>(c.cache().num_pages());
  cache_options.default_policy = c.cache();
  cache_options.dtype = backend->activation_dtype();
  absl::StatusOr<std::unique_ptr<cache::KVCache>> kv = cache::CreatePagedKVCache(cache_options, *backend);
  if (!kv.ok()) return kv.status();

  ModelInfo info;
  info.architecture = mc.architecture;
  info.source = c.model().path();
  info.vocab_size = mc.vocab_size;
  info.context_length = c.limits().max_context_tokens();
  info.num_layers = mc.num_layers;
  info.num_heads = mc.num_heads;
  info.num_kv_heads = mc.num_kv_heads;
  info.head_dim = mc.head_dim;
  info.backend = backend->name();
  info.chat_template = loaded->chat_template;
  return std::unique_ptr<Engine>(new LocalEngine(std::move(c), std::move(backend), *std::move(model),
                                                 *std::move(kv), std::move(loaded->tokenizer),
                                                 std::move(info)));
}

namespace {
class CollectErrors : public google::protobuf::io::ErrorCollector {
 public:
  explicit CollectErrors(absl::string_view source) : source_(source) {}
  void AddError(int line, int column, const std::string& message) override {
    if (first_.empty()) first_ = absl::StrCat(source_, ":", line + 1, ":", column + 1, ": ", message);
  }
  const std::string& first() const { return first_; }

 private:
  std::string source_, first_;
};
}  // namespace

absl::StatusOr<config::EngineConfig> ParseEngineConfig(absl::string_view text, absl::string_view source) {
  config::EngineConfig c;
  CollectErrors errors(source);
  google::protobuf::TextFormat::Parser parser;
  parser.RecordErrorsTo(&errors);
  if (!parser.ParseFromString(std::string(text), &c)) {
    return absl::InvalidArgumentError(errors.first().empty() ? absl::StrCat(source, ": malformed engine config")
                                                             : errors.first());
  }
  return c;
}

absl::StatusOr<config::EngineConfig> LoadEngineConfig(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("engine config ", path, " cannot be read"));
  std::stringstream text;
  text << in.rdbuf();
  return ParseEngineConfig(text.str(), path);
}

std::string ApplyChatTemplate(const ModelInfo& info, absl::string_view user_message) {
  const absl::string_view tmpl = info.chat_template;
  if (!absl::StrContains(tmpl, "<|im_start|>")) return std::string(user_message);
  // ChatML. Templates of this family (SmolLM2, Qwen2) may open with a default
  // system turn written literally in the template; keep it, as the model saw
  // it in training. (A Jinja engine is not worth it for this one pattern.)
  std::string system;
  constexpr absl::string_view kSystem = "<|im_start|>system\n";
  constexpr absl::string_view kEnd = "<|im_end|>";
  if (size_t begin = tmpl.find(kSystem); begin != absl::string_view::npos) {
    const size_t end = tmpl.find(kEnd, begin);
    const absl::string_view body = tmpl.substr(begin, end - begin);
    // Only a literal system text, not one spliced from the messages.
    if (end != absl::string_view::npos && !absl::StrContains(body, "+") && !absl::StrContains(body, "{")) {
      system = absl::StrCat(body, kEnd, "\n");
    }
  }
  return absl::StrCat(system, "<|im_start|>user\n", user_message, "<|im_end|>\n<|im_start|>assistant\n");
}

}  // namespace quest
