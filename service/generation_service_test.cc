// The Generation service end to end: an in-process server on 127.0.0.1 (port
// picked by gRPC), the C++ client stub, the tiny checkpoint
// tests/fixtures/hf_tiny/gqa (context 64, vocabulary 128, no tokenizer, so
// prompts are token ids).

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "google/protobuf/dynamic_message.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "proto/generation.grpc.pb.h"
#include "runtime/engine.h"
#include "service/server.h"
#include "service/testdata/health.grpc.pb.h"
#include "tests/tiny_model.h"

namespace quest::service {
namespace {

using ::grpc::health::v1::HealthCheckResponse;
using ::testing::AllOf;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::Gt;
using ::testing::HasSubstr;
using ::testing::Lt;
using ::testing::UnorderedElementsAre;

config::EngineConfig TinyConfig(int max_concurrent_requests = 2) {
  config::EngineConfig c = fixtures::TinyEngineConfig();
  c.mutable_limits()->set_max_concurrent_requests(max_concurrent_requests);
  return c;
}

// The real engine, observed: it can slow every token down (so a test acts
// while a request is mid-generation) and records how each request ended.
class ObservedEngine final : public Engine {
 public:
  explicit ObservedEngine(std::unique_ptr<Engine> engine) : engine_(std::move(engine)) {}

  void set_token_delay(absl::Duration d) {
    absl::MutexLock lock(&mu_);
    delay_ = d;
  }
  // Finish reason of every request that returned OK, in order of return.
  std::vector<api::FinishReason> finish_reasons() {
    absl::MutexLock lock(&mu_);
    return finished_;
  }
  std::vector<int> generated_tokens() {
    absl::MutexLock lock(&mu_);
    return generated_;
  }
  // The most Generate calls that were inside the engine at once.
  int max_overlap() {
    absl::MutexLock lock(&mu_);
    return max_overlap_;
  }

  absl::StatusOr<api::GenerateResponse> Generate(const api::GenerateRequest& request,
                                                 const TokenCallback& on_token) override {
    absl::Duration delay;
    {
      absl::MutexLock lock(&mu_);
      delay = delay_;
      max_overlap_ = std::max(max_overlap_, ++inside_);
    }
    auto result = engine_->Generate(request, [&](const TokenEvent& e) {
      if (on_token) on_token(e);
      absl::SleepFor(delay);
    });
    absl::MutexLock lock(&mu_);
    --inside_;
    if (result.ok()) {
      finished_.push_back(result->finish_reason());
      generated_.push_back(result->token_ids_size());
    }
    return result;
  }
  bool Cancel(absl::string_view id) override { return engine_->Cancel(id); }
  const ModelInfo& model_info() const override { return engine_->model_info(); }
  const config::EngineConfig& config() const override { return engine_->config(); }
  const Tokenizer* tokenizer() const override { return engine_->tokenizer(); }
  std::pair<int, int> kv_pages() const override { return engine_->kv_pages(); }
  SchedulerStats scheduler_stats() const override { return engine_->scheduler_stats(); }

 private:
  std::unique_ptr<Engine> engine_;
  absl::Mutex mu_;
  absl::Duration delay_ ABSL_GUARDED_BY(mu_) = absl::ZeroDuration();
  std::vector<api::FinishReason> finished_ ABSL_GUARDED_BY(mu_);
  std::vector<int> generated_ ABSL_GUARDED_BY(mu_);
  int inside_ ABSL_GUARDED_BY(mu_) = 0;
  int max_overlap_ ABSL_GUARDED_BY(mu_) = 0;
};

struct Streamed {
  std::vector<int32_t> ids;  // of the token messages
  std::string text;          // their deltas, concatenated
  std::optional<api::GenerateResponse> final;
  grpc::Status status;
  int messages_after_final = 0;
};

class ServiceTest : public ::testing::Test {
 protected:
  void StartServer(config::EngineConfig config = TinyConfig(), GenerationServiceOptions options = {}) {
    auto engine = Engine::Create(config);
    ASSERT_TRUE(engine.ok()) << engine.status();
    engine_ = std::make_unique<ObservedEngine>(*std::move(engine));
    ServerOptions server_options;
    server_options.listen = "127.0.0.1:0";
    server_options.service = options;
    auto server = GenerationServer::Start(*engine_, server_options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    ASSERT_GT(server_->port(), 0);
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->port()), grpc::InsecureChannelCredentials());
    stub_ = api::Generation::NewStub(channel_);
  }

