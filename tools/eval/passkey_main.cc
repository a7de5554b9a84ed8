// passkey: the Quest paper's passkey-retrieval experiment on our engine.
//
//   bazel run //tools/eval:passkey -- --context_lengths=2048,4096
//       --policies=dense,quest,streaming_llm,h2o,tova --budgets=64,128,256
//       --trials=5 --csv=/tmp/passkey.csv
//
// For every context length, policy and budget it hides a random five-digit
// key at a random depth (seeded), asks for it greedily, and prints the
// paper's table (method x budget -> accuracy) plus a CSV. Works with any
// model the engine loads (--config / --model).

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "runtime/engine.h"
#include "tools/configs/default_config.h"
#include "tools/eval/passkey.h"

ABSL_FLAG(std::string, config, "", "Engine config (text proto). Empty: the embedded default.");
ABSL_FLAG(std::string, model, "", "Overrides model.path of the config.");
ABSL_FLAG(std::vector<std::string>, context_lengths, (std::vector<std::string>{"1024", "2048"}), "Prompt lengths in tokens.");
ABSL_FLAG(std::vector<std::string>, policies, (std::vector<std::string>{"dense", "quest", "streaming_llm", "h2o", "tova"}),
          "Cache policies to compare (quest:fp8 is Quest with FP8 E4M3 page bounds).");
ABSL_FLAG(std::vector<std::string>, budgets, (std::vector<std::string>{"64", "128", "256"}),
          "Token budgets (dense runs once, without a budget).");
ABSL_FLAG(int, trials, 5, "Trials per cell (key and depth drawn from --seed).");
ABSL_FLAG(uint64_t, seed, 1, "Seed for keys and depths.");
ABSL_FLAG(std::string, gqa_combine, "default", "Quest GQA score combination: default, max or sum.");
ABSL_FLAG(int, quest_page_size, 0, "Quest page size (0: the policy's default, the pool page size).");
ABSL_FLAG(int, quest_dense_layers, -1, "Quest dense_layers (-1: the policy's default).");
ABSL_FLAG(std::string, csv, "", "Also write the results as CSV here.");

