// The Llama forward and the engine on the CUDA backend against the CPU
// reference, on the tiny GQA checkpoint (8 query heads over 2 KV heads,
// head_dim 8, 2 layers). Needs a GPU (tags = ["gpu"]).

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "cache/kv_cache.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "models/checkpoint.h"
#include "models/llama/llama_model.h"
#include "ops/cpu/cpu_backend.h"
#include "ops/cuda/cuda_backend.h"
#include "runtime/engine.h"
#include "tests/tiny_model.h"

namespace quest {
namespace {

std::string TinyModel() { return fixtures::TinyCheckpointPath(); }

config::EngineConfig TinyConfig(config::Backend backend) {
  config::EngineConfig c = fixtures::TinyEngineConfig();
  c.set_backend(backend);
  return c;
}

api::GenerateRequest Request(std::vector<int32_t> ids, int max_tokens) {
  api::GenerateRequest r;
  for (int32_t id : ids) r.mutable_token_ids()->add_ids(id);
  r.mutable_sampling()->set_max_tokens(max_tokens);
  return r;
}

std::vector<int32_t> Ids(const api::GenerateResponse& r) { return {r.token_ids().begin(), r.token_ids().end()}; }

std::string Join(const std::vector<int32_t>& v) {
  std::string s;
  for (int32_t x : v) s += std::to_string(x) + " ";
  return s;
}

// Logits of bf16 activations (8-bit mantissa) through two layers: a
// normalised max error (max |gpu - cpu| / max |cpu|) of 3e-2 allows a few
// bf16 ulps of accumulated rounding.
constexpr double kLogitsTol = 3e-2;

double Rel(const Tensor& want, const Tensor& got, double* max_err) {
  double ref = 0, err = 0;
  for (int64_t i = 0; i < want.numel(); ++i) {
    const float w = want.data<float>()[i], g = got.data<float>()[i];
    if (!std::isfinite(g)) {
      *max_err = INFINITY;
      return INFINITY;
    }
    ref = std::max(ref, std::abs(static_cast<double>(w)));
    err = std::max(err, std::abs(static_cast<double>(g) - w));
  }
  *max_err = err;
  return err / ref;
}

int32_t Argmax(const float* row, int64_t n) { return static_cast<int32_t>(std::max_element(row, row + n) - row); }

TEST(CudaModelTest, LogitsMatchCpuThroughPrefillAndSixteenDecodeSteps) {
  absl::StatusOr<models::Checkpoint> ckpt = models::LoadHfCheckpoint(TinyModel());
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  std::unique_ptr<Backend> cpu = ops::CreateCpuBackend();
  absl::StatusOr<std::unique_ptr<Backend>> gpu = ops::CreateCudaBackend();
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  auto cpu_model = models::LlamaModel::Create(*ckpt, *cpu);
  auto gpu_model = models::LlamaModel::Create(*ckpt, **gpu);
  ASSERT_TRUE(cpu_model.ok() && gpu_model.ok());
  auto make_cache = [&](Backend& b, const models::LlamaModel& m) {
    cache::PagedKVCacheOptions o;
    o.geometry = m.CacheGeometryFor(4);
    o.num_pages = 32;
    o.dtype = b.activation_dtype();
    o.default_policy.set_policy("dense");
    return cache::CreatePagedKVCache(o, b);
  };
  auto cpu_cache = make_cache(*cpu, **cpu_model);
  auto gpu_cache = make_cache(**gpu, **gpu_model);
  ASSERT_TRUE(cpu_cache.ok() && gpu_cache.ok()) << gpu_cache.status();
  ASSERT_TRUE((*cpu_cache)->AddSequence(1, nullptr).ok());
  ASSERT_TRUE((*gpu_cache)->AddSequence(1, nullptr).ok());

  const int64_t vocab = (*cpu_model)->config().vocab_size;
  std::vector<int32_t> tokens = {1, 17, 42, 5, 99, 23, 7, 64, 3, 120, 11};  // 11: last page partly filled
  double worst = 0;
  int argmax_agree = 0, steps = 0;
  for (int step = 0; step <= 16; ++step) {
    const models::SequenceStep s{1, tokens};
    const models::LogitsMode mode = step == 0 ? models::LogitsMode::kAllTokens : models::LogitsMode::kLastToken;
    absl::StatusOr<Tensor> want = (*cpu_model)->Forward({&s, 1}, **cpu_cache, mode);
    absl::StatusOr<Tensor> got = (*gpu_model)->Forward({&s, 1}, **gpu_cache, mode);
    ASSERT_TRUE(want.ok() && got.ok()) << got.status();
    ASSERT_EQ(got->device(), Device::kCpu);
    ASSERT_EQ(want->shape(), got->shape());
    double max_err = 0;
    const double rel = Rel(*want, *got, &max_err);
    worst = std::max(worst, rel);
    const float* last_cpu = want->data<float>() + (want->dim(0) - 1) * vocab;
    const float* last_gpu = got->data<float>() + (got->dim(0) - 1) * vocab;
    const int32_t next = Argmax(last_cpu, vocab);
    argmax_agree += next == Argmax(last_gpu, vocab);
    ++steps;
    std::printf("  step %2d (%s %2zu tokens): logits max err %.4g, rel %.4g, argmax cpu %d gpu %d\n", step,
                step == 0 ? "prefill" : "decode ", tokens.size(), max_err, rel, next, Argmax(last_gpu, vocab));
    EXPECT_LE(rel, kLogitsTol) << "step " << step;
    tokens = {next};  // teacher-forced on the reference's greedy token
  }
  std::printf("  worst rel %.4g over %d steps; argmax agreed %d/%d\n", worst, steps, argmax_agree, steps);
}

TEST(CudaEngineTest, GreedyTokensMatchCpu) {
  auto cpu = Engine::Create(TinyConfig(config::CPU));
  auto gpu = Engine::Create(TinyConfig(config::CUDA));
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  EXPECT_EQ((*gpu)->model_info().backend, "cuda");
  std::vector<int32_t> long_prompt;
  for (int i = 0; i < 37; ++i) long_prompt.push_back((i * 37 + 11) % 128);
  for (const std::vector<int32_t>& prompt : {std::vector<int32_t>{5, 6, 7, 8, 9}, long_prompt}) {
    auto a = (*cpu)->Generate(Request(prompt, 16));
    auto b = (*gpu)->Generate(Request(prompt, 16));
    ASSERT_TRUE(a.ok()) << a.status();
    ASSERT_TRUE(b.ok()) << b.status();
    std::printf("  prompt of %zu: cpu %s\n  %*s gpu %s\n", prompt.size(), Join(Ids(*a)).c_str(), 13, "",
                Join(Ids(*b)).c_str());
    EXPECT_EQ(Ids(*a), Ids(*b));
    EXPECT_EQ(b->token_ids_size(), 16);
  }
  EXPECT_EQ((*gpu)->kv_pages().first, 0);
}

// Every built-in policy, chosen per request, generates on the GPU the tokens
// it generates on the CPU. Budgets are small against the 37-token prompt
// (pages of 4) so that selection and eviction are active from the first
// decode step.
TEST(CudaEngineTest, EveryPolicyMatchesCpu) {
  auto cpu = Engine::Create(TinyConfig(config::CPU));
  auto gpu = Engine::Create(TinyConfig(config::CUDA));
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  std::vector<config::CacheConfig> policies(5);
  policies[0].set_policy("dense");
  policies[1].set_policy("quest");
  policies[1].mutable_quest()->set_token_budget(12);
  policies[1].mutable_quest()->set_dense_layers(0);
  policies[2].set_policy("streaming_llm");
  policies[2].mutable_streaming_llm()->set_window_tokens(8);
  policies[3].set_policy("h2o");
  policies[3].mutable_h2o()->set_token_budget(16);
  policies[4].set_policy("tova");
  policies[4].mutable_tova()->set_token_budget(16);
  std::vector<int32_t> prompt;
  for (int i = 0; i < 37; ++i) prompt.push_back((i * 37 + 11) % 128);
  for (const config::CacheConfig& policy : policies) {
    api::GenerateRequest r = Request(prompt, 16);
    *r.mutable_cache() = policy;
    auto a = (*cpu)->Generate(r);
    auto b = (*gpu)->Generate(r);
    ASSERT_TRUE(a.ok()) << policy.policy() << ": " << a.status();
    ASSERT_TRUE(b.ok()) << policy.policy() << ": " << b.status();
    std::printf("  %-13s cpu %s\n  %13s gpu %s\n", policy.policy().c_str(), Join(Ids(*a)).c_str(), "",
                Join(Ids(*b)).c_str());
    EXPECT_EQ(Ids(*a), Ids(*b)) << policy.policy();
    EXPECT_EQ((*gpu)->kv_pages().first, 0) << policy.policy() << " returned its pages";
  }
}

}  // namespace
}  // namespace quest
