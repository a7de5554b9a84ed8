#include "cache/quest/quest_policy.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <set>

#include "cache/kv_cache.h"
#include "glog/logging.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "ops/cpu/cpu_backend.h"
#include "runtime/fp8.h"
#include "runtime/testing/random_tensor.h"

namespace quest::cache {
namespace {

using ::testing::HasSubstr;
using GqaCombine = config::QuestOptions::GqaCombine;

using BoundsDtype = config::QuestOptions::BoundsDtype;
constexpr BoundsDtype kBoundsDtypes[] = {config::QuestOptions::KV_DTYPE, config::QuestOptions::FP8_E4M3};

config::CacheConfig QuestConfig(
    uint32_t budget, uint32_t page_size = 0, uint32_t dense_layers = 0,
    GqaCombine combine = config::QuestOptions::GQA_COMBINE_UNSPECIFIED,
    BoundsDtype bounds = config::QuestOptions::BOUNDS_DTYPE_UNSPECIFIED) {
  config::CacheConfig c;
  c.set_policy("quest");
  config::QuestOptions& q = *c.mutable_quest();
  q.set_token_budget(budget);
  q.set_page_size(page_size);
  q.set_dense_layers(dense_layers);
  q.set_gqa_combine(combine);
  q.set_bounds_dtype(bounds);
  return c;
}

std::unique_ptr<QuestPolicy> MakePolicy(const config::CacheConfig& config, const CacheGeometry& g) {
  absl::StatusOr<QuestParams> params = ResolveQuestParams(config, g);
  CHECK(params.ok()) << params.status();
  return std::make_unique<QuestPolicy>(*params, g);
}

// One sequence's KV pages outside any KVCache, so that a test can call the
// policy directly, read its selection, and check it against a host copy of
// every Key and Value. Physical pages are shuffled so the page table matters.
class PagedSequence {
 public:
  PagedSequence(const CacheGeometry& g, int64_t max_tokens, std::mt19937& rng, Backend& backend)
      : g_(g), backend_(backend), max_tokens_(max_tokens) {
    const int64_t pages = (max_tokens + g.page_size - 1) / g.page_size;
    std::vector<int32_t> physical(2 * pages);
    std::iota(physical.begin(), physical.end(), 0);
    std::shuffle(physical.begin(), physical.end(), rng);
    page_table_.assign(physical.begin(), physical.begin() + pages);
    for (int l = 0; l < g.num_layers; ++l) {
      k_.push_back(
          Tensor::Zeros(DType::kFloat32, {2 * pages, g.page_size, g.num_kv_heads, g.head_dim}));
      v_.push_back(
          Tensor::Zeros(DType::kFloat32, {2 * pages, g.page_size, g.num_kv_heads, g.head_dim}));
      keys_.emplace_back(max_tokens * g.num_kv_heads * g.head_dim);
      values_.emplace_back(max_tokens * g.num_kv_heads * g.head_dim);
    }
  }

  // Writes k/v [n, kv_heads, head_dim] at positions [start, start + n) of
  // `layer` and tells the policy, as KVCache::Append does.
  void Append(int layer, int64_t start, const Tensor& k, const Tensor& v, CachePolicy& policy) {
    const int64_t n = k.dim(0);
    CHECK_LE(start + n, max_tokens_);
    backend_.WriteKvPages(k, v, page_table_, start, g_.page_size, k_[layer], v_[layer]);
    const int64_t row = g_.num_kv_heads * g_.head_dim;
    std::copy(k.data<float>(), k.data<float>() + n * row, keys_[layer].begin() + start * row);
    std::copy(v.data<float>(), v.data<float>() + n * row, values_[layer].begin() + start * row);
    policy.OnAppend(View(layer, start + n), start, n);
  }

  // Random K/V for positions [0, length) of every layer, in one append.
  void Fill(int64_t length, CachePolicy& policy, std::mt19937& rng, float key_mean = 0.0f) {
    for (int l = 0; l < g_.num_layers; ++l) {
      Append(l, 0, RandomTensor({length, g_.num_kv_heads, g_.head_dim}, rng, key_mean),
             RandomTensor({length, g_.num_kv_heads, g_.head_dim}, rng), policy);
    }
  }

  SequenceLayerView View(int layer, int64_t length) {
    SequenceLayerView v;
    v.layer = layer;
    v.page_table = page_table_;
    v.length = length;
    v.k_pages = &k_[layer];
    v.v_pages = &v_[layer];
    v.backend = &backend_;
    return v;
  }

  PageSelection Select(CachePolicy& policy, int layer, int64_t length, const Tensor& q) {
    PageSelection s;
    policy.SelectPages(View(layer, length), q, s);
    // The policy hands out a backend-resident [kv_heads, per_head] table;
    // its CSR form is what the assertions below read.
    if (s.table != nullptr) {
      const Tensor host = backend_.ToHost(*s.table);
      const int64_t per_head = host.dim(1);
      s.indptr.push_back(0);
      for (int64_t g = 0; g < host.dim(0); ++g) {
        s.chunks.insert(s.chunks.end(), host.data<int32_t>() + g * per_head,
                        host.data<int32_t>() + (g + 1) * per_head);
        s.indptr.push_back(static_cast<int32_t>(s.chunks.size()));
      }
    }
    return s;
  }