namespace {

using quest::eval::PasskeyPrompt;

struct Cell {
  int correct = 0;
  int trials = 0;
  int errors = 0;
  double seconds = 0;
  std::string error;
};

std::vector<int64_t> Ints(const std::vector<std::string>& v, const char* flag) {
  std::vector<int64_t> out;
  for (const std::string& s : v) {
    int64_t x;
    if (!absl::SimpleAtoi(s, &x) || x <= 0) {
      std::cerr << "passkey: --" << flag << " has a non-positive or non-numeric entry \"" << s << "\"\n";
      std::exit(2);
    }
    out.push_back(x);
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const std::vector<int64_t> contexts = Ints(absl::GetFlag(FLAGS_context_lengths), "context_lengths");
  const std::vector<int64_t> budgets = Ints(absl::GetFlag(FLAGS_budgets), "budgets");
  const std::vector<std::string> policies = absl::GetFlag(FLAGS_policies);
  const int trials = absl::GetFlag(FLAGS_trials);
  const std::string combine_flag = absl::GetFlag(FLAGS_gqa_combine);
  if (combine_flag != "default" && combine_flag != "max" && combine_flag != "sum") {
    std::cerr << "passkey: --gqa_combine must be default, max or sum\n";
    return 2;
  }
  const auto combine = combine_flag == "max"   ? quest::config::QuestOptions::MAX
                       : combine_flag == "sum" ? quest::config::QuestOptions::SUM
                                               : quest::config::QuestOptions::GQA_COMBINE_UNSPECIFIED;

  auto config = quest::tools::LoadConfigOrDefault(absl::GetFlag(FLAGS_config));
  if (!config.ok()) {
    std::cerr << "passkey: " << config.status() << "\n";
    return 1;
  }
  if (!absl::GetFlag(FLAGS_model).empty()) config->mutable_model()->set_path(absl::GetFlag(FLAGS_model));
  const int64_t longest = *std::max_element(contexts.begin(), contexts.end());
  config->mutable_limits()->set_max_context_tokens(static_cast<uint32_t>(longest + 16));
  config->mutable_limits()->set_max_prompt_tokens(static_cast<uint32_t>(longest + 16));
  config->mutable_limits()->set_max_concurrent_requests(1);
  config->mutable_cache()->set_num_pages(0);
  auto engine = quest::Engine::Create(*config);
  if (!engine.ok()) {
    std::cerr << "passkey: " << engine.status() << "\n";
    return 1;
  }
  const quest::Tokenizer* tokenizer = (*engine)->tokenizer();
  if (tokenizer == nullptr) {
    std::cerr << "passkey: the model has no tokenizer\n";
    return 1;
  }

  // (policy, budget) rows; dense has one row with budget 0.
  std::vector<std::pair<std::string, int64_t>> rows;
  for (const std::string& p : policies) {
    if (p == "dense") {
      rows.push_back({p, 0});
    } else {
      for (int64_t b : budgets) rows.push_back({p, b});
    }
  }
  std::map<std::pair<int, int64_t>, Cell> cells;  // (row, context)
  const int total = static_cast<int>(rows.size() * contexts.size()) * trials;
  int done = 0;
  std::mt19937_64 rng(absl::GetFlag(FLAGS_seed));
  for (int64_t ctx : contexts) {
    for (int t = 0; t < trials; ++t) {
      // One prompt per (context, trial), shared by every method: a fair comparison.
      const std::string key = absl::StrCat(std::uniform_int_distribution<int>(10000, 99999)(rng));
      const double depth = std::uniform_real_distribution<double>(0.0, 1.0)(rng);
      absl::StatusOr<PasskeyPrompt> prompt = quest::eval::BuildPasskeyPrompt(*tokenizer, ctx, depth, key);
      if (!prompt.ok()) {
        std::cerr << "passkey: " << prompt.status() << "\n";
        return 1;
      }
      for (size_t r = 0; r < rows.size(); ++r) {
        quest::api::GenerateRequest req;
        for (int32_t id : prompt->ids) req.mutable_token_ids()->add_ids(id);
        req.mutable_sampling()->set_max_tokens(8);
        // "quest:fp8" is Quest with FP8 E4M3 page bounds.
        const std::vector<std::string> spec = absl::StrSplit(rows[r].first, ':');
        *req.mutable_cache() = quest::eval::PolicyWithBudget(spec[0], rows[r].second, combine);
        if (req.cache().has_quest()) {
          if (spec.size() > 1 && spec[1] == "fp8") {
            req.mutable_cache()->mutable_quest()->set_bounds_dtype(quest::config::QuestOptions::FP8_E4M3);
          }
          if (absl::GetFlag(FLAGS_quest_page_size) > 0) {
            req.mutable_cache()->mutable_quest()->set_page_size(absl::GetFlag(FLAGS_quest_page_size));
          }
          if (absl::GetFlag(FLAGS_quest_dense_layers) >= 0) {
            req.mutable_cache()->mutable_quest()->set_dense_layers(absl::GetFlag(FLAGS_quest_dense_layers));
          }
        }
        req.mutable_cache()->set_page_size(config->cache().page_size());
        const auto start = std::chrono::steady_clock::now();
        auto resp = (*engine)->Generate(req);
        const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        Cell& cell = cells[{static_cast<int>(r), ctx}];
        cell.trials++;
        cell.seconds += secs;
        std::string verdict;
        if (!resp.ok()) {
          cell.errors++;
          cell.error = std::string(resp.status().message());
          verdict = absl::StrCat("error: ", resp.status().message());
        } else {
          const bool ok = quest::eval::PasskeyFound(resp->text(), key);
          cell.correct += ok;
          verdict = absl::StrCat(ok ? "found" : "missed", " (answer \"", resp->text(), "\")");
        }
        ++done;
        std::cerr << absl::StrFormat("[%d/%d] ctx=%d depth=%.2f %s%s: %s, %.1fs\n", done, total, ctx, depth,
                                     rows[r].first, rows[r].second ? absl::StrCat(" budget=", rows[r].second) : "",
                                     verdict, secs);
      }
    }
  }

  std::cout << absl::StrFormat("\npasskey retrieval, %d trials per cell, model %s\n", trials,
                               (*engine)->model_info().source);
  std::cout << absl::StrFormat("%-16s %7s", "method", "budget");
  for (int64_t ctx : contexts) std::cout << absl::StrFormat(" %10s", absl::StrCat("ctx=", ctx));
  std::cout << "\n";
  std::ofstream csv;
  if (!absl::GetFlag(FLAGS_csv).empty()) {
    csv.open(absl::GetFlag(FLAGS_csv));
    csv << "method,budget,context,trials,correct,accuracy,errors,mean_seconds,gqa_combine\n";
  }
  for (size_t r = 0; r < rows.size(); ++r) {
    std::cout << absl::StrFormat("%-16s %7s", rows[r].first, rows[r].second ? absl::StrCat(rows[r].second) : "-");
    for (int64_t ctx : contexts) {
      const Cell& c = cells[{static_cast<int>(r), ctx}];
      if (c.errors == c.trials) {
        std::cout << absl::StrFormat(" %10s", "n/a");
      } else {
        std::cout << absl::StrFormat(" %9.0f%%", 100.0 * c.correct / c.trials);
      }
      if (csv.is_open()) {
        csv << absl::StrJoin({rows[r].first, absl::StrCat(rows[r].second), absl::StrCat(ctx), absl::StrCat(c.trials),
                              absl::StrCat(c.correct), absl::StrFormat("%.3f", double(c.correct) / c.trials),
                              absl::StrCat(c.errors), absl::StrFormat("%.2f", c.seconds / c.trials), combine_flag},
                             ",")
            << "\n";
      }
    }
    std::cout << "\n";
  }
  for (size_t r = 0; r < rows.size(); ++r) {
    for (int64_t ctx : contexts) {
      const Cell& c = cells[{static_cast<int>(r), ctx}];
      if (c.errors > 0) std::cout << "n/a " << rows[r].first << ": " << c.error << "\n";
    }
  }
  return 0;
}
