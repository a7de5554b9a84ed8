// decode_bench: end-to-end decode speed of the engine on the GPU, dense
// against Quest, at long context, batch 1 -- the paper's "end to end" number
// -- or --batch concurrent requests (continuous batching).
//
// The model is Llama-2-7B-shaped (hidden 4096, 32 heads of 128, MLP 11008,
// vocab 32000; --kv_heads 8 for the GQA variant) or, with
// --shape=llama3-8b, Llama-3.1-8B-shaped (8 KV heads, MLP 14336, vocab
// 128256, RoPE base 500000 with the llama3 scaling), with --layers layers of
// deterministic random weights (models/testing/tiny_checkpoint), written as a
// bf16 safetensors checkpoint into --dir and loaded by Engine::Create like any
// checkpoint. Random weights make attention near uniform, which does not
// change what is measured: the time per output token of the real code path
// (scheduler, model, KV cache, policy, kernels). Every layer of a policy
// costs the same, but Quest keeps --quest_dense_layers layers dense: with
// the default 8 layers those 2 are a quarter of the model, against 2 of 32
// in Llama-2-7B, so the full shape's end-to-end ratio needs --layers=32
// (12.9 GB of weights; on an H100: 1.71x at 32K B=2048 fp8, where 8 layers
// give ~1.47x).
//
// For each policy: one request with a --context-token random prompt and
// --decode_steps greedy tokens; the time per output token is the median gap
// between consecutive streamed tokens (the first token, which ends the
// prefill, is excluded). Reported as ratios against dense in the same run.
//
//   bazel build //tools/bench:decode_bench    (run on the GPU machine;
//   tools/gpu/gpu_ci.sh runs it)

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "models/testing/tiny_checkpoint.h"
#include "runtime/engine.h"
#include "tools/bench/bench_util.h"

ABSL_FLAG(int, layers, 8, "Transformer layers of the --shape model (32 in both real models).");
ABSL_FLAG(std::string, shape, "llama2-7b",
          "llama2-7b (MLP 11008, vocab 32000, --kv_heads) or llama3-8b (Llama 3.1 8B: 8 KV heads, MLP 14336, "
          "vocab 128256, llama3 RoPE scaling)");
ABSL_FLAG(int, kv_heads, 32, "KV heads of --shape=llama2-7b (32: MHA as Llama-2-7B; 8: GQA).");
ABSL_FLAG(std::vector<std::string>, contexts, (std::vector<std::string>{"32768"}),
          "Prompt lengths in tokens.");
ABSL_FLAG(std::vector<std::string>, budgets, (std::vector<std::string>{"2048"}),
          "Quest token budgets (one Quest run per budget and context).");
ABSL_FLAG(int, quest_dense_layers, 2, "cache.quest.dense_layers of the Quest runs.");
ABSL_FLAG(std::vector<std::string>, quest_bounds, (std::vector<std::string>{"kv", "fp8"}),
          "Quest page-bound storage of the Quest runs: kv (the KV dtype) and/or fp8 (E4M3).");
ABSL_FLAG(int, decode_steps, 32, "Greedy tokens generated per run (per request).");
ABSL_FLAG(int, batch, 1,
          "Concurrent requests per run. Above 1 the engine serves them together (continuous batching) "
          "and the result is the output tokens per second while every request is decoding (after the "
          "last prefill, before the first request ends), so --decode_steps must outlast the other "
          "requests' prefills (--prefill_chunk tokens a step: about context / chunk * (batch - 1) steps).");
ABSL_FLAG(int, prefill_chunk, 0,
          "limits.prefill_chunk_tokens of the engine (prompt tokens per step; 0: the engine's default, 2048).");
ABSL_FLAG(std::string, dir, "/tmp/quest_decode_bench_model", "Where the checkpoint is written.");