  // The backend's paged attention of q over `selection`, as KVCache::Attend runs it.
  Tensor Attend(int layer, int64_t length, const Tensor& q, const PageSelection& selection) {
    PagedAttentionArgs args;
    args.q = &q;
    args.k_pages = &k_[layer];
    args.v_pages = &v_[layer];
    args.page_table = page_table_;
    args.kv_len = length;
    args.page_size = g_.page_size;
    args.selected_indptr = selection.indptr;
    args.selected_chunks = selection.chunks;
    args.selected_table = selection.table;  // the backend reads the table when set
    args.selection_chunk = selection.chunk_size;
    args.scale = 1.0f / std::sqrt(static_cast<float>(g_.head_dim));
    Tensor out = Tensor::Empty(DType::kFloat32, {q.dim(0), q.dim(1) * q.dim(2)});
    backend_.PagedAttention(args, out);
    return out;
  }

  const float* Key(int layer, int64_t pos, int kv_head) const {
    return keys_[layer].data() + (pos * g_.num_kv_heads + kv_head) * g_.head_dim;
  }
  const float* Value(int layer, int64_t pos, int kv_head) const {
    return values_[layer].data() + (pos * g_.num_kv_heads + kv_head) * g_.head_dim;
  }

 private:
  const CacheGeometry g_;
  Backend& backend_;
  const int64_t max_tokens_;
  std::vector<int32_t> page_table_;
  std::vector<Tensor> k_, v_;
  std::vector<std::vector<float>> keys_, values_;  // [pos][kv_head][head_dim]
};

double DotD(const float* a, const float* b, int n) {
  double s = 0;
  for (int i = 0; i < n; ++i) s += static_cast<double>(a[i]) * b[i];
  return s;
}

const float* QueryHead(const Tensor& q, int head, int head_dim) {
  return q.data<float>() + head * head_dim;
}

// The group's combined q.k of one key (max or sum over the group's heads).
double CombinedDot(const Tensor& q, const float* key, const CacheGeometry& g, int kv_head,
                   bool sum) {
  const int group = g.num_heads / g.num_kv_heads;
  double combined = sum ? 0.0 : -INFINITY;
  for (int h = kv_head * group; h < (kv_head + 1) * group; ++h) {
    const double s = DotD(QueryHead(q, h, g.head_dim), key, g.head_dim);
    combined = sum ? combined + s : std::max(combined, s);
  }
  return combined;
}

// The Quest bound of a page computed from its raw keys, in double: the
// reference the policy's float metadata and scoring are checked against.
double ReferenceBound(const PagedSequence& seq, const Tensor& q, const CacheGeometry& g, int layer,
                      int kv_head, int64_t first, int64_t last, bool sum) {
  const int group = g.num_heads / g.num_kv_heads;
  const int d = g.head_dim;
  std::vector<float> lo(d, INFINITY), hi(d, -INFINITY);
  for (int64_t pos = first; pos < last; ++pos) {
    const float* k = seq.Key(layer, pos, kv_head);
    for (int i = 0; i < d; ++i) lo[i] = std::min(lo[i], k[i]), hi[i] = std::max(hi[i], k[i]);
  }
  double combined = sum ? 0.0 : -INFINITY;
  for (int h = kv_head * group; h < (kv_head + 1) * group; ++h) {
    const float* qh = QueryHead(q, h, d);
    double s = 0;
    for (int i = 0; i < d; ++i)
      s += std::max(static_cast<double>(qh[i]) * hi[i], static_cast<double>(qh[i]) * lo[i]);
    combined = sum ? combined + s : std::max(combined, s);
  }
  return combined;
}

// The policy's bounds of every complete page of `layer`: [kv_head][page] ->
// min[head_dim] then max[head_dim]. Read once up front, since each
// PageBounds call copies the whole layer to the host.
std::vector<std::vector<std::vector<float>>> PolicyPageBounds(const QuestPolicy& policy,
                                                              const CacheGeometry& g, int layer) {
  std::vector<std::vector<std::vector<float>>> bounds(g.num_kv_heads);
  for (int kv = 0; kv < g.num_kv_heads; ++kv) {
    for (int64_t p = 0; p < policy.num_pages(layer); ++p) {
      bounds[kv].push_back(policy.PageBounds(layer, kv, p));
    }
  }
  return bounds;
}

// The group-combined Quest score of each page for the query heads of
// `kv_head`, from the policy's own (possibly FP8, outward-rounded) bounds and
// in float as the backends accumulate it: the quantity SelectTopPages ranks,
// so the bound property is checked on what the policy stores, not on exact
// min/max recomputed from the Keys (ReferenceBound does that).
std::vector<float> ScoresFromBounds(const std::vector<std::vector<float>>& page_bounds,
                                    const Tensor& q, const CacheGeometry& g, int kv_head,
                                    bool sum) {
  const int d = g.head_dim;
  const int group = g.num_heads / g.num_kv_heads;
  std::vector<float> scores;
  for (const std::vector<float>& b : page_bounds) {
    const float* lo = b.data();
    const float* hi = lo + d;
    float combined = 0.0f;
    for (int h = 0; h < group; ++h) {
      const float* qh = QueryHead(q, kv_head * group + h, d);
      float s = 0.0f;
      for (int i = 0; i < d; ++i) s += std::max(qh[i] * lo[i], qh[i] * hi[i]);
      combined = h == 0 ? s : (sum ? combined + s : std::max(combined, s));
    }
    scores.push_back(combined);
  }
  return scores;
}

std::vector<int32_t> ChunksOf(const PageSelection& s, int kv_head) {
  return std::vector<int32_t>(s.chunks.begin() + s.indptr[kv_head],
                              s.chunks.begin() + s.indptr[kv_head + 1]);
}

// ---------------------------------------------------------------------------
// 1. The page score bounds q.k of every key in the page, per head and per
// group combine, and is exact for one-token pages.
TEST(QuestPolicyTest, ScoreIsAnUpperBoundOfEveryKeyInThePage) {
  auto backend = ops::CreateCpuBackend();
  std::mt19937 rng(101);
  for (const CacheGeometry g : {CacheGeometry{1, 4, 4, 32, 16}, CacheGeometry{1, 9, 3, 64, 16}}) {
    for (GqaCombine combine : {config::QuestOptions::MAX, config::QuestOptions::SUM}) {
      for (uint32_t qpage : {1u, 4u, 16u}) {
       for (BoundsDtype bounds : kBoundsDtypes) {
        const bool sum = combine == config::QuestOptions::SUM;
        const int64_t length = 150;
        auto policy = MakePolicy(QuestConfig(8, qpage, 0, combine, bounds), g);
        PagedSequence seq(g, length, rng, *backend);
        seq.Fill(length, *policy, rng, /*key_mean=*/0.3f);
        // Complete pages only: the current one is attended, never scored.
        ASSERT_EQ(policy->num_pages(0), length / qpage);
        const auto page_bounds = PolicyPageBounds(*policy, g, 0);
        for (int trial = 0; trial < 20; ++trial) {
          const Tensor q = RandomTensor({1, g.num_heads, g.head_dim}, rng, -0.1f, 1.5f);
          for (int kv = 0; kv < g.num_kv_heads; ++kv) {
            const std::vector<float> scores = ScoresFromBounds(page_bounds[kv], q, g, kv, sum);
            ASSERT_EQ(scores.size(), length / qpage);
            for (int64_t p = 0; p < static_cast<int64_t>(scores.size()); ++p) {
              double best = -INFINITY;
              for (int64_t pos = p * qpage; pos < std::min<int64_t>((p + 1) * qpage, length);
                   ++pos) {
                const double qk = CombinedDot(q, seq.Key(0, pos, kv), g, kv, sum);
                best = std::max(best, qk);
                ASSERT_GE(scores[p], qk - 1e-4 * (1 + std::abs(qk)))
                    << "page " << p << " pos " << pos << " kv " << kv << " qpage " << qpage;
              }
              // One key per page: min = max = k, so the bound is q.k itself
              // (with exact bounds).
              if (qpage == 1 && bounds == config::QuestOptions::KV_DTYPE) {
                ASSERT_NEAR(scores[p], best, 1e-4 * (1 + std::abs(best)));
              }
            }
          }
        }
       }
      }
    }
  }
}

// ---------------------------------------------------------------------------
// 2. With the budget covering the context, generation through the cache is
// dense generation, bit for bit.
TEST(QuestPolicyTest, FullBudgetThroughTheCacheEqualsDenseBitForBit) {
  auto backend = ops::CreateCpuBackend();
  PagedKVCacheOptions o;
  o.geometry = CacheGeometry{/*num_layers=*/3, /*num_heads=*/6, /*num_kv_heads=*/2, /*head_dim=*/16,
                             /*page_size=*/16};
  o.num_pages = 32;
  std::vector<std::unique_ptr<KVCache>> caches;
  // Dense; quest with a budget beyond the context (dense by length);
  // quest with budget 49 < length from step 12 on but a page budget of
  // ceil(49/16) = 4 pages covering all 57 tokens: the sparse path selects
  // every page and must still equal dense.
  for (const config::CacheConfig& policy :
       {config::CacheConfig(), QuestConfig(1 << 20, 4, 0), QuestConfig(49, 0, 0)}) {
    o.default_policy = policy;
    auto cache = CreatePagedKVCache(o, *backend);
    ASSERT_TRUE(cache.ok()) << cache.status();
    ASSERT_TRUE((*cache)->AddSequence(1, nullptr).ok());
    caches.push_back(*std::move(cache));
  }
  const CacheGeometry& g = o.geometry;
  std::mt19937 rng(202);
  const int prefill = 37, decode = 20;
  for (int step = 0; step <= decode; ++step) {
    const int n = step == 0 ? prefill : 1;
    std::vector<Tensor> k, v, q;
    for (int l = 0; l < g.num_layers; ++l) {
      k.push_back(RandomTensor({n, g.num_kv_heads, g.head_dim}, rng));
      v.push_back(RandomTensor({n, g.num_kv_heads, g.head_dim}, rng));
      q.push_back(RandomTensor({n, g.num_heads, g.head_dim}, rng));
    }
    std::vector<std::vector<Tensor>> outs(caches.size());
    for (size_t c = 0; c < caches.size(); ++c) {
      ASSERT_TRUE(caches[c]->Reserve(1, n).ok());
      for (int l = 0; l < g.num_layers; ++l) {
        caches[c]->Append(l, 1, k[l], v[l]);
        Tensor out = Tensor::Empty(DType::kFloat32, {n, g.num_heads * g.head_dim});
        caches[c]->Attend(l, 1, q[l], out);
        outs[c].push_back(out);
      }
      caches[c]->Commit(1, n);
    }
    for (size_t c = 1; c < caches.size(); ++c) {
      for (int l = 0; l < g.num_layers; ++l) {
        ASSERT_EQ(
            std::memcmp(outs[c][l].data<float>(), outs[0][l].data<float>(), outs[0][l].nbytes()), 0)
            << "cache " << c << " step " << step << " layer " << l;
      }
    }
  }
  EXPECT_EQ(caches[0]->Length(1), prefill + decode);
}

// ---------------------------------------------------------------------------
// 3. Selection keeps the key that matters most.
//
// With one-token Quest pages the bound is q.k itself, so the selected pages
// must be exactly the top keys: the key with the largest q.k (group MAX, and
// MHA) is always among them. With larger pages the bound is loose, and the
// largest-q.k page can legitimately lose to pages whose bound is higher; what
// must hold is that the selection is the top of the bound (checked against
// bounds recomputed from the raw keys), which implies: the largest-q.k page
// is selected, or page_budget-1 other pages have bounds at least its q.k.
TEST(QuestPolicyTest, SelectionContainsTheLargestDotProduct) {
  auto backend = ops::CreateCpuBackend();
  std::mt19937 rng(303);
  std::uniform_int_distribution<int> length_dist(40, 400);
  int checked_exact = 0, checked_bound = 0, top_selected_large_pages = 0;
  for (const CacheGeometry g : {CacheGeometry{1, 4, 4, 32, 16}, CacheGeometry{1, 8, 2, 32, 16}}) {
    for (GqaCombine combine : {config::QuestOptions::MAX, config::QuestOptions::SUM}) {
      const bool sum = combine == config::QuestOptions::SUM;
      for (uint32_t qpage : {1u, 8u, 16u}) {
        for (int trial = 0; trial < 25; ++trial) {
          const int64_t length = length_dist(rng);
          const int64_t pages = (length + qpage - 1) / qpage;
          const int64_t budget_pages =
              std::uniform_int_distribution<int64_t>(2, std::max<int64_t>(2, pages - 1))(rng);
          const uint32_t budget = static_cast<uint32_t>(budget_pages * qpage - qpage / 2);
          if (budget >= length) continue;
          auto policy = MakePolicy(QuestConfig(budget, qpage, 0, combine), g);
          PagedSequence seq(g, length, rng, *backend);
          seq.Fill(length, *policy, rng);
          const Tensor q = RandomTensor({1, g.num_heads, g.head_dim}, rng);
          const PageSelection s = seq.Select(*policy, 0, length, q);
          ASSERT_EQ(static_cast<int>(s.indptr.size()), g.num_kv_heads + 1);
          const int64_t last = pages - 1;
          for (int kv = 0; kv < g.num_kv_heads; ++kv) {
            const std::vector<int32_t> chunks = ChunksOf(s, kv);
            const std::set<int32_t> selected(chunks.begin(), chunks.end());
            // The largest combined q.k outside the always-selected last page.
            double top = -INFINITY;
            int64_t top_page = -1;
            for (int64_t pos = 0; pos < last * qpage; ++pos) {
              const double qk = CombinedDot(q, seq.Key(0, pos, kv), g, kv, sum);
              if (qk > top) top = qk, top_page = pos / qpage;
            }
            std::vector<double> bound(last);
            for (int64_t p = 0; p < last; ++p) {
              bound[p] = ReferenceBound(seq, q, g, 0, kv, p * qpage, (p + 1) * qpage, sum);
            }
            // Top-k of the bound: no unselected page beats a selected one.
            double min_selected = INFINITY, max_unselected = -INFINITY;
            for (int64_t p = 0; p < last; ++p) {
              if (selected.count(p)) {
                min_selected = std::min(min_selected, bound[p]);
              } else {
                max_unselected = std::max(max_unselected, bound[p]);
              }
            }
            ASSERT_GE(min_selected, max_unselected - 1e-4 * (1 + std::abs(max_unselected)))
                << "qpage " << qpage << " length " << length << " budget " << budget;
            if (qpage == 1 && !sum) {
              // Exact bound, MAX combine: the top key itself is selected.
              ASSERT_TRUE(selected.count(top_page)) << "length " << length << " budget " << budget;
              ++checked_exact;
            } else {
              // If the top page was dropped, the page_budget-1 selected
              // others and the top page itself all bound at least `top`.
              const int64_t at_least_top = std::count_if(bound.begin(), bound.end(), [&](double b) {
                return b >= top - 1e-4 * (1 + std::abs(top));
              });
              ASSERT_TRUE(selected.count(top_page) || at_least_top >= budget_pages)
                  << "the largest-q.k page was dropped although fewer than page_budget-1 pages "
                     "bound above it";
              ++checked_bound;
              if (qpage > 1 && selected.count(top_page)) ++top_selected_large_pages;
            }
          }
        }
      }
    }
  }
  EXPECT_GT(checked_exact, 50);
  EXPECT_GT(checked_bound, 100);
  // On random keys the largest-q.k page is still usually selected.
  EXPECT_GT(top_selected_large_pages, checked_bound / 4);
}

// ---------------------------------------------------------------------------
// 4. Incremental metadata (chunked prefill, decode, and a re-written
// uncommitted step) equals metadata recomputed from scratch.
TEST(QuestPolicyTest, IncrementalMetadataEqualsRecomputed) {
  auto backend = ops::CreateCpuBackend();
  std::mt19937 rng(404);
  const CacheGeometry g{/*num_layers=*/2, /*num_heads=*/6, /*num_kv_heads=*/3, /*head_dim=*/24,
                        /*page_size=*/16};
  for (uint32_t qpage : {4u, 16u}) {
   for (BoundsDtype bounds : kBoundsDtypes) {
    const bool fp8 = bounds == config::QuestOptions::FP8_E4M3;
    const int64_t total = 23 + 70;
    auto policy = MakePolicy(QuestConfig(8, qpage, 0, config::QuestOptions::GQA_COMBINE_UNSPECIFIED, bounds), g);
    PagedSequence seq(g, total, rng, *backend);
    auto append = [&](int64_t start, int64_t n) {
      for (int l = 0; l < g.num_layers; ++l) {
        seq.Append(l, start, RandomTensor({n, g.num_kv_heads, g.head_dim}, rng, 0.0f, 2.0f),
                   RandomTensor({n, g.num_kv_heads, g.head_dim}, rng), *policy);
      }
    };
    append(0, 13);  // prefill in two chunks, the second starting mid-page
    append(13, 10);
    for (int64_t pos = 23; pos < total; ++pos) {
      append(pos, 1);
      // Every seventh step is abandoned before Commit and re-run with other
      // Keys: the stale Keys must not survive in the bounds.
      if (pos % 7 == 3) append(pos, 1);
    }
    auto fresh = MakePolicy(QuestConfig(8, qpage, 0, config::QuestOptions::GQA_COMBINE_UNSPECIFIED, bounds), g);
    for (int l = 0; l < g.num_layers; ++l) fresh->OnAppend(seq.View(l, total), 0, total);
    for (int l = 0; l < g.num_layers; ++l) {
      ASSERT_EQ(policy->num_pages(l), total / qpage);
      for (int kv = 0; kv < g.num_kv_heads; ++kv) {
        for (int64_t p = 0; p < policy->num_pages(l); ++p) {
          // Naive min/max from the host copy of the keys.
          std::vector<float> expected(2 * g.head_dim);
          for (int i = 0; i < g.head_dim; ++i)
            expected[i] = INFINITY, expected[g.head_dim + i] = -INFINITY;
          for (int64_t pos = p * qpage; pos < std::min<int64_t>((p + 1) * qpage, total); ++pos) {
            const float* k = seq.Key(l, pos, kv);
            for (int i = 0; i < g.head_dim; ++i) {
              expected[i] = std::min(expected[i], k[i]);
              expected[g.head_dim + i] = std::max(expected[g.head_dim + i], k[i]);
            }
          }
          if (fp8) {  // the nearest E4M3 values outside [min, max]
            for (int i = 0; i < g.head_dim; ++i) {
              expected[i] = fp8::E4M3ToFloat(fp8::E4M3RoundDown(expected[i]));
              expected[g.head_dim + i] = fp8::E4M3ToFloat(fp8::E4M3RoundUp(expected[g.head_dim + i]));
            }
          }
          ASSERT_EQ(policy->PageBounds(l, kv, p), expected)
              << "layer " << l << " kv " << kv << " page " << p << " fp8 " << fp8;
          ASSERT_EQ(fresh->PageBounds(l, kv, p), expected);
        }
      }
    }
   }
  }
}

// ---------------------------------------------------------------------------
// 5. The shape of a selection, dense cases, and Quest pages smaller than the
// pool's pages.
TEST(QuestPolicyTest, SelectionShapeAndDenseCases) {
  auto backend = ops::CreateCpuBackend();
  std::mt19937 rng(505);
  const CacheGeometry g{/*num_layers=*/3, /*num_heads=*/8, /*num_kv_heads=*/2, /*head_dim=*/16,
                        /*page_size=*/16};
  for (uint32_t qpage : {2u, 8u, 16u}) {
    for (int trial = 0; trial < 30; ++trial) {
      const int64_t length = std::uniform_int_distribution<int64_t>(1, 300)(rng);
      const uint32_t budget = std::uniform_int_distribution<uint32_t>(1, 320)(rng);
      auto policy = MakePolicy(QuestConfig(budget, qpage, /*dense_layers=*/1), g);
      PagedSequence seq(g, length, rng, *backend);
      seq.Fill(length, *policy, rng);
      const Tensor q = RandomTensor({1, g.num_heads, g.head_dim}, rng);
      // Layer 0 is dense by configuration.
      EXPECT_TRUE(seq.Select(*policy, 0, length, q).indptr.empty());
      // Prefill rows are dense.
      if (length >= 3) {
        EXPECT_TRUE(seq.Select(*policy, 1, length, RandomTensor({3, g.num_heads, g.head_dim}, rng))
                        .indptr.empty());
      }
      const PageSelection s = seq.Select(*policy, 2, length, q);
      if (length <= budget) {
        EXPECT_TRUE(s.indptr.empty()) << "a sequence within the budget attends densely";
        continue;
      }
      const int64_t pages = (length + qpage - 1) / qpage;
      const int64_t k = (budget + qpage - 1) / qpage;
      ASSERT_EQ(s.chunk_size, static_cast<int>(qpage));
      ASSERT_EQ(static_cast<int>(s.indptr.size()), g.num_kv_heads + 1);
      EXPECT_EQ(s.indptr[0], 0);
      for (int kv = 0; kv < g.num_kv_heads; ++kv) {
        const std::vector<int32_t> chunks = ChunksOf(s, kv);
        EXPECT_EQ(static_cast<int64_t>(chunks.size()), std::min(k, pages))
            << "length " << length << " budget " << budget;
        EXPECT_TRUE(std::is_sorted(chunks.begin(), chunks.end()));
        EXPECT_EQ(std::adjacent_find(chunks.begin(), chunks.end()), chunks.end())
            << "duplicate chunk";
        ASSERT_FALSE(chunks.empty());
        EXPECT_EQ(chunks.back(), pages - 1) << "the current page is always attended";
        EXPECT_GE(chunks.front(), 0);
      }
    }
  }

  // Equal scores: the lower pages win, so that runs reproduce.
  {
    const int64_t length = 100;  // 13 pages of 8
    auto policy = MakePolicy(QuestConfig(/*budget=*/40, 8, 1), g);
    PagedSequence seq(g, length, rng, *backend);
    Tensor same = Tensor::Empty(DType::kFloat32, {length, g.num_kv_heads, g.head_dim});
    std::fill(same.data<float>(), same.data<float>() + same.numel(), 0.5f);
    for (int l = 0; l < g.num_layers; ++l) {
      seq.Append(l, 0, same, RandomTensor({length, g.num_kv_heads, g.head_dim}, rng), *policy);
    }
    const PageSelection s =
        seq.Select(*policy, 2, length, RandomTensor({1, g.num_heads, g.head_dim}, rng));
    for (int kv = 0; kv < g.num_kv_heads; ++kv)
      EXPECT_EQ(ChunksOf(s, kv), (std::vector<int32_t>{0, 1, 2, 3, 12}));
  }

  // Quest pages of 8 tokens in a 16-token pool: selection works in 8-token
  // chunks (half pool pages) and attention over them is an exact softmax
  // over those chunks' tokens.
  const int64_t length = 203;
  const uint32_t budget = 48;  // 6 chunks of 8
  auto policy = MakePolicy(QuestConfig(budget, 8, 0), g);
  PagedSequence seq(g, length, rng, *backend);
  seq.Fill(length, *policy, rng);
  int half_pages = 0;
  for (int trial = 0; trial < 10; ++trial) {
    const Tensor q = RandomTensor({1, g.num_heads, g.head_dim}, rng);
    for (int layer = 0; layer < g.num_layers; ++layer) {
      const PageSelection s = seq.Select(*policy, layer, length, q);
      ASSERT_EQ(s.chunk_size, 8);
      const Tensor out = seq.Attend(layer, length, q, s);
      const int group = g.num_heads / g.num_kv_heads;
      for (int kv = 0; kv < g.num_kv_heads; ++kv) {
        const std::vector<int32_t> chunks = ChunksOf(s, kv);
        ASSERT_EQ(chunks.size(), 6u);
        std::set<int32_t> set(chunks.begin(), chunks.end());
        // Chunks whose pool-page twin (the other half of their 16-token page) is not selected.
        for (int32_t c : chunks) half_pages += (c ^ 1) * 8 < length && set.count(c ^ 1) == 0;
        std::vector<int64_t> positions;
        for (int32_t c : chunks) {
          for (int64_t pos = c * 8; pos < std::min<int64_t>((c + 1) * 8, length); ++pos)
            positions.push_back(pos);
        }
        for (int h = kv * group; h < (kv + 1) * group; ++h) {
          std::vector<double> w;
          double mx = -INFINITY;
          for (int64_t pos : positions) {
            w.push_back(DotD(QueryHead(q, h, g.head_dim), seq.Key(layer, pos, kv), g.head_dim) /
                        std::sqrt(16.0));
            mx = std::max(mx, w.back());
          }
          double denom = 0;
          for (double& x : w) denom += (x = std::exp(x - mx));
          for (int i = 0; i < g.head_dim; ++i) {
            double expected = 0;
            for (size_t j = 0; j < positions.size(); ++j)
              expected += w[j] / denom * seq.Value(layer, positions[j], kv)[i];
            ASSERT_NEAR(out.data<float>()[h * g.head_dim + i], expected, 1e-5)
                << "layer " << layer << " head " << h;
          }
        }
      }
    }
  }
  EXPECT_GT(half_pages, 0) << "selection never split a pool page";
}

// Each layer's table stays as its select left it until that layer's next
// select (the CUDA attention reads the previous one as a prefetch hint
// while the new one is computed): another layer's select writes elsewhere.
TEST(QuestPolicyTest, EachLayerKeepsItsOwnSelectionTable) {
  auto backend = ops::CreateCpuBackend();
  std::mt19937 rng(77);
  const CacheGeometry g{/*num_layers=*/3, /*num_heads=*/4, /*num_kv_heads=*/2, /*head_dim=*/16,
                        /*page_size=*/16};
  const int64_t length = 400;
  auto policy = MakePolicy(QuestConfig(/*budget=*/64, 16, /*dense_layers=*/0), g);
  PagedSequence seq(g, length, rng, *backend);
  seq.Fill(length, *policy, rng);
  const PageSelection first = seq.Select(*policy, 1, length, RandomTensor({1, g.num_heads, g.head_dim}, rng));
  ASSERT_NE(first.table, nullptr);
  const PageSelection other = seq.Select(*policy, 2, length, RandomTensor({1, g.num_heads, g.head_dim}, rng));
  ASSERT_NE(other.table, nullptr);
  EXPECT_NE(first.table, other.table);
  EXPECT_NE(first.table->raw_data(), other.table->raw_data());
  const Tensor again = backend->ToHost(*first.table);
  EXPECT_EQ(std::vector<int32_t>(again.data<int32_t>(), again.data<int32_t>() + again.numel()), first.chunks)
      << "layer 1's table changed when layer 2 selected";
}

// ---------------------------------------------------------------------------
// 6. Configuration errors name the field.
TEST(QuestPolicyTest, ValidationErrorsNameTheField) {
  auto factory = CachePolicyRegistry::Global().Find("quest");
  ASSERT_TRUE(factory.ok()) << factory.status();
  const CacheGeometry g{/*num_layers=*/4, /*num_heads=*/8, /*num_kv_heads=*/2, /*head_dim=*/16,
                        /*page_size=*/16};
  auto validate = [&](const config::CacheConfig& c) { return (*factory)->Validate(c, g); };

  EXPECT_TRUE(validate(QuestConfig(64, 8, 4)).ok());
  EXPECT_TRUE(validate(QuestConfig(64, 16, 0)).ok());
  EXPECT_TRUE(validate(QuestConfig(64, 1, 0)).ok());

  absl::Status s = validate(QuestConfig(0));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("cache.quest.token_budget must be > 0"));
  config::CacheConfig bare;  // policy "quest" without options
  bare.set_policy("quest");
  EXPECT_THAT(validate(bare).message(), HasSubstr("cache.quest.token_budget"));