  void TearDown() override {
    server_.reset();  // before the engine it calls
    engine_.reset();
  }

  grpc::Status Unary(const api::GenerateRequest& r, api::GenerateResponse* out,
                     std::optional<absl::Duration> deadline = std::nullopt) {
    grpc::ClientContext context;
    if (deadline) context.set_deadline(absl::ToChronoTime(absl::Now() + *deadline));
    return stub_->Generate(&context, r, out);
  }

  static Streamed ReadAll(grpc::ClientReader<api::GenerateStreamResponse>& reader) {
    Streamed s;
    api::GenerateStreamResponse m;
    while (reader.Read(&m)) {
      if (s.final.has_value()) ++s.messages_after_final;
      if (m.has_token()) {
        s.ids.push_back(m.token().id());
        s.text += m.token().text();
      } else if (m.has_final()) {
        s.final = m.final();
      }
    }
    s.status = reader.Finish();
    return s;
  }

  Streamed Stream(const api::GenerateRequest& r) {
    grpc::ClientContext context;
    std::unique_ptr<grpc::ClientReader<api::GenerateStreamResponse>> reader = stub_->GenerateStream(&context, r);
    return ReadAll(*reader);
  }

  // Each request alone, one after another: the tokens each generates.
  std::vector<std::vector<int32_t>> RunEachAlone(const std::vector<api::GenerateRequest>& requests) {
    std::vector<std::vector<int32_t>> ids;
    for (const api::GenerateRequest& r : requests) {
      api::GenerateResponse out;
      const grpc::Status status = Unary(r, &out);
      EXPECT_TRUE(status.ok()) << status.error_message();
      ids.push_back(fixtures::TokenIds(out));
    }
    return ids;
  }

  // Every request streamed at once, a client thread each.
  std::vector<Streamed> StreamAllAtOnce(const std::vector<api::GenerateRequest>& requests) {
    std::vector<Streamed> streamed(requests.size());
    std::vector<std::thread> clients;
    for (size_t i = 0; i < requests.size(); ++i) {
      clients.emplace_back([&, i] { streamed[i] = Stream(requests[i]); });
    }
    for (std::thread& t : clients) t.join();
    return streamed;
  }

  HealthCheckResponse::ServingStatus Health(const std::string& service) {
    auto health = grpc::health::v1::Health::NewStub(channel_);
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
    grpc::health::v1::HealthCheckRequest request;
    request.set_service(service);
    HealthCheckResponse response;
    const grpc::Status s = health->Check(&context, request, &response);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return response.status();
  }

  // Nothing in flight and every KV page back in the pool, within 10 s.
  bool Drained() {
    const absl::Time give_up = absl::Now() + absl::Seconds(10);
    while (absl::Now() < give_up) {
      if (server_->service().in_flight() == 0 && engine_->kv_pages().first == 0) return true;
      absl::SleepFor(absl::Milliseconds(5));
    }
    return false;
  }

