#include "service/generation_service.h"

#include <algorithm>
#include <chrono>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "cache/cache_policy.h"
#include "service/grpc_status.h"

namespace quest::service {

// One admitted generation request. Cancel may come from a gRPC thread
// (client cancel, deadline) or from shutdown at any moment: before the
// worker starts the request (it then never reaches the engine), while it
// runs (Engine::Cancel), or after it finished (nothing happens, so a late
// cancel never hits a later request that reuses the client's id).
class GenerationService::Job {
 public:
  Job(Engine& engine, std::string id) : engine_(engine), id_(std::move(id)) {}

  // `why` is what the request ends with if it has not started yet.
  void Cancel(absl::Status why) {
    absl::MutexLock lock(&mu_);
    if (state_ == State::kDone || cancelled_.load()) return;
    cancelled_.store(true);
    not_started_status_ = std::move(why);
    if (state_ == State::kRunning) engine_.Cancel(id_);
  }

  // Runs the request in the engine under this job's id.
  absl::StatusOr<api::GenerateResponse> Run(const api::GenerateRequest& request,
                                            const Engine::TokenCallback& on_token) {
    {
      absl::MutexLock lock(&mu_);
      if (cancelled_.load()) {
        state_ = State::kDone;
        return not_started_status_;
      }
      state_ = State::kRunning;
    }
    api::GenerateRequest tagged = request;
    tagged.set_request_id(id_);
    absl::StatusOr<api::GenerateResponse> result = engine_.Generate(tagged, [&](const TokenEvent& e) {
      // A Cancel that came between kRunning and the engine registering the
      // id found nothing to cancel; it lands here, at the first token.
      if (cancelled_.load()) engine_.Cancel(id_);
      if (on_token) on_token(e);
    });
    absl::MutexLock lock(&mu_);
    state_ = State::kDone;
    return result;
  }

 private:
  enum class State { kWaiting, kRunning, kDone };
  Engine& engine_;
  const std::string id_;
  absl::Mutex mu_;
  State state_ ABSL_GUARDED_BY(mu_) = State::kWaiting;
  std::atomic<bool> cancelled_{false};
  absl::Status not_started_status_ ABSL_GUARDED_BY(mu_);
};

namespace {

using Job = GenerationService::Job;

const char* StatusCodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK: return "OK";
    case grpc::StatusCode::CANCELLED: return "CANCELLED";
    case grpc::StatusCode::UNKNOWN: return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND: return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS: return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED: return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED: return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE: return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED: return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL: return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE: return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS: return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED: return "UNAUTHENTICATED";
    default: return "UNKNOWN";
  }
}

constexpr char kRequestsTotal[] = "quest_requests_total";
constexpr char kRequestsTotalHelp[] = "Generation RPCs (Generate, GenerateStream) by final gRPC status code.";
constexpr char kRequestsByPolicy[] = "quest_requests_by_policy_total";
constexpr char kRequestsByPolicyHelp[] =
    "Generation RPCs by the cache policy they asked for (the default when none; \"unknown\" for unregistered names).";

// A call's engine job, set once the engine takes the request (from the
// engine's thread) and cancelled when the client goes away (from gRPC's),
// whichever comes first.
class CallJob {
 public:
  void Set(std::shared_ptr<Job> job) {
    absl::MutexLock lock(&mu_);
    job_ = std::move(job);
  }
  void Cancel() {
    absl::MutexLock lock(&mu_);
    if (job_) job_->Cancel(absl::CancelledError("the client cancelled the request"));
  }

 private:
  absl::Mutex mu_;
  std::shared_ptr<Job> job_ ABSL_GUARDED_BY(mu_);
};

class UnaryGenerateCall final : public grpc::ServerUnaryReactor {
 public:
  void set_job(std::shared_ptr<Job> job) { job_.Set(std::move(job)); }
  void OnCancel() override { job_.Cancel(); }
  void OnDone() override { delete this; }

 private:
  CallJob job_;
};

// Server streaming. The engine never waits for the network: messages queue
// here (at most max_tokens + 1 of them) and each write starts when the
// previous one is done, as gRPC requires.
class StreamGenerateCall final : public grpc::ServerWriteReactor<api::GenerateStreamResponse> {
 public:
  void set_job(std::shared_ptr<Job> job) { job_.Set(std::move(job)); }