  for (uint32_t bad : {6u, 32u, 12u}) {
    s = validate(QuestConfig(64, bad));
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(s.message(), HasSubstr("cache.quest.page_size"));
    EXPECT_THAT(s.message(), HasSubstr("got " + std::to_string(bad)));
    EXPECT_THAT(s.message(), HasSubstr("16"));
  }

  s = validate(QuestConfig(64, 0, 5));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("cache.quest.dense_layers"));
  EXPECT_THAT(s.message(), HasSubstr("5"));

  config::CacheConfig other;
  other.set_policy("quest");
  other.mutable_dense();
  s = validate(other);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("cache.quest"));
  EXPECT_THAT(s.message(), HasSubstr("dense"));
  other.mutable_h2o()->set_token_budget(64);
  EXPECT_THAT(validate(other).message(), HasSubstr("h2o"));

  // Defaults: two dense layers (fewer on a shallower model), MAX combine.
  config::CacheConfig defaults;
  defaults.set_policy("quest");
  defaults.mutable_quest()->set_token_budget(100);
  absl::StatusOr<QuestParams> p = ResolveQuestParams(defaults, g);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->dense_layers, 2);
  EXPECT_EQ(p->page_size, 16);
  EXPECT_EQ(p->page_budget(), 7);
  EXPECT_EQ(p->gqa_combine, config::QuestOptions::SUM);
  CacheGeometry shallow = g;
  shallow.num_layers = 1;
  p = ResolveQuestParams(defaults, shallow);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->dense_layers, 1);

  // The cache surfaces the same errors for its default policy.
  auto backend = ops::CreateCpuBackend();
  PagedKVCacheOptions o;
  o.geometry = g;
  o.num_pages = 4;
  o.default_policy = QuestConfig(64, 3);
  EXPECT_THAT(CreatePagedKVCache(o, *backend).status().message(),
              HasSubstr("cache.quest.page_size"));
}

