// The eviction policies (streaming_llm, h2o, tova) through a real paged KV
// cache on the CPU backend, against a direct re-implementation of each
// policy's definition; TokenMasks; the cache's page accounting under
// eviction; and an engine-level smoke test on the tiny checkpoint.

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <random>
#include <set>

#include "cache/eviction.h"
#include "cache/kv_cache.h"
#include "glog/logging.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "models/checkpoint.h"
#include "models/llama/llama_model.h"
#include "ops/cpu/cpu_backend.h"
#include "runtime/engine.h"
#include "runtime/testing/random_tensor.h"
#include "tests/tiny_model.h"

namespace quest::cache {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

// --- TokenMasks -------------------------------------------------------------

TEST(TokenMasksTest, GrowKeepsEvictionsAndReleasesEachFullPageOnce) {
  TokenMasks m(/*num_masks=*/2, /*num_kv_heads=*/2, /*page_size=*/2);
  m.Grow(4);
  m.Evict(0, 1, 3);
  m.Grow(8);  // re-strided: head 1's row moves
  EXPECT_EQ(m.capacity(), 8);
  const uint8_t* d = m.data(0);
  EXPECT_EQ(std::vector<uint8_t>(d, d + 16),
            std::vector<uint8_t>({1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1}));
  EXPECT_EQ(m.kept_count(0, 1), 7);
  EXPECT_EQ(m.kept_count(1, 1), 8);
  std::vector<int32_t> released;
  // Page 1 = {2, 3}: every (mask, head) must evict both.
  for (int mask = 0; mask < 2; ++mask) {
    for (int head = 0; head < 2; ++head) {
      for (int pos : {2, 3}) {
        m.TakeReleasedPages(released);
        EXPECT_THAT(released, IsEmpty()) << mask << head << pos;
        m.Evict(mask, head, pos);
      }
    }
  }
  m.TakeReleasedPages(released);
  EXPECT_THAT(released, ElementsAre(1));
  m.Evict(1, 1, 3);  // again: nothing
  m.EvictAllHeads(0, 2);
  released.clear();
  m.TakeReleasedPages(released);
  EXPECT_THAT(released, IsEmpty());
  EXPECT_EQ(m.kept_count(0, 0), 6);
  EXPECT_FALSE(m.kept(1, 0, 2));
  EXPECT_TRUE(m.kept(1, 0, 4));
}

// --- Reference policies over a real cache -----------------------------------

struct PolicyCase {
  std::string label;
  config::CacheConfig config;
  int num_kv_heads = 2;
};

void PrintTo(const PolicyCase& c, std::ostream* os) { *os << c.label; }

config::CacheConfig StreamingLlm(int sink, int window) {
  config::CacheConfig c;
  c.set_policy("streaming_llm");
  c.mutable_streaming_llm()->set_sink_tokens(sink);
  c.mutable_streaming_llm()->set_window_tokens(window);
  return c;
}

config::CacheConfig H2o(int budget, int recent) {
  config::CacheConfig c;
  c.set_policy("h2o");
  c.mutable_h2o()->set_token_budget(budget);
  if (recent >= 0) c.mutable_h2o()->set_recent_tokens(recent);
  return c;
}

config::CacheConfig Tova(int budget) {
  config::CacheConfig c;
  c.set_policy("tova");
  c.mutable_tova()->set_token_budget(budget);
  return c;
}

constexpr int kLayers = 2, kHeads = 4, kHeadDim = 8, kPageSize = 4;

// One sequence as the policy definitions say it should evolve, with K/V
// kept on the host and attention computed directly over the kept tokens.
class ReferenceSequence {
 public:
  ReferenceSequence(const config::CacheConfig& config, int kv_heads)
      : config_(config), kv_heads_(kv_heads), k_(kLayers), v_(kLayers),
        kept_(kLayers, std::vector<std::vector<bool>>(kv_heads)),
        score_(kLayers, std::vector<std::vector<double>>(kv_heads)),
        sum_(kLayers), last_(kLayers) {}

  int64_t length() const { return length_; }

