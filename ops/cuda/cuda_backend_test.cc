// Every op of the CUDA backend against the CPU reference (ops/cpu) on fresh
// random inputs over several shapes. Inputs are bf16-representable floats
// so both backends see the same values; the CUDA side stores bf16 and
// accumulates in float32. Outputs are poisoned with NaN before each run and
// a NaN or Inf never passes. Error measure: max |gpu - cpu| / max |cpu|
// (normalised max error), bound 1e-2 for bf16 storage.
//
// Needs a GPU (tags = ["gpu"]).

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "ops/cpu/cpu_backend.h"
#include "ops/cuda/cuda_backend.h"

namespace quest::ops {
namespace {

constexpr double kBf16Tol = 1e-2;

class CudaOpsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cpu_ = CreateCpuBackend({/*num_threads=*/4});
    absl::StatusOr<std::unique_ptr<Backend>> g = CreateCudaBackend();
    ASSERT_TRUE(g.ok()) << g.status();
    gpu_ = *std::move(g);
    ASSERT_EQ(gpu_->activation_dtype(), DType::kBFloat16);
  }

  // Uniform in [-scale, scale], rounded to bf16 values.
  Tensor Random(std::vector<int64_t> shape, float scale = 1.0f) {
    Tensor t = Tensor::Empty(DType::kFloat32, std::move(shape));
    std::uniform_real_distribution<float> dist(-scale, scale);
    for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = BFloat16ToFloat(FloatToBFloat16(dist(rng_)));
    return t;
  }
  Tensor OnCpu(const Tensor& host) { return *cpu_->UploadWeight(host); }
  Tensor OnGpu(const Tensor& host) {
    absl::StatusOr<Tensor> t = gpu_->UploadWeight(host);
    EXPECT_TRUE(t.ok()) << t.status();
    EXPECT_EQ(t->device(), Device::kCuda);
    return *t;
  }
  // Device storage filled with NaN.
  Tensor Poisoned(DType dtype, std::vector<int64_t> shape) {
    Tensor t = gpu_->Allocate(dtype, shape);
    Tensor nan = Tensor::Empty(DType::kFloat32, shape);
    std::fill(nan.data<float>(), nan.data<float>() + nan.numel(), std::numeric_limits<float>::quiet_NaN());
    gpu_->CopyFromHost(nan, t);
    return t;
  }

  // Normalised max error of `got` (host floats) against `want`; fails on any
  // non-finite value.
  static double Compare(const float* want, const float* got, int64_t n, const std::string& what,
                        double tol) {
    double max_ref = 0.0, max_err = 0.0;
    int64_t bad = -1;
    for (int64_t i = 0; i < n; ++i) {
      if (!std::isfinite(got[i]) || !std::isfinite(want[i])) {
        bad = i;
        break;
      }
      max_ref = std::max(max_ref, std::abs(static_cast<double>(want[i])));
      max_err = std::max(max_err, std::abs(static_cast<double>(got[i]) - want[i]));
    }
    EXPECT_EQ(bad, -1) << what << ": non-finite value at " << bad << " (gpu " << got[bad < 0 ? 0 : bad]
                       << ", cpu " << want[bad < 0 ? 0 : bad] << ")";
    if (bad >= 0) return INFINITY;
    const double rel = max_ref > 0 ? max_err / max_ref : max_err;
    std::printf("  %-60s n=%-8lld max|cpu|=%-10.4g max err=%-10.4g rel=%.3g\n", what.c_str(),
                static_cast<long long>(n), max_ref, max_err, rel);
    EXPECT_LE(rel, tol) << what;
    return rel;
  }
  double CompareTensors(const Tensor& cpu_out, const Tensor& gpu_out, const std::string& what,
                        double tol = kBf16Tol) {
    Tensor want = cpu_->ToHost(cpu_out), got = gpu_->ToHost(gpu_out);
    EXPECT_EQ(want.numel(), got.numel());
    return Compare(want.data<float>(), got.data<float>(), want.numel(), what, tol);
  }

  std::mt19937 rng_{20240611};
  std::unique_ptr<Backend> cpu_, gpu_;
};

