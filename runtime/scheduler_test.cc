// Continuous batching through the Engine API (runtime/scheduler.h): many
// concurrent Generate calls share forward steps and each still gets exactly
// the tokens it gets alone.

#include <algorithm>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/engine.h"
#include "tests/tiny_model.h"

namespace quest {
namespace {

config::EngineConfig TinyConfig(int max_concurrent) {
  config::EngineConfig c = fixtures::TinyEngineConfig();
  c.mutable_limits()->set_max_concurrent_requests(max_concurrent);
  return c;
}

api::GenerateRequest Request(int prompt_len, int seed, int max_tokens, bool quest) {
  api::GenerateRequest r;
  for (int i = 0; i < prompt_len; ++i) r.mutable_token_ids()->add_ids(3 + (i * 7 + seed * 13) % 100);
  r.mutable_sampling()->set_max_tokens(max_tokens);
  if (quest) {
    r.mutable_cache()->set_policy("quest");
    r.mutable_cache()->mutable_quest()->set_token_budget(8);
    r.mutable_cache()->mutable_quest()->set_dense_layers(0);
  }
  return r;
}

std::vector<int32_t> Ids(const api::GenerateResponse& r) { return {r.token_ids().begin(), r.token_ids().end()}; }

// Mixed prompt lengths (the context is 64) and mixed policies.
std::vector<api::GenerateRequest> MixedRequests() {
  const int lengths[] = {3, 40, 9, 27, 1, 33, 16, 50};
  std::vector<api::GenerateRequest> out;
  for (int i = 0; i < 8; ++i) {
    out.push_back(Request(lengths[i], i, std::min(24, 63 - lengths[i]), /*quest=*/i % 2 == 1));
  }
  return out;
}

void ExpectConcurrentMatchesAlone(int max_concurrent) {
  const std::vector<api::GenerateRequest> requests = MixedRequests();
  std::vector<std::vector<int32_t>> alone;
  {
    auto engine = Engine::Create(TinyConfig(max_concurrent));
    ASSERT_TRUE(engine.ok()) << engine.status();
    for (const api::GenerateRequest& r : requests) {
      auto resp = (*engine)->Generate(r);
      ASSERT_TRUE(resp.ok()) << resp.status();
      ASSERT_GT(resp->token_ids_size(), 0);
      alone.push_back(Ids(*resp));
    }
    EXPECT_EQ((*engine)->scheduler_stats().max_batch, 1) << "one at a time never batches";
  }
  ASSERT_NE(alone[0], alone[2]);
  auto engine = Engine::Create(TinyConfig(max_concurrent));
  ASSERT_TRUE(engine.ok()) << engine.status();
  std::vector<absl::StatusOr<api::GenerateResponse>> results(requests.size());
  std::vector<std::vector<int32_t>> streamed(requests.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < requests.size(); ++i) {
    threads.emplace_back([&, i] {
      results[i] = (*engine)->Generate(requests[i], [&, i](const TokenEvent& e) { streamed[i].push_back(e.id); });
    });
  }
  for (std::thread& t : threads) t.join();
  for (size_t i = 0; i < requests.size(); ++i) {
    ASSERT_TRUE(results[i].ok()) << "request " << i << ": " << results[i].status();
    EXPECT_EQ(Ids(*results[i]), alone[i]) << "request " << i;
    EXPECT_EQ(streamed[i], alone[i]) << "request " << i;
  }
  const SchedulerStats stats = (*engine)->scheduler_stats();
  EXPECT_GT(stats.max_batch, 1) << "concurrent requests shared forward steps";
  EXPECT_LE(stats.max_batch, max_concurrent);
  EXPECT_EQ(stats.admitted, 8);
  EXPECT_EQ(stats.running, 0);
  EXPECT_EQ(stats.queued, 0);
  EXPECT_EQ((*engine)->kv_pages().first, 0);
}

TEST(SchedulerTest, EightConcurrentRequestsMatchRunningAlone) { ExpectConcurrentMatchesAlone(8); }

// With 3 slots, requests queue and join as others leave.
TEST(SchedulerTest, QueuedRequestsJoinAsOthersLeave) { ExpectConcurrentMatchesAlone(3); }

TEST(SchedulerTest, CancelQueuedAndRunning) {
  auto engine = Engine::Create(TinyConfig(1));  // one slot: the second request queues
  ASSERT_TRUE(engine.ok()) << engine.status();
  absl::Notification first_token, queued_cancelled;
  absl::StatusOr<api::GenerateResponse> running_result;
  std::thread running([&] {
    api::GenerateRequest r = Request(5, 1, 40, false);
    r.set_request_id("running");
    running_result = (*engine)->Generate(r, [&](const TokenEvent&) {
      if (!first_token.HasBeenNotified()) first_token.Notify();
      queued_cancelled.WaitForNotificationWithTimeout(absl::Seconds(10));
    });
  });
  first_token.WaitForNotification();
  absl::StatusOr<api::GenerateResponse> queued_result;
  std::thread queued([&] {
    api::GenerateRequest r = Request(5, 2, 4, false);
    r.set_request_id("queued");
    queued_result = (*engine)->Generate(r);
  });
  const absl::Time give_up = absl::Now() + absl::Seconds(10);
  while (!(*engine)->Cancel("queued") && absl::Now() < give_up) absl::SleepFor(absl::Milliseconds(1));
  queued.join();  // returns while "running" still holds the only slot
  ASSERT_TRUE(queued_result.ok()) << queued_result.status();
  EXPECT_EQ(queued_result->finish_reason(), api::CANCELLED);
  EXPECT_EQ(queued_result->token_ids_size(), 0);
  EXPECT_TRUE((*engine)->Cancel("running"));
  queued_cancelled.Notify();
  running.join();
  ASSERT_TRUE(running_result.ok()) << running_result.status();
  EXPECT_EQ(running_result->finish_reason(), api::CANCELLED);
  EXPECT_GE(running_result->token_ids_size(), 1);
  EXPECT_LT(running_result->token_ids_size(), 40);
  EXPECT_FALSE((*engine)->Cancel("running"));
  EXPECT_EQ((*engine)->kv_pages().first, 0);
  EXPECT_TRUE((*engine)->Generate(Request(5, 3, 4, false)).ok()) << "the engine still serves";
}

// Admission control: a prompt waits until the pool has pages for it; a
// running sequence that cannot get a page for its next token ends with
// RESOURCE_EXHAUSTED; the others are unaffected.
TEST(SchedulerTest, PoolPressure) {
  config::EngineConfig c = TinyConfig(4);
  c.mutable_cache()->set_num_pages(10);  // 40 tokens
  auto engine = Engine::Create(c);
  ASSERT_TRUE(engine.ok()) << engine.status();
  auto too_big = (*engine)->Generate(Request(44, 1, 4, false));
  EXPECT_EQ(too_big.status().code(), absl::StatusCode::kResourceExhausted) << too_big.status();
  std::vector<absl::StatusOr<api::GenerateResponse>> results(4);
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] { results[i] = (*engine)->Generate(Request(8, i, 16, false)); });
  }
  for (std::thread& t : threads) t.join();
  int ok = 0;
  for (const auto& r : results) {
    if (r.ok()) {
      ++ok;
    } else {
      EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted) << r.status();
    }
  }
  EXPECT_GE(ok, 1);
  EXPECT_EQ((*engine)->kv_pages().first, 0);
  EXPECT_TRUE((*engine)->Generate(Request(8, 9, 4, false)).ok());
}

