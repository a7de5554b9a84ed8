#include "runtime/scheduler.h"

#include <algorithm>
#include <chrono>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"

namespace quest {
namespace {

using Clock = std::chrono::steady_clock;

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

// Longest suffix of `text` that is a proper prefix of some stop string: those
// bytes may still turn into a stop string, so they are not streamed yet.
size_t StopHoldback(absl::string_view text, const google::protobuf::RepeatedPtrField<std::string>& stops) {
  size_t hold = 0;
  for (const std::string& stop : stops) {
    for (size_t len = std::min(stop.size() - 1, text.size()); len > hold; --len) {
      if (absl::EndsWith(text, absl::string_view(stop).substr(0, len))) {
        hold = len;
        break;
      }
    }
  }
  return hold;
}

// Largest candidate list fetched from the device per row; a sampler that
// needs more (or the whole row) gets the logits copied back whole.
constexpr int kMaxDeviceCandidates = 256;

// Samples the rows of one step's logits (on the backend's device). When every
// row's sampler needs only its best few candidates (greedy: 1, top-k: k), one
// Backend::TopK brings just those to the host instead of batch x vocab
// floats; otherwise the logits come back whole.
class RowSampler {
 public:
  RowSampler(Backend& backend, const Tensor& logits, absl::Span<Sampler* const> samplers) {
    const int64_t vocab = logits.dim(1);
    bool whole = false;
    for (const Sampler* s : samplers) {
      const int need = s->TopCandidatesNeeded();
      whole |= need == 0 || need > kMaxDeviceCandidates;
      k_ = std::max(k_, need);
    }
    if (whole || k_ > vocab) {
      host_ = backend.ToHost(logits);
      return;
    }
    ids_ = Tensor::Empty(DType::kInt32, {logits.dim(0), k_});
    values_ = Tensor::Empty(DType::kFloat32, {logits.dim(0), k_});
    backend.TopK(logits, k_, ids_, values_);
  }

  int32_t operator()(size_t row, Sampler& sampler) {
    if (host_.defined()) {
      const int64_t vocab = host_.dim(1);
      return sampler.Sample(absl::MakeConstSpan(host_.data<float>() + row * vocab, vocab));
    }
    return sampler.SampleTop(absl::MakeConstSpan(ids_.data<int32_t>() + row * k_, k_),
                             absl::MakeConstSpan(values_.data<float>() + row * k_, k_));
  }

 private:
  int k_ = 1;
  Tensor host_;          // whole rows, or
  Tensor ids_, values_;  // [rows, k_] best candidates
};

}  // namespace

struct Scheduler::Work {
  ScheduledRequest req;
  const Engine::TokenCallback* on_token = nullptr;
  std::atomic<bool> cancelled{false};
  absl::Notification done;
  absl::StatusOr<api::GenerateResponse> result;

  // Scheduler-thread state.
  cache::SequenceId seq = 0;
  bool running = false;   // in running_ (counted in stats_.running)
  int64_t prefilled = 0;  // prompt tokens in the cache
  api::GenerateResponse response;
  std::vector<int32_t> generated;  // ids whose text counts (no EOS)
  std::string decoded;             // Decode(generated)
  size_t emitted = 0;              // bytes of `decoded` already streamed
  Clock::time_point start, first_token, last_token;
};

Scheduler::Scheduler(models::LlamaModel& model, cache::KVCache& cache, const Tokenizer* tokenizer,
                     std::vector<int32_t> eos, SchedulerOptions options)
    : model_(model), cache_(cache), tokenizer_(tokenizer), eos_(std::move(eos)), options_(options) {
  thread_ = std::thread([this] { Loop(); });
}

Scheduler::~Scheduler() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    for (auto& [id, w] : registry_) w->cancelled.store(true);
  }
  thread_.join();
}

absl::StatusOr<api::GenerateResponse> Scheduler::Run(ScheduledRequest request,
                                                     const Engine::TokenCallback& on_token) {
  Work w;
  w.req = std::move(request);
  w.on_token = on_token ? &on_token : nullptr;
  w.start = Clock::now();
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return absl::UnavailableError("the engine is shutting down");
    if (static_cast<int>(queue_.size()) >= options_.max_queued) {
      return absl::ResourceExhaustedError(absl::StrCat("the engine queue is full (", options_.max_queued,
                                                       " requests waiting); retry later"));
    }
    if (!registry_.emplace(w.req.id, &w).second) {
      return absl::AlreadyExistsError(absl::StrCat("request_id \"", w.req.id, "\" is already running"));
    }
    queue_.push_back(&w);
    stats_.queued = static_cast<int>(queue_.size());
  }
  w.done.WaitForNotification();
  return std::move(w.result);
}