TEST_F(CudaOpsTest, Linear) {
  struct Shape { int64_t m, k, n; };
  for (const Shape s : {Shape{1, 64, 96}, Shape{7, 128, 320}, Shape{33, 96, 64}, Shape{512, 256, 512},
                        Shape{1, 2048, 8192}}) {
    for (int repeat = 0; repeat < 2; ++repeat) {  // the second run reuses the cached plan
      for (DType out_dtype : {DType::kBFloat16, DType::kFloat32}) {
        for (bool with_bias : {false, true}) {
          Tensor x = Random({s.m, s.k}), w = Random({s.n, s.k}, 0.1f), b = Random({s.n});
          Tensor cx = OnCpu(x), cw = OnCpu(w), cb = OnCpu(b), cy = cpu_->Allocate(DType::kFloat32, {s.m, s.n});
          cpu_->Linear(cx, cw, with_bias ? &cb : nullptr, cy);
          Tensor gx = OnGpu(x), gw = OnGpu(w), gb = OnGpu(b), gy = Poisoned(out_dtype, {s.m, s.n});
          gpu_->Linear(gx, gw, with_bias ? &gb : nullptr, gy);
          CompareTensors(cy, gy,
                         "linear m=" + std::to_string(s.m) + " k=" + std::to_string(s.k) + " n=" +
                             std::to_string(s.n) + " out=" + DTypeName(out_dtype) +
                             (with_bias ? " +bias" : "") + " run " + std::to_string(repeat));
        }
      }
    }
  }
}

TEST_F(CudaOpsTest, LinearOnARowSlice) {
  // A one-row view at an odd row: cuBLASLt must be told the weaker alignment.
  Tensor x = Random({5, 72}), w = Random({40, 72}, 0.1f);
  Tensor cy = cpu_->Allocate(DType::kFloat32, {1, 40});
  cpu_->Linear(OnCpu(x).Slice(3, 4), OnCpu(w), nullptr, cy);
  Tensor gy = Poisoned(DType::kBFloat16, {1, 40});
  gpu_->Linear(OnGpu(x).Slice(3, 4), OnGpu(w), nullptr, gy);
  CompareTensors(cy, gy, "linear on row 3 of [5, 72]");
}

TEST_F(CudaOpsTest, Embedding) {
  for (int64_t d : {8, 64, 576}) {
    Tensor table = Random({50, d});
    std::vector<int32_t> ids = {0, 49, 7, 7, 23, 1, 48, 30, 2};
    Tensor cy = cpu_->Allocate(DType::kFloat32, {9, d});
    cpu_->Embedding(OnCpu(table), ids, cy);
    Tensor gy = Poisoned(DType::kBFloat16, {9, d});
    gpu_->Embedding(OnGpu(table), ids, gy);
    CompareTensors(cy, gy, "embedding d=" + std::to_string(d), 0.0);  // a copy: exact
  }
}

TEST_F(CudaOpsTest, RmsNormAddSiluMul) {
  for (auto [m, d] : std::vector<std::pair<int64_t, int64_t>>{{1, 64}, {3, 576}, {17, 4096}, {2, 100}}) {
    const std::string shape = " [" + std::to_string(m) + ", " + std::to_string(d) + "]";
    Tensor x = Random({m, d}, 3.0f), w = Random({d}), y = Random({m, d});
    {
      Tensor cy = cpu_->Allocate(DType::kFloat32, {m, d});
      cpu_->RmsNorm(OnCpu(x), OnCpu(w), 1e-5f, cy);
      Tensor gy = Poisoned(DType::kBFloat16, {m, d});
      gpu_->RmsNorm(OnGpu(x), OnGpu(w), 1e-5f, gy);
      CompareTensors(cy, gy, "rmsnorm" + shape);
    }
    {
      Tensor cx = OnCpu(x), gx = OnGpu(x);
      cpu_->Add(cx, OnCpu(y));
      gpu_->Add(gx, OnGpu(y));
      CompareTensors(cx, gx, "add" + shape);
    }
    {
      Tensor cg = OnCpu(x), gg = OnGpu(x);  // in place, as the model runs it
      cpu_->SiluMul(cg, OnCpu(y), cg);
      gpu_->SiluMul(gg, OnGpu(y), gg);
      CompareTensors(cg, gg, "silu_mul in place" + shape);
      Tensor co = cpu_->Allocate(DType::kFloat32, {m, d});
      cpu_->SiluMul(OnCpu(x), OnCpu(y), co);
      Tensor go = Poisoned(DType::kBFloat16, {m, d});
      gpu_->SiluMul(OnGpu(x), OnGpu(y), go);
      CompareTensors(co, go, "silu_mul" + shape);
    }
  }
}

