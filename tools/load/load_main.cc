// load: a closed-loop load generator for the Generation gRPC service
// (proto/generation.proto). --clients threads each call GenerateStream again
// and again until --seconds pass (an RPC started before then may finish
// after; each has a deadline of --seconds + --rpc_grace), then it reports
// requests/s, generated tokens/s, p50/p99 time to first token and
// inter-token latency (measured here, at the client), errors by gRPC code,
// and the server's quest_kv_pages_in_use before and after (GetMetrics).
//
// Only loopback targets: 127.0.0.0/8, localhost or [::1], with a port. It is
// a tool for measuring one's own server, not for loading someone else's.
//
//   bazel run //tools/load -- --target=127.0.0.1:50051 --clients=4 --seconds=10
//
// Exit status: 0 when every request succeeded, 3 when some failed, 1 on bad
// flags or an unreachable server.

#include <arpa/inet.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "proto/generation.grpc.pb.h"

ABSL_FLAG(std::string, target, "127.0.0.1:50051", "Server host:port; loopback only (127.0.0.0/8, localhost, [::1]).");
ABSL_FLAG(int, clients, 4, "Concurrent clients (threads), each with one request in flight.");
ABSL_FLAG(double, seconds, 10, "How long the clients keep starting requests.");
ABSL_FLAG(int, max_tokens, 16, "sampling.max_tokens of every request.");
ABSL_FLAG(int, prompt_tokens, 16,
          "Prompt length in token ids (works without a tokenizer); ignored when --prompt_text is set.");
ABSL_FLAG(std::string, prompt_text, "", "A text prompt instead of token ids (the model needs a tokenizer).");
ABSL_FLAG(absl::Duration, rpc_grace, absl::Seconds(60),
          "How long past --seconds one request may still run before its deadline.");

namespace {

using Clock = std::chrono::steady_clock;

// OK when `target` is host:port with a loopback host.
absl::Status CheckLoopbackTarget(const std::string& target) {
  std::string host, port;
  if (absl::StartsWith(target, "[")) {
    const size_t close = target.find("]:");
    if (close == std::string::npos) return absl::InvalidArgumentError("--target: expected [::1]:PORT");
    host = target.substr(1, close - 1);
    port = target.substr(close + 2);
  } else {
    const size_t colon = target.rfind(':');
    if (colon == std::string::npos || target.find(':') != colon) {
      return absl::InvalidArgumentError("--target: expected HOST:PORT");
    }
    host = target.substr(0, colon);
    port = target.substr(colon + 1);
  }
  int port_number = 0;
  if (!absl::SimpleAtoi(port, &port_number) || port_number < 1 || port_number > 65535 ||
      port.find_first_not_of("0123456789") != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("--target: bad port '", port, "'"));
  }
  const absl::Status not_loopback = absl::InvalidArgumentError(absl::StrCat(
      "--target: ", target, " is not a loopback address; load is only sent to 127.0.0.0/8, localhost or [::1]"));
  if (host == "localhost") return absl::OkStatus();
  in6_addr v6;
  if (inet_pton(AF_INET6, host.c_str(), &v6) == 1) {
    return IN6_IS_ADDR_LOOPBACK(&v6) ? absl::OkStatus() : not_loopback;
  }
  in_addr v4;
  // inet_pton takes only the dotted quad (no "127.1", no hex).
  if (inet_pton(AF_INET, host.c_str(), &v4) == 1) {
    return (ntohl(v4.s_addr) >> 24) == 127 ? absl::OkStatus() : not_loopback;
  }
  return not_loopback;
}

// The value of an unlabelled sample `name` in the server's metrics.
absl::StatusOr<double> ScrapeValue(quest::api::Generation::Stub& stub, const std::string& name) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  quest::api::MetricsResponse response;
  grpc::Status status = stub.GetMetrics(&context, quest::api::MetricsRequest(), &response);
  if (!status.ok()) {
    return absl::UnavailableError(absl::StrCat("GetMetrics: ", status.error_message(), " (code ",
                                               static_cast<int>(status.error_code()), ")"));
  }
  for (absl::string_view line : absl::StrSplit(response.text(), '\n')) {
    std::vector<absl::string_view> parts = absl::StrSplit(line, ' ');
    double value = 0;
    if (parts.size() == 2 && parts[0] == name && absl::SimpleAtod(parts[1], &value)) return value;
  }
  return absl::NotFoundError(absl::StrCat("GetMetrics has no ", name));
}

