#ifndef QUEST_SERVICE_GENERATION_SERVICE_H_
#define QUEST_SERVICE_GENERATION_SERVICE_H_

// The Generation gRPC service (proto/generation.proto) over one
// quest::Engine. GenerationServer (service/server.h) hosts it; tests may
// register it on a server of their own.
//
// Admission: at most limits.max_concurrent_requests + max_queued_requests
// generation requests are in flight (running or waiting in the engine); one
// more is RESOURCE_EXHAUSTED at once. Nothing queues without bound.
//
// Cancellation: a client that cancels, or whose deadline passes, cancels its
// request in the engine (Engine::Cancel by request id; the service assigns
// "rpc-N" when the client sent none), which stops at its next step and
// returns its KV pages.
//
// Errors are mapped only by service/grpc_status.h (RequestErrorToGrpcStatus);
// the service's own are RESOURCE_EXHAUSTED (full) and UNAVAILABLE (shutting
// down).
//
// Engine work runs on the service's own threads (one per admission slot), so
// gRPC's callback threads never block on a generation.
//
// Thread-safety: every method may be called from any thread.

#include <atomic>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "proto/generation.grpc.pb.h"
#include "runtime/engine.h"
#include "service/metrics.h"

namespace quest::service {

struct GenerationServiceOptions {
  // Requests admitted beyond the engine's limits.max_concurrent_requests,
  // waiting for the engine. -1: as many as limits.max_concurrent_requests.
  int max_queued_requests = -1;
};

class GenerationService final : public api::Generation::CallbackService {
 public:
  // `engine` must outlive the service.
  explicit GenerationService(Engine& engine, GenerationServiceOptions options = {});
  // Cancels what is in flight and joins the worker threads. The gRPC server
  // hosting the service must have been shut down first.
  ~GenerationService() override;

  grpc::ServerUnaryReactor* Generate(grpc::CallbackServerContext* context, const api::GenerateRequest* request,
                                     api::GenerateResponse* response) override;
  grpc::ServerWriteReactor<api::GenerateStreamResponse>* GenerateStream(
      grpc::CallbackServerContext* context, const api::GenerateRequest* request) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context,
                                         const api::GetModelInfoRequest* request,
                                         api::GetModelInfoResponse* response) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context, const api::TokenizeRequest* request,
                                     api::TokenizeResponse* response) override;
  // The metrics below, Prometheus text exposition format 0.0.4.
  grpc::ServerUnaryReactor* GetMetrics(grpc::CallbackServerContext* context, const api::MetricsRequest* request,
                                       api::MetricsResponse* response) override;

  // Shutdown, in steps (GenerationServer::Shutdown drives them).
  // New generation requests are UNAVAILABLE from now on.
  void StopAdmitting();
  // Every in-flight request stops at its next step; it ends with
  // finish_reason CANCELLED and what it generated so far.
  void CancelInFlight();
  // True once no request is in flight (running or waiting), false when
  // `timeout` passed first.
  bool WaitIdle(absl::Duration timeout = absl::InfiniteDuration());

  // Generation requests running or waiting in the engine.
  int in_flight() const;
  // The most that may be in flight at once.
  int capacity() const { return capacity_; }

  // Metrics (GetMetrics renders them; gauges are read from the engine then):
  //   quest_requests_total{status}         generation RPCs by final gRPC code
  //   quest_requests_by_policy_total{policy} generation RPCs by cache policy
  //   quest_generated_tokens_total         tokens streamed or returned
  //   quest_time_to_first_token_seconds    histogram, from arrival
  //   quest_inter_token_latency_seconds    histogram, between tokens
  //   quest_queue_length, quest_running_sequences (scheduler_stats)
  //   quest_kv_pages_in_use, quest_kv_pages_free (kv_pages)
  std::string RenderMetrics();

  class Job;  // one admitted request (generation_service.cc)

 private:
  // Admits a request or says why not (UNAVAILABLE, RESOURCE_EXHAUSTED).
  absl::Status Admit(const std::shared_ptr<Job>& job);
  void Release(const std::shared_ptr<Job>& job);
  void Submit(std::function<void()> work);
  void WorkerLoop();
  std::string NextRequestId();
  // Counts a generation RPC's final status / its cache policy.
  void RecordStatus(grpc::StatusCode code);
  void RecordPolicy(const api::GenerateRequest& request);
  // Times and counts one request's tokens; `on_token` is what else to do.
  Engine::TokenCallback TimedCallback(Engine::TokenCallback on_token);
  // The path both generation RPCs share: count the policy, admit, run on a
  // worker, count the final status. `attach` ties the admitted job to the
  // RPC (for cancellation); `finish` ends the RPC, with the response when
  // the status is OK (nullptr otherwise). `request` must outlive the RPC.
  void RunGenerate(const api::GenerateRequest& request, Engine::TokenCallback on_token,
                   std::function<void(std::shared_ptr<Job>)> attach,
                   std::function<void(grpc::Status, api::GenerateResponse*)> finish);

  Engine& engine_;
  const int max_concurrent_;
  const int max_queued_;
  const int capacity_;

  mutable absl::Mutex mu_;
  bool admitting_ ABSL_GUARDED_BY(mu_) = true;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  absl::flat_hash_set<std::shared_ptr<Job>> in_flight_ ABSL_GUARDED_BY(mu_);
  std::deque<std::function<void()>> pending_ ABSL_GUARDED_BY(mu_);
  std::atomic<int64_t> next_id_{1};
  std::vector<std::thread> workers_;

  MetricsRegistry metrics_;
  Counter& generated_tokens_;
  Histogram& time_to_first_token_;
  Histogram& inter_token_latency_;
};

}  // namespace quest::service

#endif  // QUEST_SERVICE_GENERATION_SERVICE_H_