bool Scheduler::Cancel(absl::string_view id) {
  absl::MutexLock lock(&mu_);
  auto it = registry_.find(id);
  if (it == registry_.end()) return false;
  Work* w = it->second;
  w->cancelled.store(true);
  // A queued request holds no pages: it ends here, without waiting for the
  // scheduler thread (which may be busy in a step or a callback).
  if (auto q = std::find(queue_.begin(), queue_.end(), w); q != queue_.end()) {
    queue_.erase(q);
    stats_.queued = static_cast<int>(queue_.size());
    registry_.erase(it);
    w->response.set_finish_reason(api::CANCELLED);
    w->result = std::move(w->response);
    w->done.Notify();  // `w` belongs to the waiting thread from here on
  }
  return true;
}

SchedulerStats Scheduler::stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

void Scheduler::Finish(Work& w, absl::Status status) {
  if (w.seq != 0) cache_.RemoveSequence(w.seq);  // pages back before anyone sees the result
  if (status.ok()) {
    api::GenerateResponse& r = w.response;
    r.set_text(w.decoded);
    api::Usage* usage = r.mutable_usage();
    usage->set_prompt_tokens(static_cast<int32_t>(w.req.prompt.size()));
    usage->set_generated_tokens(r.token_ids_size());
    if (r.token_ids_size() > 0) {
      usage->set_time_to_first_token_ms(Ms(w.first_token - w.start));
      if (r.token_ids_size() > 1) {
        usage->set_mean_inter_token_ms(Ms(w.last_token - w.first_token) / (r.token_ids_size() - 1));
      }
    }
    w.result = std::move(r);
  } else {
    w.result = std::move(status);
  }
  {
    absl::MutexLock lock(&mu_);
    registry_.erase(w.req.id);
    if (w.running) --stats_.running;
  }
  w.done.Notify();  // `w` belongs to the waiting thread from here on
}

void Scheduler::Loop() {
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      const auto ready = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
        return stopping_ || !queue_.empty() || !running_.empty();
      };
      mu_.Await(absl::Condition(&ready));
      if (stopping_ && queue_.empty() && running_.empty()) return;
    }
    Admit();
    if (!running_.empty()) Step();
  }
}

void Scheduler::Admit() {
  const int page_size = cache_.geometry().page_size;
  std::vector<Work*> cancelled;  // queued requests cancelled anywhere in the queue
  {
    absl::MutexLock lock(&mu_);
    for (auto it = queue_.begin(); it != queue_.end();) {
      if ((*it)->cancelled.load()) {
        cancelled.push_back(*it);
        it = queue_.erase(it);
      } else {
        ++it;
      }
    }
    stats_.queued = static_cast<int>(queue_.size());
  }
  for (Work* w : cancelled) {  // never prefilled
    w->response.set_finish_reason(api::CANCELLED);
    Finish(*w, absl::OkStatus());
  }
  for (;;) {
    Work* w = nullptr;
    {
      absl::MutexLock lock(&mu_);
      if (queue_.empty()) return;
      w = queue_.front();
      if (!w->cancelled.load() && static_cast<int>(running_.size()) >= options_.max_batch) return;
      queue_.pop_front();
      stats_.queued = static_cast<int>(queue_.size());
    }
    if (w->cancelled.load()) {  // never prefilled
      w->response.set_finish_reason(api::CANCELLED);
      Finish(*w, absl::OkStatus());
      continue;
    }
    const int64_t prompt_len = static_cast<int64_t>(w->req.prompt.size());
    const cache::SequenceId seq = next_sequence_++;
    if (absl::Status s = cache_.AddSequence(seq, w->req.has_cache ? &w->req.cache : nullptr); !s.ok()) {
      Finish(*w, s);
      continue;
    }
    w->seq = seq;
    if (absl::Status s = cache_.Reserve(seq, prompt_len); !s.ok()) {
      const int total = cache_.stats().total_pages;
      if (running_.empty() || (prompt_len + page_size - 1) / page_size > total) {
        Finish(*w, s);  // cannot fit even in an empty pool
        continue;
      }
      // Waits at the head of the queue until running sequences free pages.
      cache_.RemoveSequence(seq);
      w->seq = 0;
      absl::MutexLock lock(&mu_);
      queue_.push_front(w);
      stats_.queued = static_cast<int>(queue_.size());
      return;
    }
    running_.push_back(w);
    w->running = true;
    absl::MutexLock lock(&mu_);
    ++stats_.admitted;
    ++stats_.running;
  }
}

