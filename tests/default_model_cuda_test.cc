// The embedded default model (SmolLM2-135M-Instruct) on the CUDA backend
// (bf16 storage, fp32 accumulation) against the CPU backend (fp32) and the
// transformers reference on the fixture's chat prompt: 32 greedy tokens, and
// logits teacher forced under dense attention and Quest. Needs a GPU (tags = ["gpu"]); the model
// comes from the runfiles (tools/gpu/gpu_ci.sh carries it to the GPU machine
// in parts, and the test skips when it did not arrive).

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "cache/kv_cache.h"
#include "models/gguf/gguf_checkpoint.h"
#include "models/llama/llama_model.h"
#include "ops/cpu/cpu_backend.h"
#include "ops/cuda/cuda_backend.h"
#include "ops/cuda/testing/teacher_forced.h"
#include "runtime/engine.h"

namespace quest {
namespace {

std::string Runfile(const std::string& path) { return std::string(std::getenv("TEST_SRCDIR")) + "/" + path; }

std::unique_ptr<Engine> MakeEngine(config::Backend backend) {
  config::EngineConfig c;
  c.mutable_model()->set_path(Runfile("default_model/SmolLM2-135M-Instruct.Q4_1.gguf"));
  c.set_backend(backend);
  c.mutable_limits()->set_max_concurrent_requests(1);
  c.mutable_limits()->set_max_context_tokens(1024);
  auto engine = Engine::Create(c);
  EXPECT_TRUE(engine.ok()) << engine.status();
  return engine.ok() ? *std::move(engine) : nullptr;
}

std::vector<int32_t> Greedy(Engine& engine, const std::vector<int32_t>& prompt,
                            const config::CacheConfig* cache) {
  api::GenerateRequest r;
  for (int32_t id : prompt) r.mutable_token_ids()->add_ids(id);
  r.mutable_sampling()->set_max_tokens(32);
  if (cache != nullptr) *r.mutable_cache() = *cache;
  auto resp = engine.Generate(r);
  EXPECT_TRUE(resp.ok()) << resp.status();
  if (!resp.ok()) return {};
  return std::vector<int32_t>(resp->token_ids().begin(), resp->token_ids().end());
}

std::string Join(const std::vector<int32_t>& ids) {
  std::string s;
  for (int32_t id : ids) s += std::to_string(id) + " ";
  return s;
}

// Tokens agreeing before the first difference.
size_t CommonPrefix(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  size_t i = 0;
  while (i < a.size() && i < b.size() && a[i] == b[i]) ++i;
  return i;
}

class DefaultModelCudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::ifstream(Runfile("default_model/SmolLM2-135M-Instruct.Q4_1.gguf")).fail()) {
      GTEST_SKIP() << "the default model is not in the runfiles (see tools/gpu/gpu_ci.sh)";
    }
    std::ifstream in(Runfile("quest_runtime/tests/fixtures/smollm2_greedy.json"));
    ASSERT_TRUE(in.good());
    const nlohmann::json fixture = nlohmann::json::parse(in);
    prompt_ = fixture["prompt_ids"].get<std::vector<int32_t>>();
    reference_ = fixture["reference_tokens"].get<std::vector<int32_t>>();
    cpu_ = MakeEngine(config::CPU);
    gpu_ = MakeEngine(config::CUDA);
    ASSERT_TRUE(cpu_ != nullptr && gpu_ != nullptr);
  }
  std::vector<int32_t> prompt_, reference_;
  std::unique_ptr<Engine> cpu_, gpu_;
};

// Greedy generation in bf16 may part ways with fp32 where a near-tie flips
// (it did at token 18 on the H100): asserted is that the GPU keeps the CPU's
// tokens up to the first step whose CPU top-2 margin is within the logit
// error measured by the teacher-forced test below, i.e. up to a step where a
// flip is explained by rounding; the common prefix is printed.
TEST_F(DefaultModelCudaTest, DenseGreedyTokensMatchCpu) {
  const std::vector<int32_t> cpu = Greedy(*cpu_, prompt_, nullptr);
  const std::vector<int32_t> gpu = Greedy(*gpu_, prompt_, nullptr);
  std::printf("  transformers %s\n  cpu          %s\n  cuda (bf16)  %s\n", Join(reference_).c_str(),
              Join(cpu).c_str(), Join(gpu).c_str());
  const size_t common = CommonPrefix(cpu, gpu);
  std::printf("  greedy: cuda agrees with cpu on the first %zu of %zu tokens\n", common, cpu.size());
  EXPECT_EQ(gpu.size(), 32u);
  EXPECT_EQ(gpu_->kv_pages().first, 0);
  if (common == cpu.size()) return;
  // Where they part, the CPU's choice must have been a near-tie for bf16.
  auto ckpt = models::LoadGgufCheckpoint(Runfile("default_model/SmolLM2-135M-Instruct.Q4_1.gguf"));
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  std::unique_ptr<Backend> cpu_backend = ops::CreateCpuBackend();
  auto gpu_backend = ops::CreateCudaBackend();
  ASSERT_TRUE(gpu_backend.ok());
  std::vector<int32_t> forced = prompt_;
  forced.insert(forced.end(), cpu.begin(), cpu.begin() + common);
  config::CacheConfig dense;
  dense.set_policy("dense");
  auto steps = testing::CompareTeacherForced(*ckpt, *cpu_backend, **gpu_backend, forced, 0, dense, 16);
  ASSERT_TRUE(steps.ok()) << steps.status();
  const testing::LogitsComparison& at = steps->back();
  std::printf("  at token %zu: cpu argmax %d (margin %.4f over the runner-up), gpu argmax %d, logits max err %.4f\n",
              common, at.cpu_argmax, at.cpu_margin, at.gpu_argmax, at.max_err);
  EXPECT_TRUE(at.ArgmaxConsistent()) << "the greedy tokens part ways where the CPU's margin (" << at.cpu_margin
                                     << ") exceeds twice the bf16 logit error (" << at.max_err << ")";
}

