// attention_recall: the Quest paper's "top-10 attention recall" experiment on
// real Q/K/V.
//
//   bazel run //tools/eval:attention_recall -- --context=4096 --decode_steps=16
//       --budgets=64,128,256,512 --csv=/tmp/recall.csv
//
// 1. Runs the model densely over long real text (Debian's licence texts by
//    default) and captures, for a few layers, the post-RoPE Q, K and V of
//    every position, through a capturing cache policy (the plug-in seam).
// 2. Replays each captured layer through a one-layer KV cache under every
//    policy and budget (quest with max and with sum GQA combination,
//    streaming_llm, h2o, tova; each behind a probe policy that records what
//    the query actually attended) and reports, per decode step, the fraction
//    of the true top-k attention tokens (dense softmax) that the policy's
//    query attended, the relative L2 error of the attention output
//    versus dense, and "kept": the share of a step's attended tokens that
//    the previous step attended too (how much of a selection carries over
//    from one decode step to the next).

#include <algorithm>
#include <cmath>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "cache/cache_policy.h"
#include "cache/kv_cache.h"
#include "ops/cpu/cpu_backend.h"
#include "runtime/engine.h"
#include "tools/configs/default_config.h"
#include "tools/eval/attention_metrics.h"
#include "tools/eval/passkey.h"

ABSL_FLAG(std::string, config, "", "Engine config (text proto). Empty: the embedded default.");
ABSL_FLAG(std::string, model, "", "Overrides model.path of the config.");
ABSL_FLAG(std::vector<std::string>, text_files,
          (std::vector<std::string>{"/usr/share/common-licenses/GPL-3", "/usr/share/common-licenses/GPL-2",
                                    "/usr/share/common-licenses/LGPL-2.1"}),
          "Real text, concatenated, as the context.");
ABSL_FLAG(int, context, 4096, "Tokens of text before the decode steps.");
ABSL_FLAG(int, decode_steps, 16, "Greedy decode steps measured after the context.");
ABSL_FLAG(std::vector<std::string>, layers, {}, "Layers to capture (default: a spread from layer 2 to the last).");
ABSL_FLAG(std::vector<std::string>, policies,
          (std::vector<std::string>{"quest:max", "quest:sum", "streaming_llm", "h2o", "tova"}),
          "Policies (quest:max / quest:sum choose the GQA combination; a third part fp8, as in "
          "quest:sum:fp8, stores Quest's page bounds as FP8 E4M3).");
ABSL_FLAG(std::vector<std::string>, budgets, (std::vector<std::string>{"64", "128", "256", "512"}), "Token budgets.");
ABSL_FLAG(int, top, 10, "Size of the true top set whose recall is measured.");
ABSL_FLAG(int, quest_page_size, 0, "Quest page size (0: the policy's default, the pool page size).");
ABSL_FLAG(std::string, csv, "", "Also write per-layer results as CSV here.");