  void Send(api::GenerateStreamResponse message) {
    {
      absl::MutexLock lock(&mu_);
      if (broken_) return;
      if (writing_) {
        queue_.push_back(std::move(message));
        return;
      }
      writing_ = true;
      current_ = std::move(message);
    }
    StartWrite(&current_);
  }

  // Finishes once every queued message is written. The caller must not
  // touch the call afterwards: it may be deleted at any moment.
  void FinishAfterWrites(grpc::Status status) {
    {
      absl::MutexLock lock(&mu_);
      if (writing_) {
        finish_ = std::move(status);
        return;
      }
    }
    Finish(std::move(status));
  }

  void OnWriteDone(bool ok) override {
    enum class Next { kNothing, kWrite, kFinish } next = Next::kNothing;
    std::optional<grpc::Status> finish;
    {
      absl::MutexLock lock(&mu_);
      if (!ok) {  // the client is gone; what is left will not arrive
        broken_ = true;
        queue_.clear();
      }
      if (!queue_.empty()) {
        current_ = std::move(queue_.front());
        queue_.pop_front();
        next = Next::kWrite;
      } else {
        writing_ = false;
        if (finish_.has_value()) {
          finish.swap(finish_);
          next = Next::kFinish;
        }
      }
    }
    if (next == Next::kWrite) StartWrite(&current_);
    if (next == Next::kFinish) Finish(*std::move(finish));
  }

  void OnCancel() override { job_.Cancel(); }
  void OnDone() override { delete this; }

 private:
  CallJob job_;
  absl::Mutex mu_;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<api::GenerateStreamResponse> queue_ ABSL_GUARDED_BY(mu_);
  std::optional<grpc::Status> finish_ ABSL_GUARDED_BY(mu_);
  api::GenerateStreamResponse current_;  // the message being written
};

}  // namespace

GenerationService::GenerationService(Engine& engine, GenerationServiceOptions options)
    : engine_(engine),
      max_concurrent_(static_cast<int>(engine.config().limits().max_concurrent_requests())),
      max_queued_(options.max_queued_requests < 0 ? max_concurrent_ : options.max_queued_requests),
      capacity_(std::max(1, max_concurrent_ + max_queued_)),
      generated_tokens_(metrics_.GetCounter("quest_generated_tokens_total", "Tokens generated for all requests.")),
      time_to_first_token_(metrics_.GetHistogram(
          "quest_time_to_first_token_seconds", "Seconds from a generation RPC's arrival to its first token.",
          {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30})),
      inter_token_latency_(metrics_.GetHistogram(
          "quest_inter_token_latency_seconds", "Seconds between consecutive tokens of one request.",
          {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5})) {
  // Families present from the start, so a scrape sees every name.
  metrics_.GetCounter(kRequestsTotal, kRequestsTotalHelp, {{"status", "OK"}});
  metrics_.GetCounter(kRequestsByPolicy, kRequestsByPolicyHelp, {{"policy", engine.config().cache().policy()}});
  RenderMetrics();
  workers_.reserve(capacity_);
  for (int i = 0; i < capacity_; ++i) workers_.emplace_back([this] { WorkerLoop(); });
}

GenerationService::~GenerationService() {
  StopAdmitting();
  CancelInFlight();
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  for (std::thread& t : workers_) t.join();
}

void GenerationService::StopAdmitting() {
  absl::MutexLock lock(&mu_);
  admitting_ = false;
}

void GenerationService::CancelInFlight() {
  std::vector<std::shared_ptr<Job>> jobs;
  {
    absl::MutexLock lock(&mu_);
    jobs.assign(in_flight_.begin(), in_flight_.end());
  }
  for (const std::shared_ptr<Job>& job : jobs) {
    job->Cancel(absl::UnavailableError("the server is shutting down"));
  }
}

bool GenerationService::WaitIdle(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  const auto idle = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return in_flight_.empty(); };
  return mu_.AwaitWithTimeout(absl::Condition(&idle), timeout);
}

int GenerationService::in_flight() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(in_flight_.size());
}