  std::unique_ptr<ObservedEngine> engine_;
  std::unique_ptr<GenerationServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<api::Generation::Stub> stub_;
};

TEST_F(ServiceTest, StreamTokensEqualUnaryAndEndWithFinishReasonAndUsage) {
  StartServer();
  const api::GenerateRequest r = fixtures::TokenRequest({5, 6, 7, 8, 9}, 12);
  api::GenerateResponse unary;
  ASSERT_TRUE(Unary(r, &unary).ok());
  EXPECT_EQ(unary.token_ids_size(), 12);
  EXPECT_EQ(unary.finish_reason(), api::LENGTH);
  EXPECT_EQ(unary.usage().prompt_tokens(), 5);
  EXPECT_EQ(unary.usage().generated_tokens(), 12);
  EXPECT_GT(unary.usage().time_to_first_token_ms(), 0);
  EXPECT_GT(unary.usage().mean_inter_token_ms(), 0);

  const Streamed s = Stream(r);
  ASSERT_TRUE(s.status.ok()) << s.status.error_message();
  EXPECT_EQ(s.ids, fixtures::TokenIds(unary)) << "one message per token, the same tokens as unary";
  ASSERT_TRUE(s.final.has_value());
  EXPECT_EQ(s.messages_after_final, 0) << "the final message is the last";
  EXPECT_EQ(fixtures::TokenIds(*s.final), fixtures::TokenIds(unary));
  EXPECT_EQ(s.text, s.final->text());
  EXPECT_EQ(s.final->finish_reason(), api::LENGTH);
  EXPECT_EQ(s.final->usage().prompt_tokens(), 5);
  EXPECT_EQ(s.final->usage().generated_tokens(), 12);
  EXPECT_GT(s.final->usage().time_to_first_token_ms(), 0);
  EXPECT_EQ(engine_->kv_pages().first, 0);
}

TEST_F(ServiceTest, ConcurrentStreamsEachEqualTheirSequentialRun) {
  StartServer();  // capacity 2 + 2 queued
  const std::vector<api::GenerateRequest> requests = {
      fixtures::TokenRequest({5, 6, 7}, 20), fixtures::TokenRequest({9, 8, 7, 6, 5, 4}, 16), fixtures::TokenRequest({100, 3}, 24), fixtures::TokenRequest({42}, 18)};
  const std::vector<std::vector<int32_t>> sequential = RunEachAlone(requests);
  ASSERT_FALSE(HasFailure());
  // Slowed down so that the streams really overlap (the scheduler batches
  // them).
  engine_->set_token_delay(absl::Milliseconds(5));
  const std::vector<Streamed> concurrent = StreamAllAtOnce(requests);
  for (size_t i = 0; i < requests.size(); ++i) {
    ASSERT_TRUE(concurrent[i].status.ok()) << i << ": " << concurrent[i].status.error_message();
    EXPECT_EQ(concurrent[i].ids, sequential[i]) << i;
    ASSERT_TRUE(concurrent[i].final.has_value());
    EXPECT_EQ(fixtures::TokenIds(*concurrent[i].final), sequential[i]) << i;
  }
  EXPECT_GE(engine_->max_overlap(), 2);
  EXPECT_TRUE(Drained());
}

// Sixteen streams at once, with mixed prompt lengths and every built-in cache
// policy (per-request overrides), through the real service and scheduler:
// each stream's tokens equal the same request run alone.
TEST_F(ServiceTest, SixteenConcurrentMixedStreamsEqualTheirSequentialRuns) {
  StartServer(TinyConfig(/*max_concurrent_requests=*/8));  // 8 running + 8 queued
  std::vector<api::GenerateRequest> requests;
  for (int i = 0; i < 16; ++i) {
    std::vector<int32_t> prompt;
    for (int j = 0; j < 1 + (i * 7) % 40; ++j) prompt.push_back(3 + (i * 13 + j * 5) % 120);
    api::GenerateRequest r = fixtures::TokenRequest(prompt, 16);
    config::CacheConfig& c = *r.mutable_cache();
    switch (i % 5) {
      case 0:
        c.set_policy("dense");
        break;
      case 1:
        c.set_policy("quest");
        c.mutable_quest()->set_token_budget(8);
        c.mutable_quest()->set_page_size(2);
        c.mutable_quest()->set_dense_layers(0);
        break;
      case 2:
        c.set_policy("streaming_llm");
        c.mutable_streaming_llm()->set_sink_tokens(2);
        c.mutable_streaming_llm()->set_window_tokens(8);
        break;
      case 3:
        c.set_policy("h2o");
        c.mutable_h2o()->set_token_budget(12);
        break;
      case 4:
        c.set_policy("tova");
        c.mutable_tova()->set_token_budget(12);
        break;
    }
    requests.push_back(std::move(r));
  }
  const std::vector<std::vector<int32_t>> sequential = RunEachAlone(requests);
  ASSERT_FALSE(HasFailure());
  engine_->set_token_delay(absl::Milliseconds(2));  // so the streams overlap
  const std::vector<Streamed> concurrent = StreamAllAtOnce(requests);
  for (size_t i = 0; i < requests.size(); ++i) {
    ASSERT_TRUE(concurrent[i].status.ok()) << i << ": " << concurrent[i].status.error_message();
    EXPECT_EQ(concurrent[i].ids, sequential[i]) << "request " << i << " (" << requests[i].cache().policy() << ")";
  }
  EXPECT_GT(engine_->scheduler_stats().max_batch, 1) << "the scheduler batched them";
  EXPECT_TRUE(Drained());
}

TEST_F(ServiceTest, ClientCancelMidStreamCancelsInTheEngineAndReturnsPages) {
  StartServer();
  engine_->set_token_delay(absl::Milliseconds(20));  // 60 tokens: 1.2 s
  grpc::ClientContext context;
  auto reader = stub_->GenerateStream(&context, fixtures::TokenRequest({3, 4, 5}, 60));
  api::GenerateStreamResponse m;
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(reader->Read(&m));
    ASSERT_TRUE(m.has_token());
  }
  EXPECT_GT(engine_->kv_pages().first, 0) << "mid-generation, the sequence holds pages";
  context.TryCancel();
  const Streamed rest = ReadAll(*reader);
  EXPECT_EQ(rest.status.error_code(), grpc::StatusCode::CANCELLED);
  ASSERT_TRUE(Drained()) << "in flight " << server_->service().in_flight() << ", pages "
                         << engine_->kv_pages().first;
  EXPECT_THAT(engine_->finish_reasons(), ElementsAre(api::CANCELLED));
  EXPECT_THAT(engine_->generated_tokens(), ElementsAre(Lt(60)));

