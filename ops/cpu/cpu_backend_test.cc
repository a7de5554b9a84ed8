#include "ops/cpu/cpu_backend.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/testing/random_tensor.h"

namespace quest::ops {
namespace {

// Softmax attention, in double, of query head `h` of row `t` of q
// ([n, heads, d]) over the K/V rows `positions` (k, v: [len, kv_heads, d]) of
// the head's KV head, scores multiplied by `scale`: the d output values.
std::vector<double> ReferenceAttention(const Tensor& q, int t, int h, const Tensor& k,
                                       const Tensor& v, const std::vector<int>& positions,
                                       double scale = 1.0) {
  const int heads = q.dim(1), kv_heads = k.dim(1), d = q.dim(2);
  const int g = h / (heads / kv_heads);
  std::vector<double> p;
  double mx = -1e30, sum = 0;
  for (int j : positions) {
    double s = 0;
    for (int e = 0; e < d; ++e) {
      s += q.data<float>()[(t * heads + h) * d + e] * k.data<float>()[(j * kv_heads + g) * d + e];
    }
    p.push_back(s * scale);
    mx = std::max(mx, p.back());
  }
  for (double& x : p) sum += (x = std::exp(x - mx));
  std::vector<double> out(d);
  for (int e = 0; e < d; ++e) {
    for (size_t i = 0; i < p.size(); ++i) {
      out[e] += p[i] / sum * v.data<float>()[(positions[i] * kv_heads + g) * d + e];
    }
  }
  return out;
}

// Random K/V of `len` tokens twice over: contiguous (what ReferenceAttention
// reads) and written through `page_table` into a pool of `pool_pages` pages
// (what PagedAttention reads), so a test compares the two views of one cache.
struct PagedKv {
  Tensor k, v;              // [len, kv_heads, d]
  Tensor k_pages, v_pages;  // [pool_pages, page_size, kv_heads, d]
  std::vector<int32_t> page_table;
  int len = 0, page_size = 0;

  PagedKv(Backend& backend, std::mt19937& rng, int len, int kv_heads, int d, int page_size,
          std::vector<int32_t> table, int pool_pages)
      : k(RandomTensor({len, kv_heads, d}, rng)),
        v(RandomTensor({len, kv_heads, d}, rng)),
        k_pages(backend.AllocateZeros(DType::kFloat32, {pool_pages, page_size, kv_heads, d})),
        v_pages(backend.AllocateZeros(DType::kFloat32, {pool_pages, page_size, kv_heads, d})),
        page_table(std::move(table)),
        len(len),
        page_size(page_size) {
    backend.WriteKvPages(k, v, page_table, 0, page_size, k_pages, v_pages);
  }

