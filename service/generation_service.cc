#include "service/generation_service.h"

#include <algorithm>
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

class UnaryGenerateCall final : public grpc::ServerUnaryReactor {
 public:
  void set_job(std::shared_ptr<Job> job) {
    absl::MutexLock lock(&mu_);
    job_ = std::move(job);
  }
  void OnCancel() override {
    absl::MutexLock lock(&mu_);
    if (job_) job_->Cancel(absl::CancelledError("the client cancelled the request"));
  }
  void OnDone() override { delete this; }

 private:
  absl::Mutex mu_;
  std::shared_ptr<Job> job_ ABSL_GUARDED_BY(mu_);
};

// Server streaming. The engine never waits for the network: messages queue
// here (at most max_tokens + 1 of them) and each write starts when the
// previous one is done, as gRPC requires.
class StreamGenerateCall final : public grpc::ServerWriteReactor<api::GenerateStreamResponse> {
 public:
  void set_job(std::shared_ptr<Job> job) {
    absl::MutexLock lock(&mu_);
    job_ = std::move(job);
  }

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

  void OnCancel() override {
    absl::MutexLock lock(&mu_);
    if (job_) job_->Cancel(absl::CancelledError("the client cancelled the request"));
  }
  void OnDone() override { delete this; }

 private:
  absl::Mutex mu_;
  std::shared_ptr<Job> job_ ABSL_GUARDED_BY(mu_);
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
      capacity_(std::max(1, max_concurrent_ + max_queued_)) {
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

grpc::ServerUnaryReactor* GenerationService::Generate(grpc::CallbackServerContext* /*context*/,
                                                      const api::GenerateRequest* request,
                                                      api::GenerateResponse* response) {
  auto* call = new UnaryGenerateCall();
  auto job = std::make_shared<Job>(engine_, request->request_id().empty() ? NextRequestId() : request->request_id());
  if (absl::Status admitted = Admit(job); !admitted.ok()) {
    call->Finish(ToGrpcStatus(admitted));
    return call;
  }
  call->set_job(job);
  Submit([this, job, call, request, response] {
    absl::StatusOr<api::GenerateResponse> result = job->Run(*request, nullptr);
    Release(job);
    if (!result.ok()) {
      call->Finish(RequestErrorToGrpcStatus(result.status()));
      return;
    }
    *response = *std::move(result);
    call->Finish(grpc::Status::OK);
  });
  return call;
}

grpc::ServerWriteReactor<api::GenerateStreamResponse>* GenerationService::GenerateStream(
    grpc::CallbackServerContext* /*context*/, const api::GenerateRequest* request) {
  auto* call = new StreamGenerateCall();
  auto job = std::make_shared<Job>(engine_, request->request_id().empty() ? NextRequestId() : request->request_id());
  if (absl::Status admitted = Admit(job); !admitted.ok()) {
    call->Finish(ToGrpcStatus(admitted));
    return call;
  }
  call->set_job(job);
  Submit([this, job, call, request] {
    absl::StatusOr<api::GenerateResponse> result = job->Run(*request, [call](const TokenEvent& e) {
      api::GenerateStreamResponse message;
      message.mutable_token()->set_id(e.id);
      message.mutable_token()->set_text(std::string(e.text));
      call->Send(std::move(message));
    });
    Release(job);
    if (!result.ok()) {
      call->FinishAfterWrites(RequestErrorToGrpcStatus(result.status()));
      return;
    }
    api::GenerateStreamResponse last;
    *last.mutable_final() = *std::move(result);
    call->Send(std::move(last));
    call->FinishAfterWrites(grpc::Status::OK);
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