  engine_->set_token_delay(absl::ZeroDuration());
  EXPECT_EQ(Health(""), HealthCheckResponse::SERVING);
  api::GenerateResponse after;
  EXPECT_TRUE(Unary(fixtures::TokenRequest({3, 4, 5}, 4), &after).ok()) << "the server still serves";
}

TEST_F(ServiceTest, DeadlineExpiryCancelsInTheEngineAndReturnsPages) {
  StartServer();
  engine_->set_token_delay(absl::Milliseconds(20));
  api::GenerateResponse out;
  const grpc::Status s = Unary(fixtures::TokenRequest({3, 4, 5}, 60), &out, absl::Milliseconds(300));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << s.error_message();
  ASSERT_TRUE(Drained());
  EXPECT_THAT(engine_->finish_reasons(), ElementsAre(api::CANCELLED));
  EXPECT_THAT(engine_->generated_tokens(), ElementsAre(Lt(60)));
  EXPECT_EQ(Health(""), HealthCheckResponse::SERVING);
  engine_->set_token_delay(absl::ZeroDuration());
  EXPECT_TRUE(Unary(fixtures::TokenRequest({3, 4, 5}, 4), &out).ok());
}

// With one slot (limits.max_concurrent_requests 1) the engine runs one
// request at a time: a request waiting behind another is cancelled where it
// waits and never prefills. (With more slots the scheduler batches them.)
TEST_F(ServiceTest, DeadlineOfAQueuedRequestCancelsItBeforeItRuns) {
  StartServer(TinyConfig(/*max_concurrent_requests=*/1));
  engine_->set_token_delay(absl::Milliseconds(20));
  grpc::ClientContext long_context;
  auto long_stream = stub_->GenerateStream(&long_context, fixtures::TokenRequest({3, 4, 5}, 60));
  api::GenerateStreamResponse m;
  ASSERT_TRUE(long_stream->Read(&m));  // it holds the engine now
  api::GenerateResponse out;
  EXPECT_EQ(Unary(fixtures::TokenRequest({7, 8}, 4), &out, absl::Milliseconds(200)).error_code(),
            grpc::StatusCode::DEADLINE_EXCEEDED);
  long_context.TryCancel();
  ReadAll(*long_stream);
  ASSERT_TRUE(Drained());
  EXPECT_THAT(engine_->finish_reasons(), ElementsAre(api::CANCELLED, api::CANCELLED));
  // (They return in either order.)
  EXPECT_THAT(engine_->generated_tokens(), UnorderedElementsAre(AllOf(Gt(0), Lt(60)), 0));
}