// The c for which key = c*q gives q.key/sqrt(d) = 20.
float PlantScale(const float* q, int d) {
  return 20.0f * std::sqrt(static_cast<float>(d)) / DotD(q, q, d);
}

// ---------------------------------------------------------------------------
// 7. A small budget really is sparse, and still finds a planted strong match.
TEST(QuestPolicyTest, SmallBudgetIsSparseAndFindsAPlantedMatch) {
  auto backend = ops::CreateCpuBackend();
  PagedKVCacheOptions o;
  o.geometry = CacheGeometry{/*num_layers=*/1, /*num_heads=*/4, /*num_kv_heads=*/2, /*head_dim=*/64,
                             /*page_size=*/16};
  o.num_pages = 80;
  const CacheGeometry& g = o.geometry;
  const int group = g.num_heads / g.num_kv_heads;
  const int64_t context = 512;
  std::mt19937 rng(707);
  for (int trial = 0; trial < 6; ++trial) {
    const bool plant = trial % 2 == 1;
    Tensor k = RandomTensor({context, g.num_kv_heads, g.head_dim}, rng);
    Tensor v = RandomTensor({context, g.num_kv_heads, g.head_dim}, rng);
    const Tensor q = RandomTensor({1, g.num_heads, g.head_dim}, rng);
    const Tensor k_new = RandomTensor({1, g.num_kv_heads, g.head_dim}, rng);
    const Tensor v_new = RandomTensor({1, g.num_kv_heads, g.head_dim}, rng);
    // For the first query head of each group, a key c*q somewhere in the
    // prefix with q.k/sqrt(d) = 20 (random keys give ~N(0,1): the planted one
    // holds all but ~1e-6 of the softmax), whose value is a constant vector
    // no random mix resembles.
    std::vector<int64_t> planted(g.num_kv_heads);
    for (int kv = 0; kv < g.num_kv_heads && plant; ++kv) {
      planted[kv] = std::uniform_int_distribution<int64_t>(0, context - 20)(rng);
      const float* qh = QueryHead(q, kv * group, g.head_dim);
      float* key = k.data<float>() + (planted[kv] * g.num_kv_heads + kv) * g.head_dim;
      float* value = v.data<float>() + (planted[kv] * g.num_kv_heads + kv) * g.head_dim;
      const float c = PlantScale(qh, g.head_dim);
      for (int i = 0; i < g.head_dim; ++i) key[i] = c * qh[i], value[i] = 3.0f;
    }
    std::vector<Tensor> outs;
    for (const config::CacheConfig& policy : {config::CacheConfig(), QuestConfig(64, 0, 0)}) {
      o.default_policy = policy;
      auto cache = CreatePagedKVCache(o, *backend);
      ASSERT_TRUE(cache.ok()) << cache.status();
      KVCache& c = **cache;
      ASSERT_TRUE(c.AddSequence(1, nullptr).ok());
      ASSERT_TRUE(c.Reserve(1, context).ok());
      c.Append(0, 1, k, v);
      c.Commit(1, context);
      ASSERT_TRUE(c.Reserve(1, 1).ok());
      c.Append(0, 1, k_new, v_new);
      Tensor out = Tensor::Empty(DType::kFloat32, {1, g.num_heads * g.head_dim});
      c.Attend(0, 1, q, out);
      outs.push_back(out);
    }
    const float* dense = outs[0].data<float>();
    const float* sparse = outs[1].data<float>();
    EXPECT_NE(std::memcmp(dense, sparse, outs[0].nbytes()), 0)
        << "4 of 33 pages must not equal all of them";
    if (!plant) {
      // Random keys: no page dominates, so dropping 29 pages changes the output a lot.
      double diff = 0;
      for (int i = 0; i < g.num_heads * g.head_dim; ++i)
        diff = std::max<double>(diff, std::abs(dense[i] - sparse[i]));
      EXPECT_GT(diff, 0.05);
      continue;
    }
    for (int kv = 0; kv < g.num_kv_heads; ++kv) {
      const int h = kv * group;
      for (int i = 0; i < g.head_dim; ++i) {
        EXPECT_NEAR(sparse[h * g.head_dim + i], 3.0f, 1e-3)
            << "planted page of kv head " << kv << " not selected";
        EXPECT_NEAR(sparse[h * g.head_dim + i], dense[h * g.head_dim + i], 1e-3);
      }
    }
  }

  // The same setup driven on the policy directly: the planted page is in the
  // selection of its KV head.
  auto policy = MakePolicy(QuestConfig(64, 0, 0), g);
  PagedSequence seq(g, context + 1, rng, *backend);
  for (int trial = 0; trial < 20; ++trial) {
    Tensor k = RandomTensor({context, g.num_kv_heads, g.head_dim}, rng);
    const Tensor q = RandomTensor({1, g.num_heads, g.head_dim}, rng);
    std::vector<int64_t> planted(g.num_kv_heads);
    for (int kv = 0; kv < g.num_kv_heads; ++kv) {
      planted[kv] = std::uniform_int_distribution<int64_t>(0, context - 20)(rng);
      const float* qh = QueryHead(q, kv * group + trial % group, g.head_dim);
      float* key = k.data<float>() + (planted[kv] * g.num_kv_heads + kv) * g.head_dim;
      const float c = PlantScale(qh, g.head_dim);
      for (int i = 0; i < g.head_dim; ++i) key[i] = c * qh[i];
    }
    seq.Append(0, 0, k, RandomTensor({context, g.num_kv_heads, g.head_dim}, rng), *policy);
    seq.Append(0, context, RandomTensor({1, g.num_kv_heads, g.head_dim}, rng),
               RandomTensor({1, g.num_kv_heads, g.head_dim}, rng), *policy);
    const PageSelection s = seq.Select(*policy, 0, context + 1, q);
    for (int kv = 0; kv < g.num_kv_heads; ++kv) {
      const std::vector<int32_t> chunks = ChunksOf(s, kv);
      EXPECT_EQ(chunks.size(), 4u);
      EXPECT_TRUE(std::count(chunks.begin(), chunks.end(), planted[kv] / g.page_size))
          << "trial " << trial << " kv " << kv;
    }
  }
}

}  // namespace
}  // namespace quest::cache