// Teacher forced over the fixture's prompt and 32 of the CPU's greedy tokens.
// Dense: logits within bf16 rounding (testing::kBf16LogitsTol) at every step,
// argmaxes consistent. Quest (budget 32 tokens in pages of 8, so selection is
// active at every decode step beyond the two dense layers): the prefill is
// dense and held to the same bound; at decode steps the GPU ranks pages with
// bf16 queries and the CPU with fp32 ones, so near-tied pages may be chosen
// differently and the logits then move by more than rounding (up to 0.16 of
// the logit range measured on the H100, with the argmax agreeing on 32 of 33
// steps). Asserted there: every argmax difference is one the measured logit
// error explains; the per-step errors are printed.
TEST_F(DefaultModelCudaTest, LogitsMatchCpuTeacherForced) {
  auto ckpt = models::LoadGgufCheckpoint(Runfile("default_model/SmolLM2-135M-Instruct.Q4_1.gguf"));
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  std::unique_ptr<Backend> cpu_backend = ops::CreateCpuBackend();
  auto gpu_backend = ops::CreateCudaBackend();
  ASSERT_TRUE(gpu_backend.ok());
  std::vector<config::CacheConfig> policies(2);
  policies[0].set_policy("dense");
  policies[1].set_policy("quest");
  policies[1].mutable_quest()->set_token_budget(32);
  policies[1].mutable_quest()->set_page_size(8);
  for (const config::CacheConfig& policy : policies) {
    const bool dense = policy.policy() == "dense";
    auto steps = testing::CompareTeacherForced(*ckpt, *cpu_backend, **gpu_backend, prompt_, 32, policy, 16);
    ASSERT_TRUE(steps.ok()) << steps.status();
    double worst = 0;
    int agree = 0;
    std::string rels;
    for (size_t i = 0; i < steps->size(); ++i) {
      const testing::LogitsComparison& c = (*steps)[i];
      worst = std::max(worst, c.rel);
      agree += c.cpu_argmax == c.gpu_argmax;
      char buf[16];
      std::snprintf(buf, sizeof(buf), " %.3f", c.rel);
      rels += buf;
      if (dense || i == 0) {
        EXPECT_LE(c.rel, testing::kBf16LogitsTol) << policy.policy() << " step " << i;
      }
      EXPECT_TRUE(c.ArgmaxConsistent()) << policy.policy() << " step " << i << ": cpu " << c.cpu_argmax
                                        << " gpu " << c.gpu_argmax << ", margin " << c.cpu_margin
                                        << ", max err " << c.max_err;
    }
    std::printf("  %-6s teacher forced: worst logits rel err %.4g over %zu steps, argmax agreed %d/%zu\n"
                "         per step:%s\n",
                policy.policy().c_str(), worst, steps->size(), agree, steps->size(), rels.c_str());
  }
}