namespace quest {
namespace {

using Clock = std::chrono::steady_clock;

struct Run {
  double tpot_s = 0;     // median time per output token
  double prefill_s = 0;  // request start to first token
};

api::GenerateRequest Request(const std::vector<int32_t>& prompt, const config::CacheConfig& cache, int steps) {
  api::GenerateRequest r;
  for (int32_t id : prompt) r.mutable_token_ids()->add_ids(id);
  r.mutable_sampling()->set_max_tokens(steps);
  *r.mutable_cache() = cache;
  return r;
}

absl::StatusOr<Run> Generate(Engine& engine, const std::vector<int32_t>& prompt,
                             const config::CacheConfig& cache, int steps) {
  const api::GenerateRequest r = Request(prompt, cache, steps);
  std::vector<Clock::time_point> stamps;
  const Clock::time_point start = Clock::now();
  absl::StatusOr<api::GenerateResponse> resp =
      engine.Generate(r, [&](const TokenEvent&) { stamps.push_back(Clock::now()); });
  if (!resp.ok()) return resp.status();
  if (stamps.size() < 3) {
    return absl::InternalError(absl::StrCat("only ", stamps.size(), " tokens streamed"));
  }
  std::vector<double> gaps;
  for (size_t i = 1; i < stamps.size(); ++i) {
    gaps.push_back(std::chrono::duration<double>(stamps[i] - stamps[i - 1]).count());
  }
  std::sort(gaps.begin(), gaps.end());
  return Run{gaps[gaps.size() / 2], std::chrono::duration<double>(stamps[0] - start).count()};
}

// `prompts.size()` requests at once, each generating `steps` tokens; the
// result's tpot_s is the batch's time per decode step in the window where
// every request decodes (tokens in the window / window length / requests),
// prefill_s the time until the last request's first token.
absl::StatusOr<Run> GenerateBatch(Engine& engine, const std::vector<std::vector<int32_t>>& prompts,
                                  const config::CacheConfig& cache, int steps) {
  const size_t n = prompts.size();
  std::vector<std::vector<Clock::time_point>> stamps(n);
  std::vector<absl::Status> status(n);
  const Clock::time_point start = Clock::now();
  std::vector<std::thread> threads;
  for (size_t i = 0; i < n; ++i) {
    threads.emplace_back([&, i] {
      const api::GenerateRequest r = Request(prompts[i], cache, steps);
      // Callbacks run on the scheduler thread, one at a time.
      absl::StatusOr<api::GenerateResponse> resp =
          engine.Generate(r, [&stamps, i](const TokenEvent&) { stamps[i].push_back(Clock::now()); });
      status[i] = resp.status();
      if (resp.ok() && resp->token_ids_size() < steps) {
        status[i] = absl::InternalError(absl::StrCat("request ", i, " ended after ", resp->token_ids_size(),
                                                     " of ", steps, " tokens (finish reason ",
                                                     api::FinishReason_Name(resp->finish_reason()), ")"));
      }
    });
  }
  for (std::thread& t : threads) t.join();
  Clock::time_point begin = start, end = Clock::time_point::max();
  for (size_t i = 0; i < n; ++i) {
    if (!status[i].ok()) return status[i];
    if (stamps[i].empty()) return absl::InternalError(absl::StrCat("request ", i, " streamed no token"));
    begin = std::max(begin, stamps[i].front());
    end = std::min(end, stamps[i].back());
  }
  int64_t tokens = 0;
  for (const auto& s : stamps) tokens += std::count_if(s.begin(), s.end(), [&](auto t) { return t > begin && t <= end; });
  if (tokens < static_cast<int64_t>(16 * n)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "only ", tokens, " tokens while all ", n, " requests decoded: raise --decode_steps"));
  }
  const double window = std::chrono::duration<double>(end - begin).count();
  return Run{window / (static_cast<double>(tokens) / n), std::chrono::duration<double>(begin - start).count()};
}

