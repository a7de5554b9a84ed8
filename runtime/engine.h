#ifndef QUEST_RUNTIME_ENGINE_H_
#define QUEST_RUNTIME_ENGINE_H_

// The embedding API: what a C++ service links to generate text, and what the
// gRPC service (service/) wraps. No gRPC types here.
//
//   auto engine = quest::Engine::Create(config);        // StatusOr
//   api::GenerateRequest req;  req.set_text("Hello");
//   req.mutable_sampling()->set_max_tokens(32);
//   auto resp = (*engine)->Generate(req, [](const quest::TokenEvent& e) {
//     std::cout << e.text << std::flush;                 // streamed deltas
//   });
//
// Thread-safety: every method may be called from any thread. Concurrent
// Generate calls are batched continuously (runtime/scheduler.h): requests
// join and leave the running batch between forward steps, first come first
// served, up to limits.max_concurrent_requests at once; each gets the tokens
// it would get alone. Cancel may be called while another thread is inside
// Generate.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "proto/engine_config.pb.h"
#include "proto/generation.pb.h"
#include "runtime/tokenizer/tokenizer.h"

namespace quest {

// One generated token as it is streamed: its id and the text it completes.
// `text` may be empty while a multi-token UTF-8 character or a possible stop
// string is held back; the bytes come with a later event or the final text.
struct TokenEvent {
  int32_t id;
  absl::string_view text;
};

struct ModelInfo {
  std::string architecture;
  std::string source;  // model path
  int64_t vocab_size = 0;
  int64_t context_length = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  std::string backend;
  std::string chat_template;  // empty when the model ships none
};

// What the scheduler has done so far (for tests and metrics).
struct SchedulerStats {
  int64_t steps = 0;     // forward steps
  int max_batch = 0;     // most sequences in one forward step
  int64_t admitted = 0;  // requests that joined the running batch
  int running = 0;       // sequences running now
  int queued = 0;        // requests waiting now
};

class Engine {
 public:
  virtual ~Engine() = default;

  // Loads the model named by config.model.path (a Hugging Face directory or
  // a .gguf file), its tokenizer, the backend and the KV cache. Errors name
  // the file/field at fault.
  static absl::StatusOr<std::unique_ptr<Engine>> Create(const config::EngineConfig& config);

  using TokenCallback = std::function<void(const TokenEvent&)>;

  // Runs one request to completion, calling `on_token` (if set) for every
  // generated token. The callback runs on the engine's scheduler thread, not
  // the calling thread, while other requests wait: keep it short, never block
  // in it on another request, and never call Generate from it (Cancel is
  // fine). InvalidArgument / OutOfRange for
  // bad requests (field named); RESOURCE_EXHAUSTED when the KV pool cannot
  // hold the sequence. A cancelled request returns OK with finish_reason
  // CANCELLED and what was generated so far. Pages are returned in every case.
  virtual absl::StatusOr<api::GenerateResponse> Generate(const api::GenerateRequest& request,
                                                         const TokenCallback& on_token = nullptr) = 0;

  // Asks the request with this id to stop at its next step. Returns false
  // when no running or queued request has that id.
  virtual bool Cancel(absl::string_view request_id) = 0;

  virtual const ModelInfo& model_info() const = 0;
  // The configuration in force: the one given to Create with every default
  // filled in (limits, cache policy and pool size).
  virtual const config::EngineConfig& config() const = 0;
  virtual const Tokenizer* tokenizer() const = 0;  // nullptr when the model has none
  // Pages in use / total in the KV pool (for tests and metrics).
  virtual std::pair<int, int> kv_pages() const = 0;
  virtual SchedulerStats scheduler_stats() const { return {}; }
};

// Reads a text-proto EngineConfig file. Errors name the file and line.
absl::StatusOr<config::EngineConfig> LoadEngineConfig(const std::string& path);
absl::StatusOr<config::EngineConfig> ParseEngineConfig(absl::string_view text,
                                                       absl::string_view source);

// Wraps a user message in the model's chat format when its template is the
// ChatML family (<|im_start|>...); returns the text unchanged otherwise.
std::string ApplyChatTemplate(const ModelInfo& info, absl::string_view user_message);

}  // namespace quest

#endif  // QUEST_RUNTIME_ENGINE_H_
