// The embedded default model (SmolLM2-135M-Instruct) on the CUDA backend
// (bf16 storage, fp32 accumulation) against the CPU backend (fp32) and the
// transformers reference: 32 greedy tokens of the fixture's chat prompt, with
// dense attention and with Quest. Needs a GPU (tags = ["gpu"]); the model
// comes from the runfiles (tools/gpu/gpu_ci.sh carries it to the GPU machine
// in parts, and the test skips when it did not arrive).

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
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

TEST_F(DefaultModelCudaTest, DenseGreedy32TokensMatchCpuAndTransformers) {
  const std::vector<int32_t> cpu = Greedy(*cpu_, prompt_, nullptr);
  const std::vector<int32_t> gpu = Greedy(*gpu_, prompt_, nullptr);
  std::printf("  transformers %s\n  cpu          %s\n  cuda (bf16)  %s\n", Join(reference_).c_str(),
              Join(cpu).c_str(), Join(gpu).c_str());
  std::printf("  cuda agrees with cpu on the first %zu of %zu tokens\n", CommonPrefix(cpu, gpu), cpu.size());
  EXPECT_EQ(gpu, cpu);
  EXPECT_EQ(gpu.size(), 32u);
  EXPECT_EQ(gpu_->kv_pages().first, 0);
}

// Quest with a budget of 32 tokens over a 42-token prompt: selection is
// active from the first decode step in every layer but the first two.
TEST_F(DefaultModelCudaTest, QuestGreedyTokensMatchCpu) {
  config::CacheConfig quest;
  quest.set_policy("quest");
  quest.mutable_quest()->set_token_budget(32);
  quest.mutable_quest()->set_page_size(8);
  const std::vector<int32_t> cpu = Greedy(*cpu_, prompt_, &quest);
  const std::vector<int32_t> gpu = Greedy(*gpu_, prompt_, &quest);
  std::printf("  quest cpu    %s\n  quest cuda   %s\n", Join(cpu).c_str(), Join(gpu).c_str());
  std::printf("  quest: cuda agrees with cpu on the first %zu of %zu tokens\n", CommonPrefix(cpu, gpu),
              cpu.size());
  EXPECT_EQ(gpu, cpu);
  EXPECT_EQ(gpu_->kv_pages().first, 0);
}

}  // namespace
}  // namespace quest
