// Our fp32 CPU forward pass against Hugging Face transformers on the very same
// weights (fixtures written by tools/reference/hf_reference.py: MHA, GQA,
// tied embeddings, every RoPE scaling type, Qwen2 q/k/v biases, bf16
// storage). Two paths are checked: one-shot prefill of the whole sequence,
// and chunked prefill followed by token-by-token decode through the paged KV
// cache, which is the path generation takes.

#include <cmath>
#include <cstdlib>
#include <string>

#include "cache/kv_cache.h"
#include "gtest/gtest.h"
#include "models/checkpoint.h"
#include "models/llama/llama_model.h"
#include "models/safetensors.h"
#include "ops/cpu/cpu_backend.h"

namespace quest {
namespace {

constexpr float kTolerance = 1e-4f;

std::string FixtureDir(const std::string& variant) {
  return std::string(std::getenv("TEST_SRCDIR")) + "/quest_runtime/tests/fixtures/hf_tiny/" + variant;
}

struct Reference {
  std::vector<int32_t> ids;
  Tensor logits;  // [seq, vocab]
};

Reference LoadReference(const std::string& dir) {
  auto tensors = models::ReadSafetensors(dir + "/reference.safetensors");
  EXPECT_TRUE(tensors.ok()) << tensors.status();
  Reference r;
  const Tensor ids = tensors->at("input_ids").ToFloat32();
  for (int64_t i = 0; i < ids.numel(); ++i) r.ids.push_back(static_cast<int32_t>(ids.data<float>()[i]));
  r.logits = tensors->at("logits").ToFloat32();
  return r;
}

float MaxAbsDiff(const float* a, const float* b, int64_t n) {
  float m = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (std::isnan(a[i]) || std::isnan(b[i])) return INFINITY;
    m = std::max(m, std::fabs(a[i] - b[i]));
  }
  return m;
}

class HfParityTest : public ::testing::TestWithParam<std::string> {};

TEST_P(HfParityTest, LogitsMatchTransformers) {
  const std::string dir = FixtureDir(GetParam());
  absl::StatusOr<models::Checkpoint> ckpt = models::LoadHfCheckpoint(dir);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  const Reference ref = LoadReference(dir);
  const int64_t seq = static_cast<int64_t>(ref.ids.size()), vocab = ckpt->config.vocab_size;
  ASSERT_EQ(ref.logits.dim(0), seq);

  auto backend = ops::CreateCpuBackend();
  auto model = models::LlamaModel::Create(*ckpt, *backend);
  ASSERT_TRUE(model.ok()) << model.status();
  cache::PagedKVCacheOptions options;
  options.geometry = (*model)->CacheGeometryFor(4);  // small pages: many page boundaries
  options.num_pages = 32;
  auto cache = cache::CreatePagedKVCache(options, *backend);
  ASSERT_TRUE(cache.ok()) << cache.status();

  // Path 1: the whole sequence in one forward step.
  ASSERT_TRUE((*cache)->AddSequence(1, nullptr).ok());
  models::SequenceStep all{1, ref.ids};
  auto logits = (*model)->Forward({&all, 1}, **cache, models::LogitsMode::kAllTokens);
  ASSERT_TRUE(logits.ok()) << logits.status();
  const float one_shot = MaxAbsDiff(logits->data<float>(), ref.logits.data<float>(), seq * vocab);
  EXPECT_LE(one_shot, kTolerance) << GetParam() << " one-shot prefill";

  // Path 2: prefill 10 tokens (in chunks of 7 and 3), then decode one token
  // at a time. Dynamic NTK is skipped here: transformers itself rotates each
  // step with the frequencies of the length so far, so its one-shot logits
  // are not what incremental decoding computes.
  if (GetParam() == "dynamic") return;
  ASSERT_TRUE((*cache)->AddSequence(2, nullptr).ok());
  float decode = 0;
  int64_t pos = 0;
  for (int64_t n : {7, 3}) {
    models::SequenceStep step{2, absl::MakeConstSpan(ref.ids).subspan(pos, n)};
    auto l = (*model)->Forward({&step, 1}, **cache, models::LogitsMode::kAllTokens);
    ASSERT_TRUE(l.ok()) << l.status();
    decode = std::max(decode, MaxAbsDiff(l->data<float>(), ref.logits.data<float>() + pos * vocab, n * vocab));
    pos += n;
  }
  for (; pos < seq; ++pos) {
    models::SequenceStep step{2, absl::MakeConstSpan(ref.ids).subspan(pos, 1)};
    auto l = (*model)->Forward({&step, 1}, **cache);
    ASSERT_TRUE(l.ok()) << l.status();
    decode = std::max(decode, MaxAbsDiff(l->data<float>(), ref.logits.data<float>() + pos * vocab, vocab));
  }
  EXPECT_LE(decode, kTolerance) << GetParam() << " chunked prefill + decode";
  std::printf("%-8s max |logit diff| one-shot %.2e, incremental %.2e\n", GetParam().c_str(), one_shot, decode);
}

INSTANTIATE_TEST_SUITE_P(Variants, HfParityTest,
                         ::testing::Values("mha", "gqa", "tied", "linear", "dynamic", "yarn", "llama3",
                                           "qwen2", "bf16"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace quest