namespace quest::eval {
namespace {

// ---- Capture ---------------------------------------------------------------

struct LayerTrace {
  std::vector<float> q, k, v;  // [T, H, d], [T, KV, d], [T, KV, d]
};

struct CaptureStore {
  std::set<int> layers;
  std::map<int, LayerTrace> traces;
  cache::CacheGeometry geometry;
};
CaptureStore* g_capture = nullptr;

class CapturePolicy final : public cache::CachePolicy {
 public:
  void OnAppend(const cache::SequenceLayerView& seq, int64_t start, int64_t n) override {
    if (!g_capture->layers.count(seq.layer)) return;
    const cache::CacheGeometry& g = g_capture->geometry;
    const int64_t row = static_cast<int64_t>(g.num_kv_heads) * g.head_dim;
    LayerTrace& t = g_capture->traces[seq.layer];
    for (int64_t pos = start; pos < start + n; ++pos) {
      const int64_t phys = seq.page_table[pos / g.page_size];
      const int64_t off = (phys * g.page_size + pos % g.page_size) * row;
      t.k.insert(t.k.end(), seq.k_pages->data<float>() + off, seq.k_pages->data<float>() + off + row);
      t.v.insert(t.v.end(), seq.v_pages->data<float>() + off, seq.v_pages->data<float>() + off + row);
    }
  }
  void SelectPages(const cache::SequenceLayerView& seq, const Tensor& q, cache::PageSelection&) override {
    if (!g_capture->layers.count(seq.layer)) return;
    LayerTrace& t = g_capture->traces[seq.layer];
    t.q.insert(t.q.end(), q.data<float>(), q.data<float>() + q.numel());
  }
};

class CaptureFactory final : public cache::CachePolicyFactory {
 public:
  absl::string_view name() const override { return "eval_capture"; }
  absl::Status Validate(const config::CacheConfig&, const cache::CacheGeometry&) const override {
    return absl::OkStatus();
  }
  std::unique_ptr<cache::CachePolicy> Create(const config::CacheConfig&, const cache::CacheGeometry& g) const override {
    g_capture->geometry = g;
    return std::make_unique<CapturePolicy>();
  }
};
QUEST_REGISTER_CACHE_POLICY(CaptureFactory);

// ---- Probe: any policy, plus a record of what each query attended ----------

struct ProbeRecord {
  std::vector<float> last;  // [H, kv_len] weights of the last query
};
ProbeRecord* g_probe = nullptr;
config::CacheConfig g_inner;  // the wrapped policy's config for the next Create

class ProbePolicy final : public cache::CachePolicy {
 public:
  explicit ProbePolicy(std::unique_ptr<cache::CachePolicy> inner) : inner_(std::move(inner)) {}
  void OnAppend(const cache::SequenceLayerView& seq, int64_t start, int64_t n) override {
    inner_->OnAppend(seq, start, n);
  }
  void SelectPages(const cache::SequenceLayerView& seq, const Tensor& q, cache::PageSelection& s) override {
    inner_->SelectPages(seq, q, s);
  }
  bool WantsAttention() const override { return true; }
  void OnAttention(const cache::SequenceLayerView& seq, int64_t n, absl::Span<const float> sum,
                   absl::Span<const float> last) override {
    g_probe->last.assign(last.begin(), last.end());
    if (inner_->WantsAttention()) inner_->OnAttention(seq, n, sum, last);
  }
  void AfterStep(int64_t length, std::vector<int32_t>& released) override { inner_->AfterStep(length, released); }

 private:
  std::unique_ptr<cache::CachePolicy> inner_;
};

class ProbeFactory final : public cache::CachePolicyFactory {
 public:
  absl::string_view name() const override { return "eval_probe"; }
  absl::Status Validate(const config::CacheConfig&, const cache::CacheGeometry& g) const override {
    absl::StatusOr<const cache::CachePolicyFactory*> f = cache::CachePolicyRegistry::Global().Find(g_inner.policy());
    if (!f.ok()) return f.status();
    return (*f)->Validate(g_inner, g);
  }
  std::unique_ptr<cache::CachePolicy> Create(const config::CacheConfig&, const cache::CacheGeometry& g) const override {
    return std::make_unique<ProbePolicy>((*cache::CachePolicyRegistry::Global().Find(g_inner.policy()))->Create(g_inner, g));
  }
};
QUEST_REGISTER_CACHE_POLICY(ProbeFactory);

// ---- Replay ----------------------------------------------------------------

struct StepResult {
  std::vector<float> out;   // [H * d]
  std::vector<float> last;  // [H, kv_len]
};

// Replays one captured layer under `inner` (as layer 0 of a one-layer cache):
// the context as one prefill chunk, then each decode position as a step.
absl::StatusOr<std::vector<StepResult>> Replay(const LayerTrace& t, const cache::CacheGeometry& g, int64_t context,
                                               int64_t total, const config::CacheConfig& inner) {
  auto backend = ops::CreateCpuBackend();
  cache::PagedKVCacheOptions o;
  o.geometry = g;
  o.geometry.num_layers = 1;
  o.num_pages = static_cast<int>((total + g.page_size - 1) / g.page_size + 1);
  auto kv = cache::CreatePagedKVCache(o, *backend);
  if (!kv.ok()) return kv.status();
  g_inner = inner;
  config::CacheConfig probe;
  probe.set_policy("eval_probe");
  if (absl::Status s = (*kv)->AddSequence(1, &probe); !s.ok()) return s;
  const int64_t H = g.num_heads, KV = g.num_kv_heads, d = g.head_dim;
  auto rows = [&](const std::vector<float>& src, int64_t heads, int64_t begin, int64_t end) {
    return Tensor::FromFloats(absl::MakeConstSpan(src).subspan(begin * heads * d, (end - begin) * heads * d),
                              {end - begin, heads, d});
  };
  std::vector<StepResult> steps;
  ProbeRecord record;
  g_probe = &record;
  int64_t pos = 0;
  while (pos < total) {
    const int64_t end = pos == 0 ? context : pos + 1;
    if (absl::Status s = (*kv)->Reserve(1, end - pos); !s.ok()) return s;
    (*kv)->Append(0, 1, rows(t.k, KV, pos, end), rows(t.v, KV, pos, end));
    Tensor out = Tensor::Empty(DType::kFloat32, {end - pos, H * d});
    (*kv)->Attend(0, 1, rows(t.q, H, pos, end), out);
    (*kv)->Commit(1, end - pos);
    if (pos > 0) {
      steps.push_back({std::vector<float>(out.data<float>(), out.data<float>() + H * d), record.last});
    }
    pos = end;
  }
  (*kv)->RemoveSequence(1);
  return steps;
}

struct Metrics {
  double recall = 0, rel_error = 0;
  int count = 0;
  // Over (head, step after the first): the share of the step's attended
  // tokens that the previous step attended too (a sparse policy's
  // selection from one decode step to the next).
  double kept = 0;
  int kept_count = 0;
};

}  // namespace
}  // namespace quest::eval

