#ifndef QUEST_RUNTIME_SCHEDULER_H_
#define QUEST_RUNTIME_SCHEDULER_H_

// Continuous batching. One scheduler thread owns the model and the KV cache;
// Engine::Generate validates a request, hands it to Run (which blocks until
// the request is done) and returns its result.
//
// Each step of the thread:
//   1. admission, first come first served: queued requests join the running
//      batch while it has fewer than max_batch sequences and the pool has
//      pages for the whole prompt (reserved at admission, so a prefill never
//      runs out of pages). The head of the queue is never overtaken; a prompt
//      that cannot fit even in an empty pool fails with RESOURCE_EXHAUSTED.
//   2. every running sequence in decode contributes its last token; those in
//      prefill contribute their next chunk (chunk boundaries are the same as
//      when the request runs alone, prefill_chunk tokens each), as long as
//      the step's prefill budget (prefill_chunk tokens) lasts, the first one
//      always; so a long prompt never stalls the decoding sequences.
//   3. one LlamaModel::Forward over the batch; each sequence whose prompt is
//      complete samples its next token with its own Sampler. Sequences that
//      finish (EOS, stop string, max_tokens, context full, cancelled, or no
//      page for their next token: RESOURCE_EXHAUSTED) leave and their pages
//      go back to the pool before the next admission.
// Token callbacks run on the scheduler thread, with no scheduler lock held
// (a callback may call Cancel).

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "cache/kv_cache.h"
#include "models/llama/llama_model.h"
#include "proto/engine_config.pb.h"
#include "proto/generation.pb.h"
#include "runtime/engine.h"
#include "runtime/sampler.h"
#include "runtime/tokenizer/tokenizer.h"

namespace quest {

struct SchedulerOptions {
  int max_batch = 4;          // sequences running at once
  int max_queued = 64;        // requests waiting; more are RESOURCE_EXHAUSTED
  int prefill_chunk = 2048;   // prompt tokens per sequence and per step
  int64_t max_context_tokens = 0;
};

// A validated request, as Engine::Generate hands it over.
struct ScheduledRequest {
  std::string id;  // unique among queued and running requests
  std::vector<int32_t> prompt;
  api::SamplingParams sampling;
  bool has_cache = false;
  config::CacheConfig cache;  // the request's policy override when has_cache
  std::unique_ptr<Sampler> sampler;
};

class Scheduler {
 public:
  // `tokenizer` may be null (then responses carry ids only); `eos` ends a
  // sequence. The model and cache must outlive the scheduler.
  Scheduler(models::LlamaModel& model, cache::KVCache& cache, const Tokenizer* tokenizer,
            std::vector<int32_t> eos, SchedulerOptions options);
  ~Scheduler();  // cancels what is left, waits for it, stops the thread

  // Queues the request and blocks until it is done. AlreadyExists for an id
  // that is queued or running; RESOURCE_EXHAUSTED when the queue is full.
  absl::StatusOr<api::GenerateResponse> Run(ScheduledRequest request,
                                            const Engine::TokenCallback& on_token);
  bool Cancel(absl::string_view id);
  SchedulerStats stats() const;

 private:
  struct Work;
  void Loop();
  void Admit();
  void Step();
  void Finish(Work& w, absl::Status status);

  models::LlamaModel& model_;
  cache::KVCache& cache_;
  const Tokenizer* const tokenizer_;
  const std::vector<int32_t> eos_;
  const SchedulerOptions options_;

  mutable absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<Work*> queue_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, Work*> registry_ ABSL_GUARDED_BY(mu_);  // queued + running
  int running_count_ ABSL_GUARDED_BY(mu_) = 0;
  SchedulerStats stats_ ABSL_GUARDED_BY(mu_);

  // Owned by the scheduler thread.
  std::vector<Work*> running_;
  cache::SequenceId next_sequence_ = 1;

  std::thread thread_;
};

}  // namespace quest

#endif  // QUEST_RUNTIME_SCHEDULER_H_