TEST_F(ServiceTest, EveryBadInputGetsItsCodeAndNamesTheField) {
  StartServer();
  struct Case {
    std::string name;
    api::GenerateRequest request;
    grpc::StatusCode code;
    std::string message;
  };
  std::vector<Case> cases;
  cases.push_back({"no prompt", api::GenerateRequest(), grpc::StatusCode::INVALID_ARGUMENT, "prompt"});
  cases.back().request.mutable_sampling()->set_max_tokens(4);
  cases.push_back({"empty token_ids", fixtures::TokenRequest({}, 4), grpc::StatusCode::INVALID_ARGUMENT, "prompt: token_ids is empty"});
  cases.back().request.mutable_token_ids();
  cases.push_back({"empty text", fixtures::TokenRequest({}, 4), grpc::StatusCode::INVALID_ARGUMENT, "prompt: text is empty"});
  cases.back().request.set_text("");
  cases.push_back({"max_tokens 0", fixtures::TokenRequest({3}, 0), grpc::StatusCode::INVALID_ARGUMENT, "sampling.max_tokens must be > 0"});
  cases.push_back({"max_tokens over the limit", fixtures::TokenRequest({3}, 5000), grpc::StatusCode::INVALID_ARGUMENT,
                   "sampling.max_tokens 5000 exceeds the configured limit"});
  cases.push_back({"token id out of range", fixtures::TokenRequest({3, 128}, 4), grpc::StatusCode::INVALID_ARGUMENT,
                   "token_ids[1] = 128 is outside the vocabulary"});
  cases.push_back({"empty stop string", fixtures::TokenRequest({3}, 4), grpc::StatusCode::INVALID_ARGUMENT, "sampling.stop[0]"});
  cases.back().request.mutable_sampling()->add_stop("");
  cases.push_back({"unknown policy", fixtures::TokenRequest({3}, 4), grpc::StatusCode::INVALID_ARGUMENT,
                   "unknown cache policy \"no-such-policy\"; known policies: dense"});
  cases.back().request.mutable_cache()->set_policy("no-such-policy");
  cases.push_back({"prompt + max_tokens over the context", fixtures::TokenRequest({3, 4, 5}, 62), grpc::StatusCode::OUT_OF_RANGE,
                   "exceed the context length of 64"});
  cases.push_back({"text without a tokenizer", fixtures::TokenRequest({}, 4), grpc::StatusCode::FAILED_PRECONDITION,
                   "has no tokenizer"});
  cases.back().request.set_text("hello");
  for (const Case& c : cases) {
    api::GenerateResponse out;
    const grpc::Status unary = Unary(c.request, &out);
    EXPECT_EQ(unary.error_code(), c.code) << c.name << ": " << unary.error_message();
    EXPECT_THAT(unary.error_message(), HasSubstr(c.message)) << c.name;
    const Streamed streamed = Stream(c.request);
    EXPECT_EQ(streamed.status.error_code(), c.code) << c.name << " (stream)";
    EXPECT_THAT(streamed.status.error_message(), HasSubstr(c.message)) << c.name << " (stream)";
    EXPECT_TRUE(streamed.ids.empty() && !streamed.final.has_value()) << c.name;
  }
  grpc::ClientContext context;
  api::TokenizeRequest tokenize;
  tokenize.set_text("hello");
  api::TokenizeResponse tokens;
  EXPECT_EQ(stub_->Tokenize(&context, tokenize, &tokens).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_TRUE(Drained());
}

TEST_F(ServiceTest, FullKvPoolIsResourceExhausted) {
  config::EngineConfig c = TinyConfig();
  c.mutable_cache()->set_num_pages(3);  // 12 tokens
  StartServer(c);
  api::GenerateResponse out;
  const grpc::Status s = Unary(fixtures::TokenRequest({3, 4, 5, 6, 7, 8, 9, 10}, 20), &out);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
  EXPECT_TRUE(Drained());
  EXPECT_TRUE(Unary(fixtures::TokenRequest({3, 4}, 4), &out).ok());
}

TEST_F(ServiceTest, BeyondCapacityIsResourceExhaustedAtOnce) {
  GenerationServiceOptions options;
  options.max_queued_requests = 1;
  StartServer(TinyConfig(/*max_concurrent_requests=*/1), options);
  ASSERT_EQ(server_->service().capacity(), 2);
  engine_->set_token_delay(absl::Milliseconds(50));  // each holds the engine 3 s
  grpc::ClientContext first_context, second_context;
  auto first = stub_->GenerateStream(&first_context, fixtures::TokenRequest({3, 4, 5}, 60));
  auto second = stub_->GenerateStream(&second_context, fixtures::TokenRequest({6, 7}, 60));
  const absl::Time give_up = absl::Now() + absl::Seconds(10);
  while (server_->service().in_flight() < 2 && absl::Now() < give_up) absl::SleepFor(absl::Milliseconds(2));
  ASSERT_EQ(server_->service().in_flight(), 2);

  const absl::Time start = absl::Now();
  api::GenerateResponse out;
  const grpc::Status unary = Unary(fixtures::TokenRequest({8}, 4), &out);
  const Streamed stream = Stream(fixtures::TokenRequest({8}, 4));
  EXPECT_LT(absl::Now() - start, absl::Seconds(1)) << "refused at once, never queued";
  EXPECT_EQ(unary.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(unary.error_message(), HasSubstr("at capacity"));
  EXPECT_EQ(stream.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);

  first_context.TryCancel();
  second_context.TryCancel();
  ReadAll(*first);
  ReadAll(*second);
  ASSERT_TRUE(Drained());
  engine_->set_token_delay(absl::ZeroDuration());
  EXPECT_TRUE(Unary(fixtures::TokenRequest({8}, 4), &out).ok()) << "slots are released";
}

TEST_F(ServiceTest, GetModelInfoDescribesTheModelAndPolicies) {
  StartServer();
  grpc::ClientContext context;
  api::GetModelInfoResponse info;
  ASSERT_TRUE(stub_->GetModelInfo(&context, api::GetModelInfoRequest(), &info).ok());
  EXPECT_EQ(info.architecture(), "LlamaForCausalLM");
  EXPECT_EQ(info.context_length(), 64);
  EXPECT_EQ(info.vocab_size(), 128);
  EXPECT_EQ(info.num_layers(), 2);
  EXPECT_EQ(info.num_heads(), 8);
  EXPECT_EQ(info.num_kv_heads(), 2);
  EXPECT_EQ(info.head_dim(), 8);
  EXPECT_EQ(info.backend(), "cpu");
  EXPECT_THAT(info.cache_policies(), Contains("dense"));
  EXPECT_THAT(info.cache_policies(), Contains("quest"));
  EXPECT_EQ(info.default_cache_policy(), "dense");
  EXPECT_EQ(info.max_new_tokens(), 4096);
  EXPECT_FALSE(info.has_tokenizer());
}

TEST_F(ServiceTest, PerRequestPolicyOverrideIsServed) {
  StartServer();
  api::GenerateRequest r = fixtures::TokenRequest({5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17}, 8);
  r.mutable_cache()->set_policy("quest");
  r.mutable_cache()->mutable_quest()->set_token_budget(8);
  api::GenerateResponse out;
  const grpc::Status s = Unary(r, &out);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(out.token_ids_size(), 8);
  r.mutable_cache()->mutable_quest()->set_token_budget(0);
  EXPECT_EQ(Unary(r, &out).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(ServiceTest, ShutdownFlipsHealthRefusesNewRequestsAndCancelsInFlight) {
  StartServer();
  EXPECT_EQ(Health(""), HealthCheckResponse::SERVING);
  EXPECT_EQ(Health("quest.api.Generation"), HealthCheckResponse::SERVING);

  engine_->set_token_delay(absl::Milliseconds(100));  // 60 tokens: 6 s, more than the grace
  grpc::ClientContext context;
  auto reader = stub_->GenerateStream(&context, fixtures::TokenRequest({3, 4, 5}, 60));
  api::GenerateStreamResponse first;
  ASSERT_TRUE(reader->Read(&first));

  std::thread shutdown([&] { server_->Shutdown(absl::Seconds(2)); });
  const absl::Time give_up = absl::Now() + absl::Seconds(2);
  while (Health("") != HealthCheckResponse::NOT_SERVING && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  EXPECT_EQ(Health(""), HealthCheckResponse::NOT_SERVING);
  EXPECT_EQ(Health("quest.api.Generation"), HealthCheckResponse::NOT_SERVING);
  api::GenerateResponse out;
  const grpc::Status refused = Unary(fixtures::TokenRequest({3}, 2), &out);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(refused.error_message(), HasSubstr("shutting down"));

  // After the grace the in-flight stream is cancelled: it ends normally,
  // with what it generated and finish_reason CANCELLED.
  const Streamed rest = ReadAll(*reader);
  ASSERT_TRUE(rest.status.ok()) << rest.status.error_message();
  ASSERT_TRUE(rest.final.has_value());
  EXPECT_EQ(rest.final->finish_reason(), api::CANCELLED);
  EXPECT_LT(rest.final->token_ids_size(), 60);
  EXPECT_EQ(rest.final->token_ids_size(), 1 + static_cast<int>(rest.ids.size()));
  shutdown.join();
  EXPECT_EQ(engine_->kv_pages().first, 0);
}

TEST_F(ServiceTest, ASecondServerOnTheSamePortFailsToStart) {
  StartServer();
  ServerOptions options;
  options.listen = absl::StrCat("127.0.0.1:", server_->port());
  auto second = GenerationServer::Start(*engine_, options);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(second.status().message(), HasSubstr(options.listen));
  EXPECT_EQ(Health(""), HealthCheckResponse::SERVING) << "the first one still serves";
}

// Server reflection, asked as grpcurl does: list the services. The request
// and response types come from the descriptors that gRPC's reflection
// library registers, so this test needs no copy of reflection.proto.
TEST_F(ServiceTest, ReflectionListsTheService) {
  StartServer();
  const google::protobuf::DescriptorPool* pool = google::protobuf::DescriptorPool::generated_pool();
  const google::protobuf::Descriptor* request_type =
      pool->FindMessageTypeByName("grpc.reflection.v1alpha.ServerReflectionRequest");
  const google::protobuf::Descriptor* response_type =
      pool->FindMessageTypeByName("grpc.reflection.v1alpha.ServerReflectionResponse");
  ASSERT_NE(request_type, nullptr);
  ASSERT_NE(response_type, nullptr);
  google::protobuf::DynamicMessageFactory factory;
  std::unique_ptr<google::protobuf::Message> request(factory.GetPrototype(request_type)->New());
  request->GetReflection()->SetString(request.get(), request_type->FindFieldByName("list_services"), "*");

  grpc::GenericStub stub(channel_);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  grpc::CompletionQueue cq;
  auto call = stub.PrepareCall(&context, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  const auto step = [&cq](auto start) {
    int tag_storage;
    void* tag = &tag_storage;
    start(tag);
    void* got = nullptr;
    bool ok = false;
    EXPECT_TRUE(cq.Next(&got, &ok));
    EXPECT_EQ(got, tag);
    return ok;
  };
  ASSERT_TRUE(step([&](void* tag) { call->StartCall(tag); }));
  const std::string bytes = request->SerializeAsString();
  grpc::Slice slice(bytes);
  grpc::ByteBuffer out(&slice, 1);
  ASSERT_TRUE(step([&](void* tag) { call->Write(out, tag); }));
  ASSERT_TRUE(step([&](void* tag) { call->WritesDone(tag); }));
  grpc::ByteBuffer in;
  ASSERT_TRUE(step([&](void* tag) { call->Read(&in, tag); }));
  grpc::Status status;
  step([&](void* tag) { call->Finish(&status, tag); });
  ASSERT_TRUE(status.ok()) << status.error_message();
  cq.Shutdown();

  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(in.Dump(&slices).ok());
  std::string response_bytes;
  for (const grpc::Slice& s : slices) response_bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  std::unique_ptr<google::protobuf::Message> response(factory.GetPrototype(response_type)->New());
  ASSERT_TRUE(response->ParseFromString(response_bytes));
  const google::protobuf::Message& list = response->GetReflection()->GetMessage(
      *response, response_type->FindFieldByName("list_services_response"));
  const google::protobuf::FieldDescriptor* services = list.GetDescriptor()->FindFieldByName("service");
  std::vector<std::string> names;
  for (int i = 0; i < list.GetReflection()->FieldSize(list, services); ++i) {
    const google::protobuf::Message& service = list.GetReflection()->GetRepeatedMessage(list, services, i);
    names.push_back(service.GetReflection()->GetString(service, service.GetDescriptor()->FindFieldByName("name")));
  }
  EXPECT_THAT(names, Contains("quest.api.Generation"));
  EXPECT_THAT(names, Contains("grpc.health.v1.Health"));
  EXPECT_THAT(names, Contains("grpc.reflection.v1alpha.ServerReflection"));
}

}  // namespace
}  // namespace quest::service