TEST_F(CudaOpsTest, Rope) {
  for (auto [n, heads, d, scaling] : std::vector<std::tuple<int64_t, int64_t, int64_t, float>>{
           {1, 4, 64, 1.0f}, {5, 2, 8, 1.0f}, {37, 9, 128, 1.2f}, {3, 32, 256, 1.0f}}) {
    std::vector<float> inv_freq(d / 2);
    for (int64_t i = 0; i < d / 2; ++i) inv_freq[i] = std::pow(10000.0f, -2.0f * i / d);
    std::vector<int32_t> positions(n);
    std::uniform_int_distribution<int32_t> pos(0, 8000);
    for (auto& p : positions) p = pos(rng_);
    Tensor x = Random({n, heads, d});
    for (int call = 0; call < 2; ++call) {  // the second call reuses the uploaded frequencies
      Tensor cx = OnCpu(x), gx = OnGpu(x);
      cpu_->Rope(cx, positions, RopeParams{inv_freq, scaling});
      gpu_->Rope(gx, positions, RopeParams{inv_freq, scaling});
      CompareTensors(cx, gx, "rope n=" + std::to_string(n) + " heads=" + std::to_string(heads) +
                                 " d=" + std::to_string(d) + " call " + std::to_string(call));
    }
  }
}

TEST_F(CudaOpsTest, WriteKvPages) {
  const int page_size = 16, kv_heads = 2, d = 64, num_pages = 12;
  std::vector<int32_t> table = {7, 3, 11, 0, 5};
  Tensor cpu_k = cpu_->AllocateZeros(DType::kFloat32, {num_pages, page_size, kv_heads, d});
  Tensor cpu_v = cpu_->AllocateZeros(DType::kFloat32, {num_pages, page_size, kv_heads, d});
  Tensor gpu_k = gpu_->AllocateZeros(DType::kBFloat16, {num_pages, page_size, kv_heads, d});
  Tensor gpu_v = gpu_->AllocateZeros(DType::kBFloat16, {num_pages, page_size, kv_heads, d});
  // Ragged appends: a prefill chunk across pages, then decode tokens.
  int64_t start = 0;
  for (int64_t n : {21, 1, 1, 30, 1, 5}) {
    Tensor k = Random({n, kv_heads, d}), v = Random({n, kv_heads, d});
    cpu_->WriteKvPages(OnCpu(k), OnCpu(v), table, start, page_size, cpu_k, cpu_v);
    gpu_->WriteKvPages(OnGpu(k), OnGpu(v), table, start, page_size, gpu_k, gpu_v);
    start += n;
  }
  CompareTensors(cpu_k, gpu_k, "k pages after 59 ragged appends", 0.0);
  CompareTensors(cpu_v, gpu_v, "v pages after 59 ragged appends", 0.0);
}

struct AttnCase {
  int heads, kv_heads, head_dim, page_size;
  int64_t kv_len, n;
  bool select;
  int chunk_div;  // selection chunk = page_size / chunk_div
  bool holes, mask, weights;
};

std::string Name(const AttnCase& c) {
  char buf[200];
  std::snprintf(buf, sizeof(buf), "attn H=%d KV=%d d=%d page=%d kv_len=%lld n=%lld%s%s%s%s",
                c.heads, c.kv_heads, c.head_dim, c.page_size, static_cast<long long>(c.kv_len),
                static_cast<long long>(c.n), c.select ? (" sel/" + std::to_string(c.chunk_div)).c_str() : "",
                c.holes ? " holes" : "", c.mask ? " mask" : "", c.weights ? " weights" : "");
  return buf;
}