int Main() {
  const std::vector<int64_t> contexts =
      bench::ParsePositiveInts("decode_bench", "contexts", absl::GetFlag(FLAGS_contexts));
  const std::vector<int64_t> budgets = bench::ParsePositiveInts("decode_bench", "budgets", absl::GetFlag(FLAGS_budgets));
  const int steps = absl::GetFlag(FLAGS_decode_steps);
  const int64_t longest = *std::max_element(contexts.begin(), contexts.end());

  models::TinyCheckpointOptions o;
  const std::string shape = absl::GetFlag(FLAGS_shape);
  o.hidden = 4096;
  o.layers = absl::GetFlag(FLAGS_layers);
  o.heads = 32;
  o.max_position_embeddings = longest + steps + 64;
  if (shape == "llama2-7b") {
    o.vocab = 32000;
    o.inter = 11008;
    o.kv_heads = absl::GetFlag(FLAGS_kv_heads);
  } else if (shape == "llama3-8b") {
    o.vocab = 128256;
    o.inter = 14336;
    o.kv_heads = 8;
    o.rope_theta = 500000.0;
    o.rope_scaling.type = models::RopeScaling::Type::kLlama3;
    o.rope_scaling.factor = 8.0;
    o.rope_scaling.low_freq_factor = 1.0;
    o.rope_scaling.high_freq_factor = 4.0;
    o.rope_scaling.original_max_position_embeddings = 8192;
    o.max_position_embeddings = std::max<int64_t>(o.max_position_embeddings, 131072);
  } else {
    std::fprintf(stderr, "decode_bench: --shape takes llama2-7b or llama3-8b, not %s\n", shape.c_str());
    return 2;
  }
  o.dtype = DType::kBFloat16;
  // Random weights may pick any token greedily: the end-of-sequence id is
  // the last one, which no prompt holds, so requests run their full length
  // unless greedy decoding lands on it.
  o.eos_token_id = static_cast<int32_t>(o.vocab - 1);
  const auto t0 = Clock::now();
  if (absl::Status s = models::WriteTinyLlamaCheckpoint(absl::GetFlag(FLAGS_dir), o); !s.ok()) {
    std::fprintf(stderr, "decode_bench: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  config::EngineConfig c;
  c.mutable_model()->set_path(absl::GetFlag(FLAGS_dir));
  c.set_backend(config::CUDA);
  c.set_dtype(config::BFLOAT16);
  const int batch = absl::GetFlag(FLAGS_batch);
  if (batch < 1) {
    std::fprintf(stderr, "decode_bench: --batch must be >= 1\n");
    return 2;
  }
  c.mutable_limits()->set_max_concurrent_requests(static_cast<uint32_t>(batch));
  c.mutable_limits()->set_max_context_tokens(static_cast<uint32_t>(longest + steps + 16));
  c.mutable_limits()->set_max_prompt_tokens(static_cast<uint32_t>(longest));
  const int chunk = absl::GetFlag(FLAGS_prefill_chunk);
  if (chunk < 0) {
    std::fprintf(stderr, "decode_bench: --prefill_chunk must be >= 0\n");
    return 2;
  }
  c.mutable_limits()->set_prefill_chunk_tokens(static_cast<uint32_t>(chunk));
  absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Create(c);
  if (!engine.ok()) {
    std::fprintf(stderr, "decode_bench: %s\n", std::string(engine.status().message()).c_str());
    return 1;
  }
  std::printf("decode_bench: %s-shaped, %lld layers, 32 heads / %lld KV heads, head_dim 128, MLP %lld, vocab "
              "%lld, bf16, random weights, CUDA backend; checkpoint written and loaded in %.0f s\n",
              shape.c_str(), static_cast<long long>(o.layers), static_cast<long long>(o.kv_heads),
              static_cast<long long>(o.inter), static_cast<long long>(o.vocab),
              std::chrono::duration<double>(Clock::now() - t0).count());

  std::mt19937 rng(7);
  std::uniform_int_distribution<int32_t> token(3, static_cast<int32_t>(o.vocab - 2));
  struct Row {
    int64_t context;
    std::string policy;
    double speedup;  // dense tpot / this tpot
    double prefill_ratio;
  };
  std::vector<Row> rows;
  for (int64_t ctx : contexts) {
    std::vector<std::vector<int32_t>> prompts(batch, std::vector<int32_t>(ctx));
    for (auto& prompt : prompts) {
      for (int32_t& t : prompt) t = token(rng);
    }
    auto run = [&](const config::CacheConfig& cache) {
      return batch == 1 ? Generate(**engine, prompts[0], cache, steps) : GenerateBatch(**engine, prompts, cache, steps);
    };
    config::CacheConfig dense;
    dense.set_policy("dense");
    absl::StatusOr<Run> base = run(dense);
    if (!base.ok()) {
      std::fprintf(stderr, "decode_bench: dense at %lld: %s\n", static_cast<long long>(ctx),
                   std::string(base.status().message()).c_str());
      return 1;
    }
    std::printf("context %lld: dense %.1f output tokens/s (prefill %.1f s)\n", static_cast<long long>(ctx),
                batch / base->tpot_s, base->prefill_s);
    rows.push_back({ctx, "dense", 1.0, 1.0});
    for (int64_t budget : budgets) {
      if (budget >= ctx) continue;
      for (const std::string& bounds : absl::GetFlag(FLAGS_quest_bounds)) {
        if (bounds != "kv" && bounds != "fp8") {
          std::fprintf(stderr, "decode_bench: --quest_bounds takes kv and/or fp8, not %s\n", bounds.c_str());
          return 2;
        }
        config::CacheConfig quest;
        quest.set_policy("quest");
        quest.mutable_quest()->set_token_budget(static_cast<uint32_t>(budget));
        quest.mutable_quest()->set_dense_layers(absl::GetFlag(FLAGS_quest_dense_layers));
        if (bounds == "fp8") quest.mutable_quest()->set_bounds_dtype(config::QuestOptions::FP8_E4M3);
        absl::StatusOr<Run> q = run(quest);
        if (!q.ok()) {
          std::fprintf(stderr, "decode_bench: quest B=%lld (%s bounds) at %lld: %s\n",
                       static_cast<long long>(budget), bounds.c_str(), static_cast<long long>(ctx),
                       std::string(q.status().message()).c_str());
          return 1;
        }
        rows.push_back({ctx, absl::StrCat("quest B=", budget, bounds == "fp8" ? " fp8" : ""),
                        base->tpot_s / q->tpot_s, base->prefill_s / q->prefill_s});
      }
    }
  }
  if (batch == 1) {
    std::printf("\nend-to-end decode, batch 1, %d greedy tokens; speed-up = dense time per output token / "
                "this one (median inter-token gap, same run); quest dense_layers %d of %lld\n",
                steps, absl::GetFlag(FLAGS_quest_dense_layers), static_cast<long long>(o.layers));
  } else {
    std::printf("\nend-to-end decode, %d concurrent requests, %d greedy tokens each; speed-up = the batch's "
                "output tokens/s while all %d decode, against dense (same run); prefill ratio = time to the "
                "last first token; quest dense_layers %d of %lld\n",
                batch, steps, batch, absl::GetFlag(FLAGS_quest_dense_layers), static_cast<long long>(o.layers));
  }
  std::printf("%8s %-18s %9s %14s\n", "context", "policy", "speed-up", "prefill ratio");
  for (const Row& r : rows) {
    std::printf("%7lldK %-18s %8.2fx %13.2fx\n", static_cast<long long>(r.context / 1024), r.policy.c_str(),
                r.speedup, r.prefill_ratio);
  }
  return 0;
}

}  // namespace
}  // namespace quest

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return quest::Main();
}