absl::Status GenerationService::Admit(const std::shared_ptr<Job>& job) {
  absl::MutexLock lock(&mu_);
  if (!admitting_) return absl::UnavailableError("the server is shutting down");
  if (static_cast<int>(in_flight_.size()) >= capacity_) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the server is at capacity: ", capacity_, " requests running or queued (limits.",
                     "max_concurrent_requests ", max_concurrent_, " + ", max_queued_, " queued); retry later"));
  }
  in_flight_.insert(job);
  return absl::OkStatus();
}

void GenerationService::Release(const std::shared_ptr<Job>& job) {
  absl::MutexLock lock(&mu_);
  in_flight_.erase(job);
}

void GenerationService::Submit(std::function<void()> work) {
  absl::MutexLock lock(&mu_);
  pending_.push_back(std::move(work));
}

void GenerationService::WorkerLoop() {
  for (;;) {
    std::function<void()> work;
    {
      absl::MutexLock lock(&mu_);
      const auto ready = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return stopping_ || !pending_.empty(); };
      mu_.Await(absl::Condition(&ready));
      // Admitted work runs even when stopping: it was cancelled, so it only
      // finishes its RPC.
      if (pending_.empty()) return;
      work = std::move(pending_.front());
      pending_.pop_front();
    }
    work();
  }
}

std::string GenerationService::NextRequestId() { return absl::StrCat("rpc-", next_id_.fetch_add(1)); }

void GenerationService::RecordStatus(grpc::StatusCode code) {
  metrics_.GetCounter(kRequestsTotal, kRequestsTotalHelp, {{"status", StatusCodeName(code)}}).Increment();
}

void GenerationService::RecordPolicy(const api::GenerateRequest& request) {
  std::string policy = request.has_cache() && !request.cache().policy().empty() ? request.cache().policy()
                                                                                 : engine_.config().cache().policy();
  // Client-chosen strings never become label values: bounded cardinality.
  const std::vector<std::string> known = cache::CachePolicyRegistry::Global().Names();
  if (std::find(known.begin(), known.end(), policy) == known.end()) policy = "unknown";
  metrics_.GetCounter(kRequestsByPolicy, kRequestsByPolicyHelp, {{"policy", policy}}).Increment();
}

Engine::TokenCallback GenerationService::TimedCallback(Engine::TokenCallback on_token) {
  using Clock = std::chrono::steady_clock;
  struct Timing {
    Clock::time_point last;
    bool first = true;
  };
  auto timing = std::make_shared<Timing>();
  timing->last = Clock::now();  // the request's arrival
  return [this, timing, on_token = std::move(on_token)](const TokenEvent& e) {
    const Clock::time_point now = Clock::now();
    const double seconds = std::chrono::duration<double>(now - timing->last).count();
    (timing->first ? time_to_first_token_ : inter_token_latency_).Observe(seconds);
    timing->first = false;
    timing->last = now;
    generated_tokens_.Increment();
    if (on_token) on_token(e);
  };
}

std::string GenerationService::RenderMetrics() {
  const SchedulerStats stats = engine_.scheduler_stats();
  const auto [in_use, total] = engine_.kv_pages();
  metrics_.GetGauge("quest_queue_length", "Requests waiting in the engine for admission to the running batch.")
      .Set(stats.queued);
  metrics_.GetGauge("quest_running_sequences", "Sequences in the engine's running batch.").Set(stats.running);
  metrics_.GetGauge("quest_kv_pages_in_use", "KV cache pages in use.").Set(in_use);
  metrics_.GetGauge("quest_kv_pages_free", "KV cache pages free.").Set(total - in_use);
  return metrics_.Render();
}