TEST_F(CudaOpsTest, PagedAttention) {
  const std::vector<AttnCase> cases = {
      // heads kv  d  page kv_len  n   select div holes mask weights
      {4, 4, 64, 16, 37, 1, false, 1, false, false, false},     // GQA 1, decode, last page partly filled
      {8, 2, 64, 16, 100, 100, false, 1, false, false, true},   // GQA 4, whole prefill, causal
      {16, 2, 128, 16, 300, 1, true, 1, false, false, false},   // GQA 8, Quest-style page selection
      {8, 1, 8, 4, 23, 5, false, 1, false, false, false},       // tiny head_dim, prefill chunk
      {32, 8, 128, 16, 1000, 1, false, 1, true, true, true},    // holes + eviction mask + weights
      {8, 2, 256, 16, 77, 13, true, 4, false, true, true},      // sub-page chunks, mask, chunk
      {12, 4, 64, 8, 513, 64, true, 2, true, false, true},      // selection over holes, prefill chunk
      {16, 2, 128, 16, 1, 1, false, 1, false, false, true},     // first token
      {8, 8, 64, 16, 4096, 1, true, 1, false, false, false},    // long decode, few pages
  };
  for (const AttnCase& c : cases) {
    SCOPED_TRACE(Name(c));
    const int64_t logical = (c.kv_len + c.page_size - 1) / c.page_size;
    const int64_t num_pages = logical + 3;
    std::vector<int32_t> table(num_pages);
    std::iota(table.begin(), table.end(), 0);
    std::shuffle(table.begin(), table.end(), rng_);
    table.resize(logical);
    // Holes: pages wholly before the new tokens, as eviction leaves them.
    if (c.holes) {
      for (int64_t p = 0; (p + 1) * c.page_size <= c.kv_len - c.n; ++p) {
        if (p % 3 == 1) table[p] = -1;
      }
    }
    std::vector<int32_t> indptr, chunks;
    int chunk = 0;
    if (c.select) {
      chunk = c.page_size / c.chunk_div;
      const int64_t num_chunks = (c.kv_len + chunk - 1) / chunk;
      indptr.push_back(0);
      for (int g = 0; g < c.kv_heads; ++g) {
        std::vector<int32_t> all(num_chunks);
        std::iota(all.begin(), all.end(), 0);
        std::shuffle(all.begin(), all.end() - 1, rng_);
        // A random subset (varying per KV head) and always the newest chunk.
        const int64_t keep = std::max<int64_t>(1, (num_chunks * (g + 1)) / (2 * c.kv_heads));
        std::vector<int32_t> pick(all.begin(), all.begin() + std::min(keep, num_chunks - 1));
        pick.push_back(static_cast<int32_t>(num_chunks - 1));
        std::sort(pick.begin(), pick.end());
        chunks.insert(chunks.end(), pick.begin(), pick.end());
        indptr.push_back(static_cast<int32_t>(chunks.size()));
      }
    }
    std::vector<uint8_t> valid;
    if (c.mask) {
      valid.resize(static_cast<size_t>(c.kv_heads) * logical * c.page_size);
      std::bernoulli_distribution keep(0.8);
      for (auto& v : valid) v = keep(rng_) ? 1 : 0;
    }
    Tensor q = Random({c.n, c.heads, c.head_dim}, 2.0f);
    Tensor kp = Random({num_pages, c.page_size, c.kv_heads, c.head_dim}, 2.0f);
    Tensor vp = Random({num_pages, c.page_size, c.kv_heads, c.head_dim});
    Tensor cq = OnCpu(q), ck = OnCpu(kp), cv = OnCpu(vp), gq = OnGpu(q), gk = OnGpu(kp), gv = OnGpu(vp);

    const size_t weight_count = static_cast<size_t>(c.heads) * c.kv_len;
    std::vector<float> cpu_sum(weight_count), cpu_last(weight_count);
    std::vector<float> gpu_sum(weight_count, NAN), gpu_last(weight_count, NAN);
    auto args = [&](const Tensor& qq, const Tensor& kk, const Tensor& vv, float* sum, float* last) {
      PagedAttentionArgs a;
      a.q = &qq;
      a.k_pages = &kk;
      a.v_pages = &vv;
      a.page_table = table;
      a.kv_len = c.kv_len;
      a.page_size = c.page_size;
      a.selected_indptr = indptr;
      a.selected_chunks = chunks;
      a.selection_chunk = chunk;
      a.token_valid = c.mask ? valid.data() : nullptr;
      a.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
      if (c.weights) {
        a.attention_sum = sum;
        a.attention_last = last;
      }
      return a;
    };
    Tensor cout = cpu_->Allocate(DType::kFloat32, {c.n, c.heads * c.head_dim});
    cpu_->PagedAttention(args(cq, ck, cv, cpu_sum.data(), cpu_last.data()), cout);
    Tensor gout = Poisoned(DType::kBFloat16, {c.n, c.heads * c.head_dim});
    gpu_->PagedAttention(args(gq, gk, gv, gpu_sum.data(), gpu_last.data()), gout);
    CompareTensors(cout, gout, Name(c));
    if (c.weights) {
      Compare(cpu_sum.data(), gpu_sum.data(), weight_count, "  attention_sum", kBf16Tol);
      Compare(cpu_last.data(), gpu_last.data(), weight_count, "  attention_last", kBf16Tol);
    }
  }
}

}  // namespace
}  // namespace quest::ops