// A prompt that does not fit beside the running sequences waits for their
// pages instead of failing, and then gets the tokens it gets alone.
TEST(SchedulerTest, AdmissionWaitsForPages) {
  config::EngineConfig c = TinyConfig(4);
  c.mutable_cache()->set_num_pages(10);  // 40 tokens
  const api::GenerateRequest big = Request(30, 1, 8, false);     // 38 tokens: 10 pages
  const api::GenerateRequest second = Request(20, 2, 8, false);  // 7 pages
  std::vector<int32_t> second_alone;
  {
    auto engine = Engine::Create(c);
    ASSERT_TRUE(engine.ok()) << engine.status();
    auto r = (*engine)->Generate(second);
    ASSERT_TRUE(r.ok()) << r.status();
    second_alone = Ids(*r);
  }
  auto engine = Engine::Create(c);
  ASSERT_TRUE(engine.ok()) << engine.status();
  absl::Notification first_token;
  absl::StatusOr<api::GenerateResponse> big_result;
  std::thread t([&] {
    big_result = (*engine)->Generate(big, [&](const TokenEvent&) {
      if (!first_token.HasBeenNotified()) first_token.Notify();
    });
  });
  first_token.WaitForNotification();
  auto second_result = (*engine)->Generate(second);
  t.join();
  ASSERT_TRUE(big_result.ok()) << big_result.status();
  ASSERT_TRUE(second_result.ok()) << second_result.status();
  EXPECT_EQ(big_result->token_ids_size(), 8);
  EXPECT_EQ(Ids(*second_result), second_alone);
  EXPECT_EQ((*engine)->kv_pages().first, 0);
}

TEST(SchedulerTest, DuplicateRunningIdIsRefused) {
  auto engine = Engine::Create(TinyConfig(2));
  ASSERT_TRUE(engine.ok()) << engine.status();
  absl::Notification first_token, release;
  std::thread t([&] {
    api::GenerateRequest r = Request(3, 1, 8, false);
    r.set_request_id("same");
    EXPECT_TRUE((*engine)->Generate(r, [&](const TokenEvent&) {
      if (!first_token.HasBeenNotified()) first_token.Notify();
      release.WaitForNotificationWithTimeout(absl::Seconds(10));
    }).ok());
  });
  first_token.WaitForNotification();
  api::GenerateRequest r = Request(3, 2, 8, false);
  r.set_request_id("same");
  EXPECT_EQ((*engine)->Generate(r).status().code(), absl::StatusCode::kAlreadyExists);
  release.Notify();
  t.join();
  EXPECT_EQ((*engine)->kv_pages().first, 0);
}

}  // namespace
}  // namespace quest