  void Append(int layer, const Tensor& k, const Tensor& v) {
    k_[layer].insert(k_[layer].end(), k.data<float>(), k.data<float>() + k.numel());
    v_[layer].insert(v_[layer].end(), v.data<float>(), v.data<float>() + v.numel());
    for (auto& head : kept_[layer]) head.resize(length_ + k.dim(0), true);
    for (auto& head : score_[layer]) head.resize(length_ + k.dim(0), 0.0);
  }

  // out [n, kHeads * kHeadDim] for queries q [n, kHeads, kHeadDim] at
  // positions [length, length + n); records the softmax weights.
  std::vector<float> Attend(int layer, const Tensor& q) {
    const int64_t n = q.dim(0), kv_len = length_ + n, group = kHeads / kv_heads_;
    sum_[layer].assign(kHeads * kv_len, 0.0);
    last_[layer].assign(kHeads * kv_len, 0.0);
    std::vector<float> out(n * kHeads * kHeadDim, 0.0f);
    for (int64_t t = 0; t < n; ++t) {
      for (int h = 0; h < kHeads; ++h) {
        const int g = h / group;
        const float* qv = q.data<float>() + (t * kHeads + h) * kHeadDim;
        std::vector<int64_t> visible;
        for (int64_t p = 0; p <= length_ + t; ++p) {
          if (kept_[layer][g][p]) visible.push_back(p);
        }
        std::vector<double> w;
        double max = -INFINITY;
        for (int64_t p : visible) {
          double s = 0;
          for (int i = 0; i < kHeadDim; ++i) s += qv[i] * Key(layer, p, g)[i];
          w.push_back(s / std::sqrt(static_cast<double>(kHeadDim)));
          max = std::max(max, w.back());
        }
        double denom = 0;
        for (double& x : w) denom += (x = std::exp(x - max));
        for (size_t i = 0; i < visible.size(); ++i) {
          const double p = w[i] / denom;
          sum_[layer][h * kv_len + visible[i]] += p;
          if (t == n - 1) last_[layer][h * kv_len + visible[i]] = p;
          const float* vv = Value(layer, visible[i], g);
          for (int j = 0; j < kHeadDim; ++j) out[(t * kHeads + h) * kHeadDim + j] += p * vv[j];
        }
      }
    }
    return out;
  }

  // After every layer attended the step's n tokens.
  void Commit(int64_t n) {
    length_ += n;
    const std::string& policy = config_.policy();
    for (int layer = 0; layer < kLayers; ++layer) {
      if (policy == "streaming_llm") {
        const int64_t sink = config_.streaming_llm().sink_tokens();
        const int64_t window = config_.streaming_llm().window_tokens();
        for (auto& head : kept_[layer]) {
          for (int64_t p = 0; p < length_; ++p) head[p] = p < sink || p >= length_ - window;
        }
      } else if (policy == "h2o") {
        const int64_t budget = config_.h2o().token_budget();
        const int64_t recent =
            config_.h2o().has_recent_tokens() ? config_.h2o().recent_tokens() : budget / 2;
        const int group = kHeads / kv_heads_;
        for (int g = 0; g < kv_heads_; ++g) {
          std::vector<bool>& kept = kept_[layer][g];
          std::vector<double>& score = score_[layer][g];
          for (int64_t p = 0; p < length_; ++p) {
            for (int h = g * group; h < (g + 1) * group; ++h) score[p] += sum_[layer][h * length_ + p];
          }
          std::vector<std::pair<double, int64_t>> old;  // kept, outside the recent window
          for (int64_t p = 0; p < length_ - recent; ++p) {
            if (kept[p]) old.emplace_back(score[p], p);
          }
          std::sort(old.begin(), old.end());
          const int64_t kept_count = std::count(kept.begin(), kept.end(), true);
          for (int64_t i = 0; i < kept_count - budget; ++i) kept[old[i].second] = false;
        }
      } else if (policy == "tova") {
        const int64_t budget = config_.tova().token_budget();
        std::vector<std::pair<double, int64_t>> tokens;
        for (int64_t p = 0; p < length_; ++p) {
          if (!kept_[layer][0][p]) continue;
          double mean = 0;
          for (int h = 0; h < kHeads; ++h) mean += last_[layer][h * length_ + p] / kHeads;
          tokens.emplace_back(mean, p);
        }
        std::sort(tokens.begin(), tokens.end());
        for (int64_t i = 0; i < static_cast<int64_t>(tokens.size()) - budget; ++i) {
          for (auto& head : kept_[layer]) head[tokens[i].second] = false;
        }
      }
    }
  }

