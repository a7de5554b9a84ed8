#include "cache/kv_cache.h"

#include <random>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "ops/cpu/cpu_backend.h"
#include "runtime/testing/forwarding_backend.h"
#include "runtime/testing/random_tensor.h"

namespace quest::cache {
namespace {

using ::testing::Contains;
using ::testing::HasSubstr;

PagedKVCacheOptions Options(int num_pages) {
  PagedKVCacheOptions o;
  o.geometry = CacheGeometry{/*num_layers=*/2, /*num_heads=*/4, /*num_kv_heads=*/2, /*head_dim=*/8,
                             /*page_size=*/4};
  o.num_pages = num_pages;
  return o;
}

TEST(CachePolicyRegistryTest, BuiltinNamesResolveAndUnknownListsKnown) {
  const std::vector<std::string> names = CachePolicyRegistry::Global().Names();
  for (const char* name : {"dense", "quest", "streaming_llm", "h2o", "tova"}) {
    EXPECT_THAT(names, Contains(name));
  }
  for (const std::string& name : names) {
    auto factory = CachePolicyRegistry::Global().Find(name);
    ASSERT_TRUE(factory.ok()) << factory.status();
    EXPECT_EQ((*factory)->name(), name);
  }
  auto missing = CachePolicyRegistry::Global().Find("lru");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("\"lru\""));
  for (const std::string& name : names) EXPECT_THAT(missing.status().message(), HasSubstr(name));
}

TEST(KVCacheTest, UnknownPolicyAndBadPageSizeAreClearErrors) {
  auto backend = ops::CreateCpuBackend();
  PagedKVCacheOptions o = Options(8);
  o.default_policy.set_policy("nope");
  auto bad = CreatePagedKVCache(o, *backend);
  EXPECT_THAT(bad.status().message(), HasSubstr("unknown cache policy \"nope\""));

  o = Options(8);
  o.geometry.page_size = 6;
  EXPECT_THAT(CreatePagedKVCache(o, *backend).status().message(), HasSubstr("power of two"));

  auto cache = CreatePagedKVCache(Options(8), *backend);
  ASSERT_TRUE(cache.ok()) << cache.status();
  config::CacheConfig override_config;
  override_config.set_page_size(32);
  EXPECT_THAT((*cache)->AddSequence(1, &override_config).message(), HasSubstr("page_size 32"));
  EXPECT_TRUE((*cache)->AddSequence(1, nullptr).ok());
  EXPECT_EQ((*cache)->AddSequence(1, nullptr).code(), absl::StatusCode::kAlreadyExists);
}

TEST(KVCacheTest, PagesReturnToZeroAndExhaustionIsClean) {
  auto backend = ops::CreateCpuBackend();
  auto cache = CreatePagedKVCache(Options(4), *backend);
  ASSERT_TRUE(cache.ok());
  KVCache& c = **cache;
  ASSERT_TRUE(c.AddSequence(1, nullptr).ok());
  ASSERT_TRUE(c.AddSequence(2, nullptr).ok());
  ASSERT_TRUE(c.Reserve(1, 9).ok());  // 3 pages
  EXPECT_EQ(c.stats().pages_in_use, 3);
  absl::Status full = c.Reserve(2, 5);  // needs 2, 1 free
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(full.message(), HasSubstr("sequence 2"));
  EXPECT_EQ(c.stats().pages_in_use, 3);
  c.RemoveSequence(1);
  c.RemoveSequence(2);
  c.RemoveSequence(3);  // unknown: ignored
  EXPECT_EQ(c.stats().pages_in_use, 0);
  EXPECT_EQ(c.stats().sequences, 0);
}

// Prefill in two chunks then a decode step through the cache equals the
// backend's attention over the same tokens in one contiguous table.
TEST(KVCacheTest, ChunkedAppendAndAttendMatchesOneShot) {
  auto backend = ops::CreateCpuBackend();
  auto cache = CreatePagedKVCache(Options(16), *backend);
  ASSERT_TRUE(cache.ok());
  KVCache& c = **cache;
  std::mt19937 rng(3);
  const int len = 10;
  Tensor k = RandomTensor({len, 2, 8}, rng), v = RandomTensor({len, 2, 8}, rng);
  Tensor q = RandomTensor({1, 4, 8}, rng);
  ASSERT_TRUE(c.AddSequence(7, nullptr).ok());
  // Another sequence interleaved so page ids are not contiguous.
  ASSERT_TRUE(c.AddSequence(8, nullptr).ok());
  int start = 0;
  for (int chunk : {3, 6, 1}) {
    ASSERT_TRUE(c.Reserve(7, chunk).ok());
    ASSERT_TRUE(c.Reserve(8, 4).ok());
    c.Commit(8, 4);
    for (int layer = 0; layer < 2; ++layer) c.Append(layer, 7, k.Slice(start, start + chunk), v.Slice(start, start + chunk));
    if (start + chunk == len) {
      Tensor out = Tensor::Empty(DType::kFloat32, {1, 32});
      c.Attend(1, 7, q, out);
      // Reference: contiguous pages 0..2.
      Tensor kp = Tensor::Zeros(DType::kFloat32, {3, 4, 2, 8}), vp = Tensor::Zeros(DType::kFloat32, {3, 4, 2, 8});
      std::vector<int32_t> table = {0, 1, 2};
      backend->WriteKvPages(k, v, table, 0, 4, kp, vp);
      PagedAttentionArgs args;
      args.q = &q;
      args.k_pages = &kp;
      args.v_pages = &vp;
      args.page_table = table;
      args.kv_len = len;
      args.page_size = 4;
      args.scale = 1.0f / std::sqrt(8.0f);
      Tensor ref = Tensor::Empty(DType::kFloat32, {1, 32});
      backend->PagedAttention(args, ref);
      for (int i = 0; i < 32; ++i) EXPECT_FLOAT_EQ(out.data<float>()[i], ref.data<float>()[i]);
    }
    c.Commit(7, chunk);
    start += chunk;
  }
  EXPECT_EQ(c.Length(7), len);
}

// Counts the Quest select calls that reach the backend.
class SelectCountingBackend : public quest::testing::ForwardingBackend {
 public:
  using ForwardingBackend::ForwardingBackend;
  void SelectTopPages(const TopPagesArgs& args, Tensor& selected) override {
    ++singles;
    ForwardingBackend::SelectTopPages(args, selected);
  }
  void SelectTopPagesBatch(absl::Span<const TopPagesArgs> args, absl::Span<Tensor* const> selected) override {
    batch_sizes.push_back(static_cast<int>(args.size()));
    ForwardingBackend::SelectTopPagesBatch(args, selected);
  }
  int singles = 0;
  std::vector<int> batch_sizes;
};

// AttendBatch over sequences of every built-in policy (selections on the
// host, eviction masks, attention weights) equals Attend one sequence at a
// time: each request keeps its own selection until the batched backend
// call, and a policy that learns from attention still sees its own. The
// Quest sequences' selects reach the backend as one SelectTopPagesBatch per
// layer.
TEST(KVCacheTest, AttendBatchMatchesAttendPerSequence) {
  auto backend = ops::CreateCpuBackend();
  SelectCountingBackend counting(*backend);
  std::vector<config::CacheConfig> configs(6);
  configs[0].set_policy("dense");
  configs[1].set_policy("quest");
  configs[1].mutable_quest()->set_token_budget(8);
  configs[1].mutable_quest()->set_dense_layers(0);
  configs[2].set_policy("streaming_llm");
  configs[2].mutable_streaming_llm()->set_window_tokens(6);
  configs[3].set_policy("h2o");
  configs[3].mutable_h2o()->set_token_budget(10);
  configs[4].set_policy("tova");
  configs[4].mutable_tova()->set_token_budget(9);
  // A second Quest sequence: the batch's two deferred selects run as one
  // SelectTopPagesBatch.
  configs[5].set_policy("quest");
  configs[5].mutable_quest()->set_token_budget(8);
  configs[5].mutable_quest()->set_dense_layers(0);
  configs[5].mutable_quest()->set_gqa_combine(config::QuestOptions::MAX);
  auto batched = CreatePagedKVCache(Options(64), counting);
  auto single = CreatePagedKVCache(Options(64), *backend);
  ASSERT_TRUE(batched.ok() && single.ok());
  const int seqs = static_cast<int>(configs.size());
  for (KVCache* c : {batched->get(), single->get()}) {
    for (int s = 0; s < seqs; ++s) ASSERT_TRUE(c->AddSequence(s, &configs[s]).ok());
  }
  std::mt19937 rng(11);
  // A ragged prefill (3 + s tokens), then decode steps.
  for (int step = 0; step < 12; ++step) {
    std::vector<Tensor> qs, ks, vs, outs_batched, outs_single;
    for (int s = 0; s < seqs; ++s) {
      const int n = step == 0 ? 3 + s : 1;
      ks.push_back(RandomTensor({n, 2, 8}, rng));
      vs.push_back(RandomTensor({n, 2, 8}, rng));
      qs.push_back(RandomTensor({n, 4, 8}, rng));
      outs_batched.push_back(Tensor::Empty(DType::kFloat32, {n, 32}));
      outs_single.push_back(Tensor::Empty(DType::kFloat32, {n, 32}));
    }
    for (KVCache* c : {batched->get(), single->get()}) {
      for (int s = 0; s < seqs; ++s) ASSERT_TRUE(c->Reserve(s, ks[s].dim(0)).ok());
    }
    for (int layer = 0; layer < 2; ++layer) {
      std::vector<AttendRequest> requests;
      for (int s = 0; s < seqs; ++s) {
        (*batched)->Append(layer, s, ks[s], vs[s]);
        requests.push_back({s, &qs[s], &outs_batched[s]});
      }
      (*batched)->AttendBatch(layer, requests);
      for (int s = 0; s < seqs; ++s) {
        (*single)->Append(layer, s, ks[s], vs[s]);
        (*single)->Attend(layer, s, qs[s], outs_single[s]);
      }
      for (int s = 0; s < seqs; ++s) {
        for (int64_t i = 0; i < outs_single[s].numel(); ++i) {
          ASSERT_EQ(outs_batched[s].data<float>()[i], outs_single[s].data<float>()[i])
              << configs[s].policy() << " step " << step << " layer " << layer << " elem " << i;
        }
      }
    }
    for (KVCache* c : {batched->get(), single->get()}) {
      for (int s = 0; s < seqs; ++s) c->Commit(s, ks[s].dim(0));
    }
  }
  EXPECT_EQ((*batched)->stats().pages_in_use, (*single)->stats().pages_in_use);
  // Sequence 5 passes Quest's budget first, sequence 1 later: batches of
  // one, then of two, never a select on its own.
  EXPECT_EQ(counting.singles, 0);
  EXPECT_THAT(counting.batch_sizes, ::testing::Contains(2));
  EXPECT_THAT(counting.batch_sizes, ::testing::Each(::testing::AllOf(::testing::Ge(1), ::testing::Le(2))));
}

}  // namespace
}  // namespace quest::cache
