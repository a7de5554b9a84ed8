// The embedded default model (SmolLM2-135M-Instruct) on the CUDA backend
// (bf16 storage, fp32 accumulation) against the CPU backend (fp32) and the
// transformers reference on the fixture's chat prompt: 32 greedy tokens, and
// logits teacher forced under dense attention and Quest. Needs a GPU (tags = ["gpu"]); the model
// comes from the runfiles (tools/gpu/gpu_ci.sh carries it to the GPU machine
// in parts, and the test skips when it did not arrive).

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "models/gguf/gguf_checkpoint.h"
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

}  // namespace
}  // namespace quest