// Batched decode on the GPU: four sequences of ragged lengths (dense and
// Quest) decode together in one forward step (their attention in one
// batched launch per layer), and the logits of each row are held against
// the same sequence decoding alone on the GPU, teacher forced with the solo
// run's greedy tokens. Selection is the same either way (per sequence, from
// the same inputs); what may differ is the split-KV plan (the batch's splits
// are sized for the whole batch) and the GEMMs' row count, so the bound is
// bf16 rounding. At these lengths (the model's context is 8K) every plan is
// splits of the minimum 128 rows either way, and on the H100 the rows came
// out bit-identical; batches whose plans differ are
// //ops/cuda:cuda_backend_test's BatchedDecode.
TEST_F(DefaultModelCudaTest, BatchedDecodeMatchesEachSequenceAlone) {
  auto ckpt = models::LoadGgufCheckpoint(Runfile("default_model/SmolLM2-135M-Instruct.Q4_1.gguf"));
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  auto backend = ops::CreateCudaBackend();
  ASSERT_TRUE(backend.ok()) << backend.status();
  auto model = models::LlamaModel::Create(*ckpt, **backend);
  ASSERT_TRUE(model.ok()) << model.status();
  constexpr int kPage = 16, kSteps = 12;
  const std::vector<int> lengths = {9, 70, 900, 3000};
  std::vector<config::CacheConfig> policies(lengths.size());
  for (size_t i = 0; i < policies.size(); ++i) {
    if (i % 2 == 0) {
      policies[i].set_policy("dense");
    } else {
      policies[i].set_policy("quest");
      policies[i].mutable_quest()->set_token_budget(64);
    }
  }
  auto make_cache = [&]() {
    cache::PagedKVCacheOptions o;
    o.geometry = (*model)->CacheGeometryFor(kPage);
    o.num_pages = 320;
    o.dtype = (*backend)->activation_dtype();
    auto c = cache::CreatePagedKVCache(o, **backend);
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? *std::move(c) : nullptr;
  };
  std::unique_ptr<cache::KVCache> batched = make_cache(), alone = make_cache();
  ASSERT_TRUE(batched != nullptr && alone != nullptr);
  // Prompts: the fixture's prompt cycled to each length, shifted per
  // sequence so they differ.
  std::vector<int32_t> next(lengths.size());
  for (size_t i = 0; i < lengths.size(); ++i) {
    std::vector<int32_t> prompt(lengths[i]);
    for (int t = 0; t < lengths[i]; ++t) prompt[t] = prompt_[(t + 7 * i) % prompt_.size()];
    for (cache::KVCache* c : {batched.get(), alone.get()}) {
      ASSERT_TRUE(c->AddSequence(static_cast<cache::SequenceId>(i), &policies[i]).ok());
      const models::SequenceStep step{static_cast<cache::SequenceId>(i), prompt};
      auto logits = (*model)->Forward({&step, 1}, *c);
      ASSERT_TRUE(logits.ok()) << logits.status();
      const float* row = logits->data<float>();
      next[i] = static_cast<int32_t>(std::max_element(row, row + logits->dim(1)) - row);
    }
  }
  double worst = 0;
  int agree = 0, rows = 0;
  for (int step = 0; step < kSteps; ++step) {
    std::vector<models::SequenceStep> steps;
    for (size_t i = 0; i < lengths.size(); ++i) {
      steps.push_back({static_cast<cache::SequenceId>(i), absl::MakeConstSpan(&next[i], 1)});
    }
    auto together = (*model)->Forward(steps, *batched);
    ASSERT_TRUE(together.ok()) << together.status();
    const int64_t vocab = together->dim(1);
    for (size_t i = 0; i < lengths.size(); ++i) {
      auto solo = (*model)->Forward({&steps[i], 1}, *alone);
      ASSERT_TRUE(solo.ok()) << solo.status();
      const float* want = solo->data<float>();
      const float* got = together->data<float>() + i * vocab;
      double max_ref = 0, max_err = 0;
      for (int64_t v = 0; v < vocab; ++v) {
        ASSERT_TRUE(std::isfinite(got[v])) << "sequence " << i << " step " << step << " logit " << v;
        max_ref = std::max(max_ref, std::abs(static_cast<double>(want[v])));
        max_err = std::max(max_err, std::abs(static_cast<double>(got[v]) - want[v]));
      }
      const double rel = max_err / max_ref;
      worst = std::max(worst, rel);
      EXPECT_LE(rel, testing::kBf16LogitsTol) << policies[i].policy() << " sequence " << i << " step " << step;
      const int32_t solo_argmax = static_cast<int32_t>(std::max_element(want, want + vocab) - want);
      const int32_t batch_argmax = static_cast<int32_t>(std::max_element(got, got + vocab) - got);
      agree += solo_argmax == batch_argmax;
      ++rows;
      next[i] = solo_argmax;  // teacher forced: both caches get the solo token
    }
  }
  std::printf("  batched decode of %zu sequences (lengths 9..3000, dense + quest): worst logits rel err %.4g "
              "against each alone, argmax agreed %d/%d\n",
              lengths.size(), worst, agree, rows);
  for (size_t i = 0; i < lengths.size(); ++i) {
    batched->RemoveSequence(static_cast<cache::SequenceId>(i));
    alone->RemoveSequence(static_cast<cache::SequenceId>(i));
  }
  EXPECT_EQ(batched->stats().pages_in_use, 0);
}

}  // namespace
}  // namespace quest
