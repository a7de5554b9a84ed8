#include "runtime/engine.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "cache/plugin_api.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/tiny_model.h"

namespace quest {
namespace {

using ::testing::HasSubstr;

config::EngineConfig TinyConfig() { return fixtures::TinyEngineConfig(); }

TEST(EngineTest, GreedyGenerationIsDeterministicAndReturnsPages) {
  auto engine = Engine::Create(TinyConfig());
  ASSERT_TRUE(engine.ok()) << engine.status();
  std::vector<int32_t> streamed;
  auto a = (*engine)->Generate(fixtures::TokenRequest({5, 6, 7, 8, 9}, 12),
                               [&](const TokenEvent& e) { streamed.push_back(e.id); });
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->token_ids_size(), 12);
  EXPECT_EQ(a->finish_reason(), api::LENGTH);
  EXPECT_EQ(std::vector<int32_t>(a->token_ids().begin(), a->token_ids().end()), streamed);
  EXPECT_EQ(a->usage().prompt_tokens(), 5);
  EXPECT_EQ(a->usage().generated_tokens(), 12);
  auto b = (*engine)->Generate(fixtures::TokenRequest({5, 6, 7, 8, 9}, 12));
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(std::vector<int32_t>(a->token_ids().begin(), a->token_ids().end()),
            std::vector<int32_t>(b->token_ids().begin(), b->token_ids().end()));
  EXPECT_EQ((*engine)->kv_pages().first, 0);
}

// limits.prefill_chunk_tokens: the default is filled in, and a prompt
// prefilled two tokens a step (three chunks) generates what one chunk does.
TEST(EngineTest, PrefillChunkIsConfigurableAndChunkingKeepsTheTokens) {
  auto whole = Engine::Create(TinyConfig());
  ASSERT_TRUE(whole.ok()) << whole.status();
  EXPECT_EQ((*whole)->config().limits().prefill_chunk_tokens(),
            std::min<uint32_t>(2048, (*whole)->config().limits().max_context_tokens()));
  config::EngineConfig c = TinyConfig();
  c.mutable_limits()->set_prefill_chunk_tokens(2);
  auto chunked = Engine::Create(c);
  ASSERT_TRUE(chunked.ok()) << chunked.status();
  EXPECT_EQ((*chunked)->config().limits().prefill_chunk_tokens(), 2u);
  auto a = (*whole)->Generate(fixtures::TokenRequest({5, 6, 7, 8, 9}, 8));
  auto b = (*chunked)->Generate(fixtures::TokenRequest({5, 6, 7, 8, 9}, 8));
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(std::vector<int32_t>(a->token_ids().begin(), a->token_ids().end()),
            std::vector<int32_t>(b->token_ids().begin(), b->token_ids().end()));
  EXPECT_EQ((*chunked)->kv_pages().first, 0);
}

TEST(EngineTest, SeededSamplingReproduces) {
  auto engine = Engine::Create(TinyConfig());
  ASSERT_TRUE(engine.ok());
  api::GenerateRequest r = fixtures::TokenRequest({3, 4, 5}, 16);
  r.mutable_sampling()->set_temperature(1.0f);
  r.mutable_sampling()->set_seed(11);
  auto a = (*engine)->Generate(r), b = (*engine)->Generate(r);
  r.mutable_sampling()->set_seed(12);
  auto c = (*engine)->Generate(r);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  auto ids = [](const api::GenerateResponse& x) { return std::vector<int32_t>(x.token_ids().begin(), x.token_ids().end()); };
  EXPECT_EQ(ids(*a), ids(*b));
  EXPECT_NE(ids(*a), ids(*c));
}

TEST(EngineTest, CancelStopsAndReturnsPages) {
  auto engine = Engine::Create(TinyConfig());
  ASSERT_TRUE(engine.ok());
  api::GenerateRequest r = fixtures::TokenRequest({3, 4, 5}, 40);
  r.set_request_id("req-1");
  int seen = 0;
  auto resp = (*engine)->Generate(r, [&](const TokenEvent&) {
    if (++seen == 3) {
      EXPECT_TRUE((*engine)->Cancel("req-1"));
    }
  });
  ASSERT_TRUE(resp.ok()) << resp.status();
  EXPECT_EQ(resp->finish_reason(), api::CANCELLED);
  EXPECT_EQ(resp->token_ids_size(), 3);
  EXPECT_EQ((*engine)->kv_pages().first, 0);
  EXPECT_FALSE((*engine)->Cancel("req-1")) << "finished requests are not cancellable";
}

// A queued request (the scheduler thread is held inside the first request's
// token callback, so nothing is admitted) is cancellable where it waits, and
// then never prefills.
TEST(EngineTest, QueuedRequestIsCancellable) {
  auto engine = Engine::Create(TinyConfig());
  ASSERT_TRUE(engine.ok());
  absl::Notification running, queued_cancelled;
  std::thread first([&] {
    auto a = (*engine)->Generate(fixtures::TokenRequest({3, 4, 5}, 4), [&](const TokenEvent&) {
      if (!running.HasBeenNotified()) running.Notify();
      queued_cancelled.WaitForNotificationWithTimeout(absl::Seconds(10));
    });
    EXPECT_TRUE(a.ok());
  });
  running.WaitForNotification();  // `first` holds the engine until `queued` is cancelled
  std::thread canceller([&] {
    const absl::Time give_up = absl::Now() + absl::Seconds(10);
    while (!(*engine)->Cancel("queued") && absl::Now() < give_up) absl::SleepFor(absl::Milliseconds(1));
    queued_cancelled.Notify();
  });
  api::GenerateRequest r = fixtures::TokenRequest({3, 4, 5}, 4);
  r.set_request_id("queued");
  auto queued = (*engine)->Generate(r);
  first.join();
  canceller.join();
  ASSERT_TRUE(queued.ok()) << queued.status();
  EXPECT_EQ(queued->finish_reason(), api::CANCELLED);
  EXPECT_EQ(queued->token_ids_size(), 0);
  EXPECT_EQ((*engine)->kv_pages().first, 0);
}

TEST(EngineTest, PoolExhaustionIsResourceExhaustedAndLeaksNothing) {
  config::EngineConfig c = TinyConfig();
  c.mutable_cache()->set_num_pages(3);  // 12 tokens
  auto engine = Engine::Create(c);
  ASSERT_TRUE(engine.ok()) << engine.status();
  auto resp = (*engine)->Generate(fixtures::TokenRequest({3, 4, 5, 6, 7, 8, 9, 10}, 20));
  EXPECT_EQ(resp.status().code(), absl::StatusCode::kResourceExhausted) << resp.status();
  EXPECT_EQ((*engine)->kv_pages().first, 0);
  EXPECT_TRUE((*engine)->Generate(fixtures::TokenRequest({3, 4}, 4)).ok()) << "the engine still serves";
}

TEST(EngineTest, BadRequestsNameTheField) {
  auto engine = Engine::Create(TinyConfig());
  ASSERT_TRUE(engine.ok());
  Engine& e = **engine;
  EXPECT_THAT(e.Generate(fixtures::TokenRequest({3}, 0)).status().message(), HasSubstr("sampling.max_tokens must be > 0"));
  EXPECT_THAT(e.Generate(fixtures::TokenRequest({3}, -4)).status().message(), HasSubstr("sampling.max_tokens"));
  EXPECT_THAT(e.Generate(fixtures::TokenRequest({}, 4)).status().message(), HasSubstr("prompt"));
  EXPECT_THAT(e.Generate(fixtures::TokenRequest({3, 128}, 4)).status().message(), HasSubstr("token_ids[1] = 128"));
  api::GenerateRequest text;
  text.set_text("");
  text.mutable_sampling()->set_max_tokens(3);
  EXPECT_EQ(e.Generate(text).status().code(), absl::StatusCode::kInvalidArgument);
  text.set_text("hello");
  EXPECT_THAT(e.Generate(text).status().message(), HasSubstr("has no tokenizer"));
  auto too_long = e.Generate(fixtures::TokenRequest({3, 4, 5}, 62));  // context is 64
  EXPECT_EQ(too_long.status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_THAT(too_long.status().message(), HasSubstr("context length of 64"));
  api::GenerateRequest policy = fixtures::TokenRequest({3}, 2);
  policy.mutable_cache()->set_policy("no-such-policy");
  auto unknown = e.Generate(policy);
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(unknown.status().message(), HasSubstr("known policies: dense"));
  api::GenerateRequest bad_stop = fixtures::TokenRequest({3}, 2);
  bad_stop.mutable_sampling()->add_stop("");
  EXPECT_THAT(e.Generate(bad_stop).status().message(), HasSubstr("sampling.stop[0]"));
  EXPECT_EQ(e.kv_pages().first, 0);
}

TEST(EngineTest, BadConfigsAreClearErrors) {
  config::EngineConfig c = TinyConfig();
  c.mutable_model()->set_path("/nonexistent/model");
  EXPECT_THAT(Engine::Create(c).status().message(), HasSubstr("/nonexistent/model does not exist"));
  c = TinyConfig();
  c.mutable_cache()->set_policy("quest-typo");
  EXPECT_THAT(Engine::Create(c).status().message(), HasSubstr("unknown cache policy \"quest-typo\""));
  c = TinyConfig();
  c.mutable_cache()->set_page_size(12);
  EXPECT_THAT(Engine::Create(c).status().message(), HasSubstr("power of two"));
  c = TinyConfig();
  c.set_dtype(config::FLOAT16);
  EXPECT_THAT(Engine::Create(c).status().message(), HasSubstr("FLOAT16"));

  c = TinyConfig();
  c.mutable_limits()->set_max_context_tokens(64);
  c.mutable_limits()->set_prefill_chunk_tokens(65);
  EXPECT_EQ(Engine::Create(c).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Engine::Create(c).status().message(),
              HasSubstr("limits.prefill_chunk_tokens 65 exceeds limits.max_context_tokens 64"));

  auto parsed = ParseEngineConfig("model { path: \"x\" }\ncache { polcy: \"dense\" }\n", "my.textproto");
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(parsed.status().message(), HasSubstr("my.textproto:2"));
  EXPECT_THAT(parsed.status().message(), HasSubstr("polcy"));
  EXPECT_EQ(LoadEngineConfig("/nonexistent.textproto").status().code(), absl::StatusCode::kNotFound);
}

// --- Out-of-tree cache policies (cache/plugin_api.h) and per-request policies.

std::string TestPlugin(const std::string& file) {
  return std::string(std::getenv("TEST_SRCDIR")) + "/quest_runtime/cache/testdata/" + file;
}

// The test plugin's policy: decode attends the last `pages` pages only.
config::CacheConfig RecentPages(int pages) {
  config::CacheConfig c;
  c.set_policy("example_recent_pages");
  (*c.mutable_plugin()->mutable_fields())["pages"].set_number_value(pages);
  return c;
}

// 24 tokens: 6 pages of 4, so a window of a page or two sees a fraction.
std::vector<int32_t> LongPrompt() {
  std::vector<int32_t> ids;
  for (int i = 0; i < 24; ++i) ids.push_back(3 + (i * 37) % 120);
  return ids;
}

TEST(EnginePluginTest, GeneratesWithAPluginPolicyAndReturnsPages) {
  config::EngineConfig c = TinyConfig();
  c.add_cache_plugins(TestPlugin("libsliding_window_plugin.so"));
  config::CacheConfig cache = RecentPages(2);
  cache.set_page_size(4);
  *c.mutable_cache() = cache;
  auto engine = Engine::Create(c);
  ASSERT_TRUE(engine.ok()) << engine.status();
  auto windowed = (*engine)->Generate(fixtures::TokenRequest(LongPrompt(), 16));
  ASSERT_TRUE(windowed.ok()) << windowed.status();
  EXPECT_EQ(windowed->token_ids_size(), 16);
  EXPECT_EQ((*engine)->kv_pages().first, 0);

  auto dense_engine = Engine::Create(TinyConfig());
  ASSERT_TRUE(dense_engine.ok());
  auto dense = (*dense_engine)->Generate(fixtures::TokenRequest(LongPrompt(), 16));
  ASSERT_TRUE(dense.ok());
  EXPECT_NE(fixtures::TokenIds(*windowed), fixtures::TokenIds(*dense)) << "a 2-page window attends differently from dense";
}

TEST(EnginePluginTest, PluginErrorsNameThePath) {
  auto create_error = [](std::vector<std::string> plugins) {
    config::EngineConfig c = TinyConfig();
    for (const std::string& p : plugins) c.add_cache_plugins(p);
    return Engine::Create(c).status();
  };
  absl::Status missing = create_error({"/nonexistent/libpolicy.so"});
  EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.message(), HasSubstr("cache_plugins[0]: cache plugin /nonexistent/libpolicy.so"));

  const std::string no_entry = TestPlugin("libno_entry_point_plugin.so");
  absl::Status not_plugin = create_error({no_entry});
  EXPECT_EQ(not_plugin.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(not_plugin.message(), HasSubstr(no_entry));
  EXPECT_THAT(not_plugin.message(), HasSubstr("does not export quest_cache_plugin_api_version"));

  const std::string wrong = TestPlugin("libwrong_version_plugin.so");
  absl::Status version = create_error({wrong});
  EXPECT_EQ(version.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(version.message(), HasSubstr(wrong));
  EXPECT_THAT(version.message(), HasSubstr(absl::StrCat("built for cache plugin API version ",
                                                        cache::kCachePluginApiVersion + 998)));
  EXPECT_THAT(version.message(), HasSubstr(absl::StrCat("this engine implements version ",
                                                        cache::kCachePluginApiVersion)));

  const std::string first = TestPlugin("libsliding_window_plugin.so");
  const std::string second = TestPlugin("libduplicate_name_plugin.so");
  absl::Status duplicate = create_error({first, second});
  EXPECT_EQ(duplicate.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(duplicate.message(), HasSubstr("cache_plugins[1]"));
  EXPECT_THAT(duplicate.message(), HasSubstr("\"example_recent_pages\" from cache plugin " + second));
  EXPECT_THAT(duplicate.message(), HasSubstr("already registered by cache plugin " + first));

  // The plugin's own option checks.
  config::EngineConfig c = TinyConfig();
  c.add_cache_plugins(first);
  c.mutable_cache()->set_policy("example_recent_pages");
  absl::Status no_pages = Engine::Create(c).status();
  EXPECT_EQ(no_pages.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(no_pages.message(), HasSubstr("cache.plugin.pages"));
  *c.mutable_cache() = RecentPages(0);
  EXPECT_THAT(Engine::Create(c).status().message(), HasSubstr("cache.plugin.pages must be a positive integer"));
}

// One engine, default dense, serving a dense request and a request with its
// own policy at the same time: each gets its own policy, i.e. the output an
// engine configured with that policy gives.
TEST(EnginePluginTest, PerRequestPolicyOverrideSideBySide) {
  const std::string plugin = TestPlugin("libsliding_window_plugin.so");
  api::GenerateRequest dense_request = fixtures::TokenRequest(LongPrompt(), 16);
  api::GenerateRequest windowed_request = fixtures::TokenRequest(LongPrompt(), 16);
  *windowed_request.mutable_cache() = RecentPages(1);

  config::EngineConfig c = TinyConfig();
  c.add_cache_plugins(plugin);
  auto dense_reference = (*Engine::Create(c))->Generate(dense_request);
  ASSERT_TRUE(dense_reference.ok()) << dense_reference.status();
  *c.mutable_cache() = RecentPages(1);
  c.mutable_cache()->set_page_size(4);
  auto windowed_engine = Engine::Create(c);
  ASSERT_TRUE(windowed_engine.ok()) << windowed_engine.status();
  auto windowed_reference = (*windowed_engine)->Generate(fixtures::TokenRequest(LongPrompt(), 16));
  ASSERT_TRUE(windowed_reference.ok()) << windowed_reference.status();
  ASSERT_NE(fixtures::TokenIds(*dense_reference), fixtures::TokenIds(*windowed_reference));

  c = TinyConfig();
  c.add_cache_plugins(plugin);
  auto engine = Engine::Create(c);
  ASSERT_TRUE(engine.ok()) << engine.status();
  constexpr int kRounds = 3;
  std::vector<absl::StatusOr<api::GenerateResponse>> dense(kRounds), windowed(kRounds);
  std::thread dense_thread([&] {
    for (int i = 0; i < kRounds; ++i) dense[i] = (*engine)->Generate(dense_request);
  });
  std::thread windowed_thread([&] {
    for (int i = 0; i < kRounds; ++i) windowed[i] = (*engine)->Generate(windowed_request);
  });
  dense_thread.join();
  windowed_thread.join();
  for (int i = 0; i < kRounds; ++i) {
    ASSERT_TRUE(dense[i].ok()) << dense[i].status();
    ASSERT_TRUE(windowed[i].ok()) << windowed[i].status();
    EXPECT_EQ(fixtures::TokenIds(*dense[i]), fixtures::TokenIds(*dense_reference)) << "round " << i;
    EXPECT_EQ(fixtures::TokenIds(*windowed[i]), fixtures::TokenIds(*windowed_reference)) << "round " << i;
  }
  EXPECT_EQ((*engine)->kv_pages().first, 0);

  // A request's policy options are validated like the engine's.
  api::GenerateRequest bad = fixtures::TokenRequest(LongPrompt(), 4);
  *bad.mutable_cache() = RecentPages(-1);
  EXPECT_THAT((*engine)->Generate(bad).status().message(), HasSubstr("cache.plugin.pages"));
  EXPECT_EQ((*engine)->kv_pages().first, 0);
}

}  // namespace
}  // namespace quest