const char* CodeName(grpc::StatusCode code) {
  static const char* const kNames[] = {"OK",
                                       "CANCELLED",
                                       "UNKNOWN",
                                       "INVALID_ARGUMENT",
                                       "DEADLINE_EXCEEDED",
                                       "NOT_FOUND",
                                       "ALREADY_EXISTS",
                                       "PERMISSION_DENIED",
                                       "RESOURCE_EXHAUSTED",
                                       "FAILED_PRECONDITION",
                                       "ABORTED",
                                       "OUT_OF_RANGE",
                                       "UNIMPLEMENTED",
                                       "INTERNAL",
                                       "UNAVAILABLE",
                                       "DATA_LOSS",
                                       "UNAUTHENTICATED"};
  const int i = static_cast<int>(code);
  return i >= 0 && i < 17 ? kNames[i] : "UNKNOWN";
}

struct ClientResult {
  int64_t requests = 0;  // finished OK
  int64_t tokens = 0;
  std::vector<double> ttft_s, itl_s;
  std::map<std::string, int64_t> errors;
  std::string first_error;
};

// Nearest-rank percentile of sorted values, in milliseconds.
std::string PercentileMs(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return "n/a";
  size_t rank = static_cast<size_t>(std::ceil(p / 100.0 * sorted.size()));
  rank = std::clamp<size_t>(rank, 1, sorted.size());
  return absl::StrFormat("%.3f ms", sorted[rank - 1] * 1e3);
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("Closed-loop GenerateStream load against a local Generation server.");
  absl::ParseCommandLine(argc, argv);
  const std::string target = absl::GetFlag(FLAGS_target);
  const int clients = absl::GetFlag(FLAGS_clients);
  const double seconds = absl::GetFlag(FLAGS_seconds);
  const int max_tokens = absl::GetFlag(FLAGS_max_tokens);
  const int prompt_tokens = absl::GetFlag(FLAGS_prompt_tokens);
  const std::string prompt_text = absl::GetFlag(FLAGS_prompt_text);
  if (absl::Status s = CheckLoopbackTarget(target); !s.ok()) {
    std::cerr << "load: " << s.message() << "\n";
    return 1;
  }
  if (clients < 1 || clients > 1024 || !(seconds > 0) || seconds > 24 * 3600 || max_tokens < 1 ||
      (prompt_text.empty() && prompt_tokens < 1)) {
    std::cerr << "load: need 1 <= --clients <= 1024, 0 < --seconds <= 86400, --max_tokens >= 1, "
                 "--prompt_tokens >= 1 (or --prompt_text)\n";
    return 1;
  }

  auto channel = grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
  auto stub = quest::api::Generation::NewStub(channel);
  quest::api::GetModelInfoResponse info;
  {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    grpc::Status status = stub->GetModelInfo(&context, quest::api::GetModelInfoRequest(), &info);
    if (!status.ok()) {
      std::cerr << "load: " << target << ": GetModelInfo failed: " << status.error_message() << "\n";
      return 1;
    }
  }
  quest::api::GenerateRequest request;
  if (!prompt_text.empty()) {
    request.set_text(prompt_text);
  } else {
    const int64_t vocab = std::max<int64_t>(info.vocab_size(), 2);
    for (int i = 0; i < prompt_tokens; ++i) request.mutable_token_ids()->add_ids(static_cast<int32_t>(1 + (7 * i) % (vocab - 1)));
  }
  request.mutable_sampling()->set_max_tokens(max_tokens);

  const absl::StatusOr<double> pages_before = ScrapeValue(*stub, "quest_kv_pages_in_use");
  std::cout << "load: " << target << " (" << info.architecture() << ", backend " << info.backend() << "), "
            << clients << " clients, " << seconds << " s, max_tokens " << max_tokens << ", prompt "
            << (prompt_text.empty() ? absl::StrCat(prompt_tokens, " token ids") : "text") << "\n";

  const Clock::time_point start = Clock::now();
  const Clock::time_point stop_at = start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  const auto rpc_budget = std::chrono::duration<double>(seconds) + absl::ToChronoSeconds(absl::GetFlag(FLAGS_rpc_grace));
  std::vector<ClientResult> results(clients);
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      ClientResult& r = results[c];
      while (Clock::now() < stop_at) {
        grpc::ClientContext context;
        context.set_deadline(std::chrono::system_clock::now() +
                             std::chrono::duration_cast<std::chrono::system_clock::duration>(rpc_budget));
        const Clock::time_point sent = Clock::now();
        Clock::time_point last = sent;
        bool first = true;
        std::vector<double> ttft, itl;
        int64_t tokens = 0;
        auto reader = stub->GenerateStream(&context, request);
        quest::api::GenerateStreamResponse message;
        while (reader->Read(&message)) {
          if (!message.has_token()) continue;
          const Clock::time_point now = Clock::now();
          const double gap = std::chrono::duration<double>(now - last).count();
          (first ? ttft : itl).push_back(gap);
          first = false;
          last = now;
          ++tokens;
        }
        const grpc::Status status = reader->Finish();
        if (status.ok()) {
          ++r.requests;
          r.tokens += tokens;
          r.ttft_s.insert(r.ttft_s.end(), ttft.begin(), ttft.end());
          r.itl_s.insert(r.itl_s.end(), itl.begin(), itl.end());
        } else {
          ++r.errors[CodeName(status.error_code())];
          if (r.first_error.empty()) r.first_error = status.error_message();
          // A failing server is not hammered in a tight loop.
          std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();

  ClientResult total;
  for (ClientResult& r : results) {
    total.requests += r.requests;
    total.tokens += r.tokens;
    total.ttft_s.insert(total.ttft_s.end(), r.ttft_s.begin(), r.ttft_s.end());
    total.itl_s.insert(total.itl_s.end(), r.itl_s.begin(), r.itl_s.end());
    for (const auto& [code, n] : r.errors) total.errors[code] += n;
    if (total.first_error.empty()) total.first_error = r.first_error;
  }
  std::sort(total.ttft_s.begin(), total.ttft_s.end());
  std::sort(total.itl_s.begin(), total.itl_s.end());
  int64_t errors = 0;
  for (const auto& [code, n] : total.errors) errors += n;

  // Pages are returned as each request ends; give the server a moment.
  absl::StatusOr<double> pages_after = ScrapeValue(*stub, "quest_kv_pages_in_use");
  for (int i = 0; i < 50 && pages_after.ok() && pages_before.ok() && *pages_after > *pages_before; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    pages_after = ScrapeValue(*stub, "quest_kv_pages_in_use");
  }
  const auto pages = [](const absl::StatusOr<double>& v) {
    return v.ok() ? absl::StrCat(*v) : absl::StrCat("? (", v.status().message(), ")");
  };

  std::cout << absl::StrFormat("elapsed:            %.2f s\n", elapsed);
  std::cout << absl::StrFormat("requests:           %d ok, %d errors\n", total.requests, errors);
  std::cout << absl::StrFormat("requests/s:         %.2f\n", total.requests / elapsed);
  std::cout << absl::StrFormat("generated tokens/s: %.1f (%d tokens)\n", total.tokens / elapsed, total.tokens);
  std::cout << "time to first token: p50 " << PercentileMs(total.ttft_s, 50) << ", p99 "
            << PercentileMs(total.ttft_s, 99) << " (" << total.ttft_s.size() << " samples)\n";
  std::cout << "inter-token latency: p50 " << PercentileMs(total.itl_s, 50) << ", p99 "
            << PercentileMs(total.itl_s, 99) << " (" << total.itl_s.size() << " samples)\n";
  std::cout << "errors:";
  if (total.errors.empty()) std::cout << " none";
  for (const auto& [code, n] : total.errors) std::cout << " " << code << "=" << n;
  if (!total.first_error.empty()) std::cout << " (first: " << total.first_error << ")";
  std::cout << "\n";
  std::cout << "kv pages in use:    before " << pages(pages_before) << ", after " << pages(pages_after) << "\n";
  return errors == 0 ? 0 : 3;
}