grpc::ServerUnaryReactor* GenerationService::GetMetrics(grpc::CallbackServerContext* context,
                                                        const api::MetricsRequest* /*request*/,
                                                        api::MetricsResponse* response) {
  response->set_text(RenderMetrics());
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

void GenerationService::RunGenerate(const api::GenerateRequest& request, Engine::TokenCallback on_token,
                                    std::function<void(std::shared_ptr<Job>)> attach,
                                    std::function<void(grpc::Status, api::GenerateResponse*)> finish) {
  RecordPolicy(request);
  on_token = TimedCallback(std::move(on_token));  // starts the clock: the request's arrival
  auto job = std::make_shared<Job>(engine_, request.request_id().empty() ? NextRequestId() : request.request_id());
  if (absl::Status admitted = Admit(job); !admitted.ok()) {
    grpc::Status status = ToGrpcStatus(admitted);
    RecordStatus(status.error_code());
    finish(std::move(status), nullptr);
    return;
  }
  attach(job);
  Submit([this, job, &request, on_token = std::move(on_token), finish = std::move(finish)] {
    absl::StatusOr<api::GenerateResponse> result = job->Run(request, on_token);
    Release(job);
    if (!result.ok()) {
      grpc::Status status = RequestErrorToGrpcStatus(result.status());
      RecordStatus(status.error_code());
      finish(std::move(status), nullptr);
      return;
    }
    RecordStatus(grpc::StatusCode::OK);
    finish(grpc::Status::OK, &*result);
  });
}

grpc::ServerUnaryReactor* GenerationService::Generate(grpc::CallbackServerContext* /*context*/,
                                                      const api::GenerateRequest* request,
                                                      api::GenerateResponse* response) {
  auto* call = new UnaryGenerateCall();
  RunGenerate(
      *request, nullptr, [call](std::shared_ptr<Job> job) { call->set_job(std::move(job)); },
      [call, response](grpc::Status status, api::GenerateResponse* result) {
        if (result != nullptr) *response = std::move(*result);
        call->Finish(std::move(status));
      });
  return call;
}

grpc::ServerWriteReactor<api::GenerateStreamResponse>* GenerationService::GenerateStream(
    grpc::CallbackServerContext* /*context*/, const api::GenerateRequest* request) {
  auto* call = new StreamGenerateCall();
  RunGenerate(
      *request,
      [call](const TokenEvent& e) {
        api::GenerateStreamResponse message;
        message.mutable_token()->set_id(e.id);
        message.mutable_token()->set_text(std::string(e.text));
        call->Send(std::move(message));
      },
      [call](std::shared_ptr<Job> job) { call->set_job(std::move(job)); },
      [call](grpc::Status status, api::GenerateResponse* result) {
        if (result != nullptr) {
          api::GenerateStreamResponse last;
          *last.mutable_final() = std::move(*result);
          call->Send(std::move(last));
        }
        call->FinishAfterWrites(std::move(status));  // no writes pending: a plain Finish
      });
  return call;
}

grpc::ServerUnaryReactor* GenerationService::GetModelInfo(grpc::CallbackServerContext* context,
                                                          const api::GetModelInfoRequest* /*request*/,
                                                          api::GetModelInfoResponse* response) {
  const ModelInfo& info = engine_.model_info();
  const config::EngineConfig& config = engine_.config();
  response->set_architecture(info.architecture);
  response->set_context_length(info.context_length);
  response->set_vocab_size(info.vocab_size);
  response->set_num_layers(info.num_layers);
  response->set_num_heads(info.num_heads);
  response->set_num_kv_heads(info.num_kv_heads);
  response->set_head_dim(info.head_dim);
  response->set_backend(info.backend);
  for (const std::string& name : cache::CachePolicyRegistry::Global().Names()) response->add_cache_policies(name);
  response->set_default_cache_policy(config.cache().policy());
  response->set_max_new_tokens(static_cast<int32_t>(config.limits().max_new_tokens()));
  response->set_has_tokenizer(engine_.tokenizer() != nullptr);
  response->set_chat_template(info.chat_template);
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* GenerationService::Tokenize(grpc::CallbackServerContext* context,
                                                      const api::TokenizeRequest* request,
                                                      api::TokenizeResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  const Tokenizer* tokenizer = engine_.tokenizer();
  if (tokenizer == nullptr) {
    reactor->Finish(RequestErrorToGrpcStatus(absl::FailedPreconditionError(
        absl::StrCat("the model at ", engine_.model_info().source, " has no tokenizer; send token_ids"))));
    return reactor;
  }
  // As the engine builds a text prompt (runtime/engine.cc PromptTokens).
  if (tokenizer->add_bos() && tokenizer->bos_id() >= 0) response->add_token_ids(tokenizer->bos_id());
  absl::StatusOr<std::vector<int32_t>> ids = tokenizer->Encode(request->text());
  if (!ids.ok()) {
    reactor->Finish(RequestErrorToGrpcStatus(ids.status()));
    return reactor;
  }
  for (int32_t id : *ids) response->add_token_ids(id);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace quest::service