void Scheduler::Step() {
  std::vector<models::SequenceStep> steps;
  std::vector<Work*> in_step;
  std::vector<Work*> still;
  int64_t prefill_budget = options_.prefill_chunk;
  bool first_prefill = true;
  for (Work* w : running_) {
    if (w->cancelled.load()) {
      w->response.set_finish_reason(api::CANCELLED);
      Finish(*w, absl::OkStatus());
      continue;
    }
    const int64_t prompt_len = static_cast<int64_t>(w->req.prompt.size());
    if (w->prefilled < prompt_len) {
      const int64_t n = std::min<int64_t>(options_.prefill_chunk, prompt_len - w->prefilled);
      if (first_prefill || n <= prefill_budget) {
        first_prefill = false;
        prefill_budget -= n;
        steps.push_back({w->seq, absl::MakeConstSpan(w->req.prompt).subspan(w->prefilled, n)});
        in_step.push_back(w);
      }
    } else {
      if (absl::Status s = cache_.Reserve(w->seq, 1); !s.ok()) {
        Finish(*w, s);
        continue;
      }
      steps.push_back({w->seq, absl::MakeConstSpan(&w->generated.back(), 1)});
      in_step.push_back(w);
    }
    still.push_back(w);
  }
  running_ = std::move(still);
  if (!steps.empty()) {
    absl::StatusOr<Tensor> logits = model_.ForwardOnDevice(steps, cache_);
    {
      absl::MutexLock lock(&mu_);
      ++stats_.steps;
      stats_.max_batch = std::max(stats_.max_batch, static_cast<int>(steps.size()));
    }
    if (!logits.ok()) {
      for (Work* w : in_step) {
        Finish(*w, logits.status());
        running_.erase(std::find(running_.begin(), running_.end(), w));
      }
    } else {
      std::vector<Sampler*> samplers;
      for (Work* w : in_step) samplers.push_back(w->req.sampler.get());
      RowSampler sample(model_.backend(), *logits, samplers);
      for (size_t i = 0; i < in_step.size(); ++i) {
        Work& w = *in_step[i];
        const int64_t prompt_len = static_cast<int64_t>(w.req.prompt.size());
        if (w.prefilled < prompt_len) {
          w.prefilled += static_cast<int64_t>(steps[i].tokens.size());
          if (w.prefilled < prompt_len) continue;
        }
        api::FinishReason finish = api::FINISH_REASON_UNSPECIFIED;
        if (w.cancelled.load()) {
          finish = api::CANCELLED;
        } else {
          const int32_t token = sample(i, *w.req.sampler);
          w.last_token = Clock::now();
          api::GenerateResponse& response = w.response;
          if (response.token_ids_size() == 0) w.first_token = w.last_token;
          response.add_token_ids(token);
          const api::SamplingParams& sp = w.req.sampling;
          size_t safe = w.emitted;
          if (std::find(eos_.begin(), eos_.end(), token) != eos_.end()) {
            finish = api::END_OF_SEQUENCE;
            safe = w.decoded.size();
          } else {
            w.generated.push_back(token);
            if (tokenizer_) w.decoded = tokenizer_->Decode(w.generated);
            size_t stop_at = std::string::npos;
            for (const std::string& stop : sp.stop()) stop_at = std::min(stop_at, w.decoded.find(stop));
            if (stop_at != std::string::npos) {
              finish = api::STOP;
              w.decoded.resize(stop_at);
              safe = stop_at;
            } else if (response.token_ids_size() >= sp.max_tokens()) {
              finish = api::LENGTH;
              safe = w.decoded.size();
            } else if (prompt_len + response.token_ids_size() >= options_.max_context_tokens) {
              finish = api::CONTEXT_FULL;
              safe = w.decoded.size();
            } else {
              const size_t complete = Utf8CompletePrefixLength(w.decoded);
              safe = complete - StopHoldback(absl::string_view(w.decoded).substr(0, complete), sp.stop());
            }
          }
          safe = std::max(safe, w.emitted);
          if (w.on_token != nullptr) {
            (*w.on_token)(TokenEvent{token, absl::string_view(w.decoded).substr(w.emitted, safe - w.emitted)});
          }
          w.emitted = safe;
        }
        if (finish != api::FINISH_REASON_UNSPECIFIED) {
          w.response.set_finish_reason(finish);
          running_.erase(std::find(running_.begin(), running_.end(), &w));
          Finish(w, absl::OkStatus());
        }
      }
    }
  }
}

}  // namespace quest