  // Attention of q over the whole cache; a test adds its selection, masks
  // and outputs. The args view page_table, so a page evicted after the write
  // (set to -1) is seen.
  PagedAttentionArgs Args(const Tensor& q) const {
    PagedAttentionArgs args;
    args.q = &q;
    args.k_pages = &k_pages;
    args.v_pages = &v_pages;
    args.page_table = page_table;
    args.kv_len = len;
    args.page_size = page_size;
    return args;
  }
};

TEST(CpuBackendTest, LinearMatchesNaiveProductWithBias) {
  auto backend = CreateCpuBackend();
  std::mt19937 rng(1);
  for (int m : {1, 5}) {
    Tensor x = RandomTensor({m, 7}, rng), w = RandomTensor({3, 7}, rng), b = RandomTensor({3}, rng);
    Tensor y = backend->Allocate(DType::kFloat32, {m, 3});
    backend->Linear(x, w, &b, y);
    for (int i = 0; i < m; ++i) {
      for (int j = 0; j < 3; ++j) {
        double ref = b.data<float>()[j];
        for (int k = 0; k < 7; ++k) ref += x.data<float>()[i * 7 + k] * w.data<float>()[j * 7 + k];
        EXPECT_NEAR(y.data<float>()[i * 3 + j], ref, 1e-4);
      }
    }
  }
}

TEST(CpuBackendTest, RmsNormAndSiluMul) {
  auto backend = CreateCpuBackend();
  Tensor x = Tensor::FromFloats({3, 4}, {1, 2});
  Tensor w = Tensor::FromFloats({1, 2}, {2});
  Tensor y = backend->Allocate(DType::kFloat32, {1, 2});
  backend->RmsNorm(x, w, 0.0f, y);
  const float rms = std::sqrt((9.0f + 16.0f) / 2);
  EXPECT_NEAR(y.data<float>()[0], 3 / rms, 1e-6);
  EXPECT_NEAR(y.data<float>()[1], 8 / rms, 1e-6);

  Tensor g = Tensor::FromFloats({0.0f, 2.0f}, {2}), u = Tensor::FromFloats({5.0f, 3.0f}, {2});
  Tensor o = backend->Allocate(DType::kFloat32, {2});
  backend->SiluMul(g, u, o);
  EXPECT_NEAR(o.data<float>()[0], 0.0f, 1e-7);
  EXPECT_NEAR(o.data<float>()[1], 2.0f / (1 + std::exp(-2.0f)) * 3.0f, 1e-6);
}

TEST(CpuBackendTest, RopeRotatesHalvesAndKeepsNorm) {
  auto backend = CreateCpuBackend();
  Tensor x = Tensor::FromFloats({1, 0, 0, 1}, {1, 1, 4});
  std::vector<float> inv_freq = {1.0f, 0.5f};
  std::vector<int32_t> pos = {3};
  backend->Rope(x, pos, RopeParams{inv_freq, 1.0f});
  // Pairs are (x0, x2) and (x1, x3).
  EXPECT_NEAR(x.data<float>()[0], std::cos(3.0f), 1e-6);
  EXPECT_NEAR(x.data<float>()[2], std::sin(3.0f), 1e-6);
  EXPECT_NEAR(x.data<float>()[1], -std::sin(1.5f), 1e-6);
  EXPECT_NEAR(x.data<float>()[3], std::cos(1.5f), 1e-6);
}

// Attention through pages (scrambled physical order, GQA, causal prefill
// chunk, partly filled last page) equals attention on contiguous K/V.
TEST(CpuBackendTest, PagedAttentionMatchesContiguousReference) {
  auto backend = CreateCpuBackend();
  std::mt19937 rng(7);
  const int heads = 4, kv_heads = 2, d = 8, page_size = 4, len = 11, n = 3;
  // 3 pages for 11 tokens, in a pool of 6.
  const PagedKv kv(*backend, rng, len, kv_heads, d, page_size, {5, 0, 3}, 6);
  const Tensor& k = kv.k;
  const Tensor& v = kv.v;
  Tensor q = RandomTensor({n, heads, d}, rng);

  PagedAttentionArgs args = kv.Args(q);
  args.scale = 1.0f / std::sqrt(static_cast<float>(d));
  Tensor out = backend->Allocate(DType::kFloat32, {n, heads * d});
  backend->PagedAttention(args, out);

  for (int t = 0; t < n; ++t) {
    // Causal: query row t stands at position len - n + t and sees 0..that.
    std::vector<int> causal(len - n + t + 1);
    std::iota(causal.begin(), causal.end(), 0);
    for (int h = 0; h < heads; ++h) {
      const std::vector<double> ref = ReferenceAttention(q, t, h, k, v, causal, args.scale);
      for (int e = 0; e < d; ++e) {
        EXPECT_NEAR(out.data<float>()[(t * heads + h) * d + e], ref[e], 1e-5)
            << t << " " << h << " " << e;
      }
    }
  }
}

// A page selection attends exactly the chosen pages, per KV head.
TEST(CpuBackendTest, PagedAttentionHonoursPerHeadSelection) {
  auto backend = CreateCpuBackend();
  std::mt19937 rng(9);
  const int heads = 2, kv_heads = 2, d = 4, page_size = 2, len = 6;
  const PagedKv kv(*backend, rng, len, kv_heads, d, page_size, {0, 1, 2}, 3);
  const Tensor& k = kv.k;
  const Tensor& v = kv.v;
  Tensor q = RandomTensor({1, heads, d}, rng);
  // Head 0 attends page 1 only; head 1 attends pages 0 and 2.
  const std::vector<int32_t> indptr = {0, 1, 3}, pages = {1, 0, 2};
  PagedAttentionArgs args = kv.Args(q);
  args.selected_indptr = indptr;
  args.selected_chunks = pages;
  Tensor out = backend->Allocate(DType::kFloat32, {1, heads * d});
  backend->PagedAttention(args, out);

  auto expect_over = [&](int h, std::vector<int> positions) {
    const std::vector<double> ref = ReferenceAttention(q, 0, h, k, v, positions);
    for (int e = 0; e < d; ++e) EXPECT_NEAR(out.data<float>()[h * d + e], ref[e], 1e-5);
  };
  expect_over(0, {2, 3});
  expect_over(1, {0, 1, 4, 5});
}

// Chunk-granular selection, an evicted page (-1), a token mask and the
// attention-weight outputs, checked against a direct softmax over exactly the
// keys each head may see.
TEST(CpuBackendTest, ChunksMasksHolesAndAttentionOutputs) {
  auto backend = CreateCpuBackend();
  std::mt19937 rng(21);
  const int heads = 4, kv_heads = 2, d = 4, page_size = 4, len = 12;
  PagedKv kv(*backend, rng, len, kv_heads, d, page_size, {2, 0, 1}, 3);
  const Tensor& k = kv.k;
  const Tensor& v = kv.v;
  Tensor q = RandomTensor({1, heads, d}, rng);
  kv.page_table[1] = -1;  // positions 4..7 evicted for everyone
  // Chunks of 2 tokens. KV head 0: chunks 0, 3 (hole: skipped), 5; KV head 1: all.
  const std::vector<int32_t> indptr = {0, 3, 9}, chunks = {0, 3, 5, 0, 1, 2, 3, 4, 5};
  std::vector<uint8_t> valid(kv_heads * 12, 1);
  valid[1 * 12 + 9] = 0;  // KV head 1 evicted position 9
  std::vector<float> sum(heads * len), last(heads * len);
  PagedAttentionArgs args = kv.Args(q);
  args.selected_indptr = indptr;
  args.selected_chunks = chunks;
  args.selection_chunk = 2;
  args.token_valid = valid.data();
  args.attention_sum = sum.data();
  args.attention_last = last.data();
  Tensor out = backend->Allocate(DType::kFloat32, {1, heads * d});
  backend->PagedAttention(args, out);

  const std::vector<std::vector<int>> visible = {{0, 1, 10, 11}, {0, 1, 2, 3, 8, 10, 11}};
  for (int h = 0; h < heads; ++h) {
    const int g = h / 2;
    const std::vector<double> ref = ReferenceAttention(q, 0, h, k, v, visible[g]);
    for (int e = 0; e < d; ++e) {
      EXPECT_NEAR(out.data<float>()[h * d + e], ref[e], 1e-5) << "head " << h;
    }
    double mass = 0;
    for (int j = 0; j < len; ++j) {
      mass += sum[h * len + j];
      EXPECT_FLOAT_EQ(sum[h * len + j], last[h * len + j]);
      const bool seen = std::find(visible[g].begin(), visible[g].end(), j) != visible[g].end();
      if (!seen) {
        EXPECT_EQ(sum[h * len + j], 0.0f) << "head " << h << " pos " << j;
      }
    }
    EXPECT_NEAR(mass, 1.0, 1e-5);
  }
}

TEST(CpuBackendTest, TopKIsAStableDescendingSortPrefix) {
  auto backend = CreateCpuBackend();
  std::mt19937 rng(3);
  std::uniform_int_distribution<int> level(-20, 20);
  for (int k : {1, 2, 7, 64}) {
    Tensor logits = Tensor::Empty(DType::kFloat32, {3, 300});
    for (int64_t i = 0; i < logits.numel(); ++i) logits.data<float>()[i] = 0.5f * level(rng);
    logits.data<float>()[17] = NAN;  // ranks lowest
    Tensor ids = Tensor::Empty(DType::kInt32, {3, k});
    Tensor values = Tensor::Empty(DType::kFloat32, {3, k});
    backend->TopK(logits, k, ids, values);
    for (int r = 0; r < 3; ++r) {
      const float* x = logits.data<float>() + r * 300;
      std::vector<int32_t> order(300);
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
        if (std::isnan(x[a]) || std::isnan(x[b])) return !std::isnan(x[a]) && std::isnan(x[b]);
        return x[a] > x[b];
      });
      for (int j = 0; j < k; ++j) {
        EXPECT_EQ(ids.data<int32_t>()[r * k + j], order[j]) << "k " << k << " row " << r << " rank " << j;
        EXPECT_EQ(values.data<float>()[r * k + j], x[order[j]]);
      }
    }
  }
}

}  // namespace
}  // namespace quest::ops
