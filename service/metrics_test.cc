// service/metrics.h's registry and format, then GetMetrics end to end: an
// in-process server with the tiny checkpoint tests/fixtures/hf_tiny/gqa runs
// a few requests (one bad), and the scrape is parsed line by line.

#include "service/metrics.h"

#include <cstdlib>
#include <map>
#include <memory>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "proto/generation.grpc.pb.h"
#include "runtime/engine.h"
#include "service/server.h"
#include "tests/tiny_model.h"

namespace quest::service {
namespace {

// One parsed sample: name, labels (as written, unescaped values) and value.
struct Sample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

struct Scrape {
  std::map<std::string, std::string> types;  // family -> counter|gauge|histogram
  std::vector<Sample> samples;

  // The value of `name` with exactly `labels`; -1 when absent.
  double Get(const std::string& name, const std::map<std::string, std::string>& labels = {}) const {
    for (const Sample& s : samples) {
      if (s.name == name && s.labels == labels) return s.value;
    }
    return -1;
  }
};

// Parses exposition text 0.0.4, failing the test on any line that is not
// valid: HELP then TYPE for each family before its samples, sample names
// belonging to the family last declared, label syntax, numeric values.
Scrape Parse(const std::string& text) {
  Scrape scrape;
  static const std::regex kHelp(R"(^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) .*$)");
  static const std::regex kType(R"(^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$)");
  static const std::regex kSample(
      R"(^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*",?)*)\})? (\S+)$)");
  static const std::regex kLabel(R"re(([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)")re");
  EXPECT_FALSE(text.empty());
  EXPECT_EQ(text.back(), '\n');
  std::string family, help_for;
  for (absl::string_view line_view : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    const std::string line(line_view);
    std::smatch m;
    if (std::regex_match(line, m, kHelp)) {
      help_for = m[1];
      continue;
    }
    if (std::regex_match(line, m, kType)) {
      EXPECT_EQ(m[1], help_for) << "TYPE without HELP just before: " << line;
      EXPECT_EQ(scrape.types.count(m[1]), 0u) << "family declared twice: " << line;
      family = m[1];
      scrape.types[family] = m[2];
      continue;
    }
    if (!std::regex_match(line, m, kSample)) {
      ADD_FAILURE() << "not a valid sample line: " << line;
      continue;
    }
    Sample s;
    s.name = m[1];
    const std::string& type = scrape.types[family];
    if (type == "histogram") {
      EXPECT_TRUE(s.name == family + "_bucket" || s.name == family + "_sum" || s.name == family + "_count") << line;
    } else {
      EXPECT_EQ(s.name, family) << "sample outside its family: " << line;
    }
    const std::string labels = m[3];
    for (std::sregex_iterator it(labels.begin(), labels.end(), kLabel), end; it != end; ++it) {
      EXPECT_EQ(s.labels.count((*it)[1]), 0u) << "repeated label: " << line;
      s.labels[(*it)[1]] = (*it)[2];
    }
    const std::string value = m[4];
    if (value == "+Inf" || value == "-Inf" || value == "NaN") {
      s.value = value == "+Inf" ? 1e308 : -1;
    } else {
      EXPECT_TRUE(absl::SimpleAtod(value, &s.value)) << "bad value: " << line;
    }
    scrape.samples.push_back(s);
  }
  return scrape;
}

// Buckets are cumulative (never decrease with le), end with le="+Inf", and
// +Inf equals _count.
void ExpectHistogram(const Scrape& scrape, const std::string& name) {
  std::vector<std::pair<double, double>> buckets;  // le, count
  bool inf_last = false;
  for (const Sample& s : scrape.samples) {
    if (s.name != name + "_bucket") continue;
    ASSERT_EQ(s.labels.count("le"), 1u);
    inf_last = s.labels.at("le") == "+Inf";
    double le = 1e308;
    if (!inf_last) {
      ASSERT_TRUE(absl::SimpleAtod(s.labels.at("le"), &le)) << s.labels.at("le");
    }
    buckets.emplace_back(le, s.value);
  }
  ASSERT_GE(buckets.size(), 2u) << name;
  EXPECT_TRUE(inf_last) << name << " does not end with le=\"+Inf\"";
  for (size_t i = 1; i < buckets.size(); ++i) {
    EXPECT_LT(buckets[i - 1].first, buckets[i].first) << name;
    EXPECT_LE(buckets[i - 1].second, buckets[i].second) << name << " buckets are not cumulative";
  }
  EXPECT_EQ(buckets.back().second, scrape.Get(name + "_count")) << name;
  EXPECT_GE(scrape.Get(name + "_sum"), 0) << name;
}

TEST(MetricsRegistryTest, RendersEveryTypeInTheTextFormat) {
  MetricsRegistry registry;
  registry.GetCounter("c_total", "A counter.", {{"code", "OK"}}).Increment(2);
  registry.GetCounter("c_total", "A counter.", {{"code", "a\"b\\c\nd"}}).Increment();
  registry.GetGauge("g", "A gauge.").Set(1.5);
  Histogram& h = registry.GetHistogram("h_seconds", "A histogram.", {0.1, 1});
  h.Observe(0.05);
  h.Observe(0.5);
  h.Observe(7);
  EXPECT_EQ(registry.Render(),
            "# HELP c_total A counter.\n"
            "# TYPE c_total counter\n"
            "c_total{code=\"OK\"} 2\n"
            "c_total{code=\"a\\\"b\\\\c\\nd\"} 1\n"
            "# HELP g A gauge.\n"
            "# TYPE g gauge\n"
            "g 1.5\n"
            "# HELP h_seconds A histogram.\n"
            "# TYPE h_seconds histogram\n"
            "h_seconds_bucket{le=\"0.1\"} 1\n"
            "h_seconds_bucket{le=\"1\"} 2\n"
            "h_seconds_bucket{le=\"+Inf\"} 3\n"
            "h_seconds_sum 7.55\n"
            "h_seconds_count 3\n");
  const Scrape scrape = Parse(registry.Render());
  ExpectHistogram(scrape, "h_seconds");
  EXPECT_EQ(scrape.Get("c_total", {{"code", "OK"}}), 2);
}