  // Pages a sequence of this length holds: those with a kept token in some
  // layer and head, or not wholly written.
  int PagesHeld() const {
    const int64_t pages = (length_ + kPageSize - 1) / kPageSize;
    int held = 0;
    for (int64_t page = 0; page < pages; ++page) {
      bool any = (page + 1) * kPageSize > length_;
      for (int layer = 0; layer < kLayers && !any; ++layer) {
        for (const auto& head : kept_[layer]) {
          for (int64_t p = page * kPageSize; p < (page + 1) * kPageSize && !any; ++p) any = head[p];
        }
      }
      held += any;
    }
    return held;
  }

  std::set<int64_t> Kept(int layer, int head) const {
    std::set<int64_t> s;
    for (int64_t p = 0; p < length_; ++p) {
      if (kept_[layer][head][p]) s.insert(p);
    }
    return s;
  }

 private:
  const float* Key(int layer, int64_t pos, int g) const { return &k_[layer][(pos * kv_heads_ + g) * kHeadDim]; }
  const float* Value(int layer, int64_t pos, int g) const { return &v_[layer][(pos * kv_heads_ + g) * kHeadDim]; }

  const config::CacheConfig config_;
  const int kv_heads_;
  int64_t length_ = 0;
  std::vector<std::vector<float>> k_, v_;                 // [layer][pos, kv_head, dim]
  std::vector<std::vector<std::vector<bool>>> kept_;      // [layer][kv_head][pos]
  std::vector<std::vector<std::vector<double>>> score_;   // H2O, [layer][kv_head][pos]
  std::vector<std::vector<double>> sum_, last_;           // this step's weights, [layer][head * kv_len + pos]
};

PagedKVCacheOptions Options(int kv_heads, int num_pages) {
  PagedKVCacheOptions o;
  o.geometry = CacheGeometry{kLayers, kHeads, kv_heads, kHeadDim, kPageSize};
  o.num_pages = num_pages;
  return o;
}

class EvictionCacheTest : public ::testing::TestWithParam<PolicyCase> {};

// Several sequences of the policy plus a dense one advance together, as the
// model drives them (Reserve all, per layer Append + Attend each, Commit
// all), with prefill chunks and decode steps of 1-3 tokens. Every output
// must equal attention over exactly the tokens the definition keeps, and
// the pool must hold exactly the pages with a kept token.
TEST_P(EvictionCacheTest, OutputIsAttentionOverExactlyTheKeptTokens) {
  const PolicyCase& pc = GetParam();
  auto backend = ops::CreateCpuBackend();
  auto cache = CreatePagedKVCache(Options(pc.num_kv_heads, 64), *backend);
  ASSERT_TRUE(cache.ok()) << cache.status();
  KVCache& c = **cache;
  std::mt19937 rng(17);

  // Per sequence: its steps' sizes.
  const config::CacheConfig dense;
  std::vector<std::vector<int64_t>> steps = {
      {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1},
      {7, 1, 1, 3, 1, 1, 1, 1, 2, 1, 1, 1, 1, 1, 1, 1, 1},
      {5, 5, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 1, 1, 1, 1, 1},
      {6, 1, 1, 1, 1, 1, 1, 1, 1, 1},  // dense
  };
  std::vector<ReferenceSequence> ref;
  for (size_t s = 0; s < steps.size(); ++s) {
    const bool is_dense = s + 1 == steps.size();
    ASSERT_TRUE(c.AddSequence(static_cast<SequenceId>(s), is_dense ? &dense : &pc.config).ok());
    ref.emplace_back(is_dense ? dense : pc.config, pc.num_kv_heads);
  }
  size_t max_steps = 0;
  for (const auto& st : steps) max_steps = std::max(max_steps, st.size());
  bool evicted_something = false;
  for (size_t step = 0; step < max_steps; ++step) {
    std::vector<size_t> active;
    for (size_t s = 0; s < steps.size(); ++s) {
      if (step < steps[s].size()) active.push_back(s);
    }
    for (size_t s : active) ASSERT_TRUE(c.Reserve(static_cast<SequenceId>(s), steps[s][step]).ok());
    for (int layer = 0; layer < kLayers; ++layer) {
      for (size_t s : active) {
        const int64_t n = steps[s][step];
        Tensor k = RandomTensor({n, pc.num_kv_heads, kHeadDim}, rng);
        Tensor v = RandomTensor({n, pc.num_kv_heads, kHeadDim}, rng);
        // Peaky attention.
        Tensor q = RandomTensor({n, kHeads, kHeadDim}, rng, /*mean=*/0.0f, /*stddev=*/2.0f);
        c.Append(layer, static_cast<SequenceId>(s), k, v);
        ref[s].Append(layer, k, v);
        Tensor out = Tensor::Empty(DType::kFloat32, {n, kHeads * kHeadDim});
        c.Attend(layer, static_cast<SequenceId>(s), q, out);
        const std::vector<float> expected = ref[s].Attend(layer, q);
        for (int64_t i = 0; i < out.numel(); ++i) {
          ASSERT_NEAR(out.data<float>()[i], expected[i], 1e-4)
              << pc.label << " sequence " << s << " step " << step << " layer " << layer << " index " << i;
        }
      }
    }
    int expected_pages = 0;
    for (size_t s : active) {
      c.Commit(static_cast<SequenceId>(s), steps[s][step]);
      ref[s].Commit(steps[s][step]);
    }
    for (size_t s = 0; s < steps.size(); ++s) {
      expected_pages += ref[s].PagesHeld();
      if (ref[s].Kept(0, 0).size() < static_cast<size_t>(ref[s].length())) evicted_something = true;
    }
    ASSERT_EQ(c.stats().pages_in_use, expected_pages) << pc.label << " after step " << step;
  }
  EXPECT_TRUE(evicted_something) << "the case must exercise eviction";
  for (size_t s = 0; s < steps.size(); ++s) c.RemoveSequence(static_cast<SequenceId>(s));
  EXPECT_EQ(c.stats().pages_in_use, 0);
  EXPECT_EQ(c.stats().sequences, 0);
}

INSTANTIATE_TEST_SUITE_P(
    Policies, EvictionCacheTest,
    ::testing::Values(PolicyCase{"streaming_llm_gqa", StreamingLlm(2, 6), 2},
                      PolicyCase{"streaming_llm_mha", StreamingLlm(4, 5), 4},
                      PolicyCase{"streaming_llm_no_sink_mqa", StreamingLlm(0, 3), 1},
                      PolicyCase{"h2o_gqa", H2o(8, 3), 2},
                      PolicyCase{"h2o_mha", H2o(6, -1), 4},
                      PolicyCase{"h2o_no_recent_mqa", H2o(5, 0), 1},
                      PolicyCase{"tova_gqa", Tova(7), 2},
                      PolicyCase{"tova_mha", Tova(4), 4},
                      PolicyCase{"tova_mqa", Tova(1), 1}),
    [](const ::testing::TestParamInfo<PolicyCase>& info) { return info.param.label; });

TEST(EvictionCacheTest, StreamingLlmGivesPagesBackAsTheWindowSlides) {
  auto backend = ops::CreateCpuBackend();
  // 4 pages of 4 tokens: without eviction, 16 tokens at most.
  auto cache = CreatePagedKVCache(Options(2, 4), *backend);
  ASSERT_TRUE(cache.ok());
  KVCache& c = **cache;
  const config::CacheConfig config = StreamingLlm(/*sink=*/4, /*window=*/8);
  ASSERT_TRUE(c.AddSequence(1, &config).ok());
  std::mt19937 rng(5);
  std::vector<int> in_use;
  for (int step = 0; step < 40; ++step) {
    ASSERT_TRUE(c.Reserve(1, 1).ok()) << "step " << step;
    for (int layer = 0; layer < kLayers; ++layer) {
      c.Append(layer, 1, RandomTensor({1, 2, kHeadDim}, rng),
               RandomTensor({1, 2, kHeadDim}, rng));
      Tensor out = Tensor::Empty(DType::kFloat32, {1, kHeads * kHeadDim});
      c.Attend(layer, 1, RandomTensor({1, kHeads, kHeadDim}, rng), out);
    }
    c.Commit(1, 1);
    in_use.push_back(c.stats().pages_in_use);
  }
  // Length L holds page 0 (sinks) and the pages of [L - 8, L).
  EXPECT_EQ(in_use[11], 3);  // L = 12: pages 0, 1, 2
  EXPECT_EQ(in_use[12], 4);  // L = 13: position 4 evicted, page 1 still holds 5..7
  EXPECT_EQ(in_use[15], 3);  // L = 16: page 1 released
  EXPECT_EQ(in_use[39], 3);  // L = 40: pages 0, 8, 9
  EXPECT_EQ(*std::max_element(in_use.begin(), in_use.end()), 4);
  EXPECT_EQ(c.Length(1), 40);
  c.RemoveSequence(1);
  EXPECT_EQ(c.stats().pages_in_use, 0);
}

TEST(EvictionCacheTest, InvalidOptionsNameTheField) {
  auto backend = ops::CreateCpuBackend();
  PagedKVCacheOptions o = Options(2, 8);
  o.default_policy = H2o(0, -1);
  EXPECT_THAT(CreatePagedKVCache(o, *backend).status().message(),
              HasSubstr("cache.h2o.token_budget must be > 0"));
  auto cache = CreatePagedKVCache(Options(2, 8), *backend);
  ASSERT_TRUE(cache.ok());
  const config::CacheConfig no_window = StreamingLlm(4, 0), recent_over = H2o(4, 6), no_budget = Tova(0);
  EXPECT_THAT((*cache)->AddSequence(1, &no_window).message(),
              HasSubstr("cache.streaming_llm.window_tokens must be > 0"));
  EXPECT_THAT((*cache)->AddSequence(2, &recent_over).message(), HasSubstr("cache.h2o.recent_tokens"));
  EXPECT_THAT((*cache)->AddSequence(3, &no_budget).message(), HasSubstr("cache.tova.token_budget must be > 0"));
  config::CacheConfig mixed = Tova(4);
  mixed.mutable_streaming_llm()->set_window_tokens(3);  // replaces the oneof's tova
  mixed.set_policy("tova");
  EXPECT_THAT((*cache)->AddSequence(4, &mixed).message(), HasSubstr("cache.streaming_llm is set"));
  EXPECT_EQ((*cache)->stats().sequences, 0);
}

// A policy that breaks the AfterStep contract, to check the cache's guards.
class BadReleasePolicy final : public CachePolicy {
 public:
  explicit BadReleasePolicy(bool unwritten) : unwritten_(unwritten) {}
  void SelectPages(const SequenceLayerView&, const Tensor&, PageSelection&) override {}
  void AfterStep(int64_t length, std::vector<int32_t>& released) override {
    if (unwritten_) {
      released.push_back(static_cast<int32_t>((length - 1) / kPageSize));  // the page being filled
    } else if (length >= kPageSize) {
      released.push_back(0);  // every step: the second time is a double release
    }
  }