int main(int argc, char** argv) {
  using namespace quest;
  using namespace quest::eval;
  absl::ParseCommandLine(argc, argv);
  CaptureStore store;
  g_capture = &store;

  auto config = tools::LoadConfigOrDefault(absl::GetFlag(FLAGS_config));
  if (!config.ok()) {
    std::cerr << "attention_recall: " << config.status() << "\n";
    return 1;
  }
  if (!absl::GetFlag(FLAGS_model).empty()) config->mutable_model()->set_path(absl::GetFlag(FLAGS_model));
  const int64_t context = absl::GetFlag(FLAGS_context), steps = absl::GetFlag(FLAGS_decode_steps);
  config->mutable_limits()->set_max_context_tokens(static_cast<uint32_t>(context + steps + 8));
  config->mutable_limits()->set_max_prompt_tokens(static_cast<uint32_t>(context + 8));
  config->mutable_limits()->set_max_concurrent_requests(1);
  config->mutable_cache()->set_num_pages(0);
  auto engine = Engine::Create(*config);
  if (!engine.ok()) {
    std::cerr << "attention_recall: " << engine.status() << "\n";
    return 1;
  }
  const ModelInfo& info = (*engine)->model_info();
  if (absl::GetFlag(FLAGS_layers).empty()) {
    for (int64_t l : {int64_t{2}, info.num_layers / 4, info.num_layers / 2, 3 * info.num_layers / 4, info.num_layers - 1}) {
      store.layers.insert(static_cast<int>(std::clamp<int64_t>(l, 0, info.num_layers - 1)));
    }
  } else {
    for (const std::string& s : absl::GetFlag(FLAGS_layers)) {
      int l;
      if (!absl::SimpleAtoi(s, &l) || l < 0 || l >= info.num_layers) {
        std::cerr << "attention_recall: --layers entry \"" << s << "\" is not a layer of this model (0.."
                  << info.num_layers - 1 << ")\n";
        return 2;
      }
      store.layers.insert(l);
    }
  }

  // The text, tokenized and cut to the context length.
  std::string text;
  for (const std::string& path : absl::GetFlag(FLAGS_text_files)) {
    std::ifstream in(path);
    if (!in) {
      std::cerr << "attention_recall: cannot read --text_files entry " << path << "\n";
      return 1;
    }
    std::stringstream ss;
    ss << in.rdbuf();
    text += ss.str() + "\n";
  }
  auto ids = (*engine)->tokenizer()->Encode(text);
  if (!ids.ok()) {
    std::cerr << "attention_recall: " << ids.status() << "\n";
    return 1;
  }
  if (static_cast<int64_t>(ids->size()) < context) {
    std::cerr << "attention_recall: the text has only " << ids->size() << " tokens, fewer than --context=" << context
              << "\n";
    return 1;
  }
  ids->resize(context);

  std::cerr << "capturing Q/K/V of layers";
  for (int l : store.layers) std::cerr << " " << l;
  std::cerr << " over " << context << " tokens + " << steps << " decode steps...\n";
  api::GenerateRequest req;
  for (int32_t id : *ids) req.mutable_token_ids()->add_ids(id);
  req.mutable_sampling()->set_max_tokens(static_cast<int32_t>(steps + 1));
  req.mutable_cache()->set_policy("eval_capture");
  auto resp = (*engine)->Generate(req);
  if (!resp.ok()) {
    std::cerr << "attention_recall: " << resp.status() << "\n";
    return 1;
  }
  const cache::CacheGeometry g = store.geometry;
  const int64_t total = context + steps;
  for (auto& [layer, t] : store.traces) {
    if (static_cast<int64_t>(t.q.size()) < total * g.num_heads * g.head_dim) {
      std::cerr << "attention_recall: layer " << layer << " captured too few positions\n";
      return 1;
    }
  }

  std::vector<int64_t> budgets;
  for (const std::string& s : absl::GetFlag(FLAGS_budgets)) {
    int64_t b;
    if (!absl::SimpleAtoi(s, &b) || b <= 0) {
      std::cerr << "attention_recall: bad --budgets entry \"" << s << "\"\n";
      return 2;
    }
    budgets.push_back(b);
  }
  const int top = absl::GetFlag(FLAGS_top);
  const int64_t H = g.num_heads, d = g.head_dim;

  // Dense reference per layer: outputs and the true top-k per head and step.
  std::map<int, std::vector<StepResult>> dense;
  for (const auto& [layer, t] : store.traces) {
    auto r = Replay(t, g, context, total, PolicyWithBudget("dense", 0));
    if (!r.ok()) {
      std::cerr << "attention_recall: dense replay: " << r.status() << "\n";
      return 1;
    }
    dense[layer] = *std::move(r);
  }

  std::ofstream csv;
  if (!absl::GetFlag(FLAGS_csv).empty()) {
    csv.open(absl::GetFlag(FLAGS_csv));
    csv << "policy,budget,layer,steps,top" << top << "_recall,relative_error,kept_from_previous_step\n";
  }
  std::cout << absl::StrFormat("\nattention recall (top-%d), %d context tokens of real text, %d decode steps, layers", top,
                               context, steps);
  for (int l : store.layers) std::cout << " " << l;
  std::cout << "\n"
            << absl::StrFormat("%-16s %7s %12s %12s %12s\n", "method", "budget", "recall", "rel. error",
                               "kept");
  for (const std::string& spec : absl::GetFlag(FLAGS_policies)) {
    std::vector<std::string> parts = absl::StrSplit(spec, ':');
    const std::string name = parts[0];
    auto combine = config::QuestOptions::GQA_COMBINE_UNSPECIFIED;
    if (parts.size() > 1) combine = parts[1] == "sum" ? config::QuestOptions::SUM : config::QuestOptions::MAX;
    const bool fp8 = parts.size() > 2 && parts[2] == "fp8";
    for (int64_t budget : budgets) {
      config::CacheConfig inner = PolicyWithBudget(name, budget, combine);
      if (name == "quest") {
        inner.mutable_quest()->set_dense_layers(0);  // replayed as layer 0
        inner.mutable_quest()->set_page_size(absl::GetFlag(FLAGS_quest_page_size));
        if (fp8) inner.mutable_quest()->set_bounds_dtype(config::QuestOptions::FP8_E4M3);
      }
      Metrics all;
      std::string failure;
      for (const auto& [layer, t] : store.traces) {
        auto r = Replay(t, g, context, total, inner);
        if (!r.ok()) {
          failure = std::string(r.status().message());
          break;
        }
        Metrics m;
        for (size_t s = 0; s < r->size(); ++s) {
          const StepResult& ref = dense[layer][s];
          const StepResult& got = (*r)[s];
          m.recall += TopRecall(ref.last, got.last, H, top);
          m.count += static_cast<int>(H);
          double num = 0, den = 0;
          for (int64_t i = 0; i < H * d; ++i) {
            num += (got.out[i] - ref.out[i]) * (got.out[i] - ref.out[i]);
            den += ref.out[i] * ref.out[i];
          }
          m.rel_error += std::sqrt(num / std::max(den, 1e-30)) * H;  // weighted like recall (per head)
          if (s > 0) {
            m.kept += KeptFromPrevious((*r)[s - 1].last, got.last, H);
            m.kept_count += H;
          }
        }
        if (csv.is_open()) {
          csv << absl::StrFormat("%s,%d,%d,%d,%.4f,%.4f,%.4f\n", spec, budget, layer, r->size(),
                                 m.recall / m.count, m.rel_error / m.count, m.kept / std::max(m.kept_count, 1));
        }
        all.recall += m.recall;
        all.rel_error += m.rel_error;
        all.count += m.count;
        all.kept += m.kept;
        all.kept_count += m.kept_count;
      }
      if (!failure.empty()) {
        std::cout << absl::StrFormat("%-16s %7d %12s   (%s)\n", spec, budget, "n/a", failure);
        break;
      }
      std::cout << absl::StrFormat("%-16s %7d %11.1f%% %12.4f %11.1f%%\n", spec, budget,
                                   100.0 * all.recall / all.count, all.rel_error / all.count,
                                   100.0 * all.kept / std::max(all.kept_count, 1));
      std::cout.flush();  // rows show up as they finish, even if the run is cut short
      if (csv.is_open()) csv.flush();
      std::cerr << "done: " << spec << " budget " << budget << "\n";
    }
  }
  return 0;
}