TEST(MetricsRegistryTest, ConcurrentUpdatesAllCount) {
  MetricsRegistry registry;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&registry] {
      for (int i = 0; i < 1000; ++i) {
        registry.GetCounter("n_total", "N.").Increment();
        registry.GetHistogram("h", "H.", {1}).Observe(0.5);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  const Scrape scrape = Parse(registry.Render());
  EXPECT_EQ(scrape.Get("n_total"), 4000);
  EXPECT_EQ(scrape.Get("h_count"), 4000);
}

api::GenerateRequest Request(int max_tokens) {
  api::GenerateRequest r;
  for (int32_t id : {1, 5, 9, 13}) r.mutable_token_ids()->add_ids(id);
  r.mutable_sampling()->set_max_tokens(max_tokens);
  return r;
}

TEST(GetMetricsTest, CountsWhatWasSent) {
  config::EngineConfig config = fixtures::TinyEngineConfig();
  config.mutable_limits()->set_max_concurrent_requests(2);
  auto engine = Engine::Create(config);
  ASSERT_TRUE(engine.ok()) << engine.status();
  ServerOptions options;
  options.listen = "127.0.0.1:0";
  auto server = GenerationServer::Start(**engine, options);
  ASSERT_TRUE(server.ok()) << server.status();
  auto stub = api::Generation::NewStub(
      grpc::CreateChannel(absl::StrCat("127.0.0.1:", (*server)->port()), grpc::InsecureChannelCredentials()));

  const auto scrape = [&stub] {
    grpc::ClientContext context;
    api::MetricsResponse response;
    grpc::Status status = stub->GetMetrics(&context, api::MetricsRequest(), &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response.text();
  };
  {
    const Scrape before = Parse(scrape());
    EXPECT_EQ(before.Get("quest_requests_total", {{"status", "OK"}}), 0);
    EXPECT_EQ(before.Get("quest_time_to_first_token_seconds_count"), 0);
    EXPECT_EQ(before.Get("quest_kv_pages_in_use"), 0);
    EXPECT_GT(before.Get("quest_kv_pages_free"), 0);
  }

  // Three streams and one unary call that succeed, one bad request.
  int generated = 0, ok_requests = 0;
  for (int max_tokens : {3, 5, 6}) {
    grpc::ClientContext context;
    auto reader = stub->GenerateStream(&context, Request(max_tokens));
    api::GenerateStreamResponse m;
    int tokens = 0;
    while (reader->Read(&m)) tokens += m.has_token() ? 1 : 0;
    ASSERT_TRUE(reader->Finish().ok());
    ASSERT_GT(tokens, 0);
    generated += tokens;
    ++ok_requests;
  }
  {
    grpc::ClientContext context;
    api::GenerateResponse response;
    ASSERT_TRUE(stub->Generate(&context, Request(4), &response).ok());
    generated += response.usage().generated_tokens();
    ++ok_requests;
  }
  {
    grpc::ClientContext context;
    api::GenerateResponse response;
    EXPECT_EQ(stub->Generate(&context, Request(0), &response).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }

  const std::string text = scrape();
  const Scrape after = Parse(text);
  SCOPED_TRACE(text);
  for (const char* name : {"quest_requests_total", "quest_requests_by_policy_total", "quest_generated_tokens_total"}) {
    EXPECT_EQ(after.types.at(name), "counter") << name;
  }
  for (const char* name :
       {"quest_queue_length", "quest_running_sequences", "quest_kv_pages_in_use", "quest_kv_pages_free"}) {
    EXPECT_EQ(after.types.at(name), "gauge") << name;
  }
  for (const char* name : {"quest_time_to_first_token_seconds", "quest_inter_token_latency_seconds"}) {
    EXPECT_EQ(after.types.at(name), "histogram") << name;
    ExpectHistogram(after, name);
  }
  EXPECT_EQ(after.Get("quest_requests_total", {{"status", "OK"}}), ok_requests);
  EXPECT_EQ(after.Get("quest_requests_total", {{"status", "INVALID_ARGUMENT"}}), 1);
  EXPECT_EQ(after.Get("quest_requests_by_policy_total", {{"policy", "dense"}}), ok_requests + 1);
  EXPECT_EQ(after.Get("quest_generated_tokens_total"), generated);
  EXPECT_EQ(after.Get("quest_time_to_first_token_seconds_count"), ok_requests);
  EXPECT_EQ(after.Get("quest_inter_token_latency_seconds_count"), generated - ok_requests);
  EXPECT_EQ(after.Get("quest_queue_length"), 0);
  EXPECT_EQ(after.Get("quest_running_sequences"), 0);
  EXPECT_EQ(after.Get("quest_kv_pages_in_use"), 0);

  (*server)->Shutdown(absl::ZeroDuration());
}

}  // namespace
}  // namespace quest::service