 private:
  const bool unwritten_;
};

class BadReleaseFactory final : public CachePolicyFactory {
 public:
  explicit BadReleaseFactory(bool unwritten) : unwritten_(unwritten) {}
  absl::string_view name() const override {
    return unwritten_ ? "test_release_unwritten" : "test_release_twice";
  }
  absl::Status Validate(const config::CacheConfig&, const CacheGeometry&) const override {
    return absl::OkStatus();
  }
  std::unique_ptr<CachePolicy> Create(const config::CacheConfig&, const CacheGeometry&) const override {
    return std::make_unique<BadReleasePolicy>(unwritten_);
  }

 private:
  const bool unwritten_;
};

TEST(EvictionCacheDeathTest, ReleasingAPageTwiceOrUnwrittenIsCaught) {
  static const bool registered = [] {
    CHECK(CachePolicyRegistry::Global().Register(std::make_unique<BadReleaseFactory>(false)).ok());
    CHECK(CachePolicyRegistry::Global().Register(std::make_unique<BadReleaseFactory>(true)).ok());
    return true;
  }();
  (void)registered;
  auto run = [](const char* policy, int steps, int tokens_per_step) {
    auto backend = ops::CreateCpuBackend();
    auto cache = CreatePagedKVCache(Options(2, 8), *backend);
    CHECK(cache.ok());
    config::CacheConfig config;
    config.set_policy(policy);
    CHECK((*cache)->AddSequence(1, &config).ok());
    for (int i = 0; i < steps; ++i) {
      CHECK((*cache)->Reserve(1, tokens_per_step).ok());
      (*cache)->Commit(1, tokens_per_step);
    }
  };
  run("test_release_twice", 1, kPageSize);  // one release is fine
  EXPECT_DEATH(run("test_release_twice", 2, kPageSize), "twice");
  EXPECT_DEATH(run("test_release_unwritten", 1, 2), "not yet written");
}

// --- The tiny checkpoint: model, then engine ---------------------------------

std::string TinyModel() { return fixtures::TinyCheckpointPath(); }

const std::vector<int32_t> kPrompt = {5, 6, 7, 8, 9};

// Greedy generation of `steps` tokens for several sequences at once through
// LlamaModel::Forward (EOS ignored, so every run is `steps` tokens long).
// Sequence i uses policies[i]. Returns each sequence's tokens.
std::vector<std::vector<int32_t>> GenerateBatch(const std::vector<config::CacheConfig>& policies, int steps,
                                                int num_pages, int* max_pages = nullptr) {
  auto ckpt = models::LoadHfCheckpoint(TinyModel());
  CHECK(ckpt.ok()) << ckpt.status();
  auto backend = ops::CreateCpuBackend();
  auto model = models::LlamaModel::Create(*ckpt, *backend);
  CHECK(model.ok()) << model.status();
  PagedKVCacheOptions options;
  options.geometry = (*model)->CacheGeometryFor(4);
  options.num_pages = num_pages;
  auto cache = CreatePagedKVCache(options, *backend);
  CHECK(cache.ok()) << cache.status();
  const size_t n = policies.size();
  std::vector<std::vector<int32_t>> tokens(n);
  for (size_t s = 0; s < n; ++s) {
    CHECK((*cache)->AddSequence(static_cast<SequenceId>(s), &policies[s]).ok());
  }
  for (int step = 0; step <= steps; ++step) {
    std::vector<models::SequenceStep> batch;
    for (size_t s = 0; s < n; ++s) {
      batch.push_back({static_cast<SequenceId>(s),
                       step == 0 ? absl::MakeConstSpan(kPrompt) : absl::MakeConstSpan(&tokens[s].back(), 1)});
    }
    if (step == steps) break;
    auto logits = (*model)->Forward(batch, **cache);
    EXPECT_TRUE(logits.ok()) << logits.status();
    if (!logits.ok()) break;
    const int64_t vocab = logits->dim(1);
    for (size_t s = 0; s < n; ++s) {
      const float* row = logits->data<float>() + s * vocab;
      tokens[s].push_back(static_cast<int32_t>(std::max_element(row, row + vocab) - row));
    }
    if (max_pages != nullptr) *max_pages = std::max(*max_pages, (*cache)->stats().pages_in_use);
  }
  for (size_t s = 0; s < n; ++s) (*cache)->RemoveSequence(static_cast<SequenceId>(s));
  EXPECT_EQ((*cache)->stats().pages_in_use, 0);
  return tokens;
}

TEST(EvictionModelTest, EachPolicyGenerates40TokensBatchedAsAlone) {
  const std::vector<config::CacheConfig> policies = {config::CacheConfig(), StreamingLlm(2, 6), H2o(8, -1),
                                                     Tova(6)};
  const auto together = GenerateBatch(policies, 40, 64);
  for (size_t s = 0; s < policies.size(); ++s) {
    EXPECT_EQ(together[s].size(), 40u);
    EXPECT_EQ(GenerateBatch({policies[s]}, 40, 64)[0], together[s]) << "policy " << policies[s].policy();
  }
  // With 45 tokens against budgets of 6-8, eviction changes what is attended.
  EXPECT_NE(together[1], together[0]);
}

TEST(EvictionModelTest, StreamingLlmRunsInAPoolTooSmallForTheSequence) {
  // 44 tokens (the last generated one is never fed back) need 11 pages of 4;
  // sinks 4 + window 8 hold at most 4 at once.
  int max_pages = 0;
  EXPECT_EQ(GenerateBatch({StreamingLlm(4, 8)}, 40, /*num_pages=*/4, &max_pages)[0].size(), 40u);
  EXPECT_EQ(max_pages, 4);
}

config::EngineConfig TinyEngine(const config::CacheConfig& cache, int num_pages) {
  config::EngineConfig c;
  c.mutable_model()->set_path(TinyModel());
  *c.mutable_cache() = cache;
  c.mutable_cache()->set_page_size(4);
  c.mutable_cache()->set_num_pages(num_pages);
  return c;
}

api::GenerateRequest Request(int max_tokens) {
  api::GenerateRequest r;
  for (int32_t id : kPrompt) r.mutable_token_ids()->add_ids(id);
  r.mutable_sampling()->set_max_tokens(max_tokens);
  return r;
}

// The engine stops at EOS, so a run is up to max_tokens long.
std::vector<int32_t> Generate(Engine& e, const api::GenerateRequest& r) {
  auto resp = e.Generate(r);
  EXPECT_TRUE(resp.ok()) << resp.status();
  if (!resp.ok()) return {};
  EXPECT_TRUE(resp->finish_reason() == api::LENGTH || resp->finish_reason() == api::END_OF_SEQUENCE);
  return {resp->token_ids().begin(), resp->token_ids().end()};
}

TEST(EvictionEngineTest, EachPolicyAsDefaultOrPerRequestReturnsEveryPage) {
  for (const config::CacheConfig& policy : {StreamingLlm(2, 6), H2o(8, -1), Tova(6)}) {
    auto engine = Engine::Create(TinyEngine(policy, /*num_pages=*/64));
    ASSERT_TRUE(engine.ok()) << policy.policy() << ": " << engine.status();
    const std::vector<int32_t> a = Generate(**engine, Request(40));
    EXPECT_FALSE(a.empty()) << policy.policy();
    EXPECT_EQ((*engine)->kv_pages().first, 0) << policy.policy();
    EXPECT_EQ(Generate(**engine, Request(40)), a) << policy.policy() << " is deterministic";
    // The model-level run of the same policy ignores EOS; up to it, the same.
    const std::vector<int32_t> model_level = GenerateBatch({policy}, 40, 64)[0];
    EXPECT_EQ(std::vector<int32_t>(model_level.begin(), model_level.begin() + a.size()), a) << policy.policy();

    // The same policy per request on a dense engine.
    auto dense = Engine::Create(TinyEngine(config::CacheConfig(), 64));
    ASSERT_TRUE(dense.ok());
    api::GenerateRequest r = Request(40);
    *r.mutable_cache() = policy;
    EXPECT_EQ(Generate(**dense, r), a) << policy.policy();
    EXPECT_EQ((*dense)->kv_pages().first, 0);
  }
  // Bad options of a request name the field; nothing leaks.
  auto engine = Engine::Create(TinyEngine(config::CacheConfig(), 64));
  ASSERT_TRUE(engine.ok());
  api::GenerateRequest r = Request(4);
  *r.mutable_cache() = H2o(4, 5);
  EXPECT_THAT((*engine)->Generate(r).status().message(), HasSubstr("cache.h2o.recent_tokens"));
  EXPECT_EQ((*engine)->kv_pages().first, 0);
}

TEST(EvictionEngineTest, UnboundedBudgetsMatchDense) {
  auto dense = Engine::Create(TinyEngine(config::CacheConfig(), 64));
  auto streaming = Engine::Create(TinyEngine(StreamingLlm(4, 64), 64));
  auto h2o = Engine::Create(TinyEngine(H2o(64, -1), 64));
  auto tova = Engine::Create(TinyEngine(Tova(64), 64));
  ASSERT_TRUE(dense.ok() && streaming.ok() && h2o.ok() && tova.ok());
  const std::vector<int32_t> expected = Generate(**dense, Request(40));
  EXPECT_EQ(Generate(**streaming, Request(40)), expected);
  EXPECT_EQ(Generate(**h2o, Request(40)), expected);
  EXPECT_EQ(Generate(**tova, Request(40)), expected);
}

}  // namespace
}  // namespace quest::cache
