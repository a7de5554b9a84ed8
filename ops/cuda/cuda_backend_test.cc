// Every op of the CUDA backend against the CPU reference (ops/cpu) on fresh
// random inputs over several shapes. Inputs are bf16-representable floats
// so both backends see the same values; the CUDA side stores bf16 and
// accumulates in float32. Outputs are poisoned with NaN before each run and
// a NaN or Inf never passes. Error measure: max |gpu - cpu| / max |cpu|
// (normalised max error), bound 1e-2 for bf16 storage.
//
// Needs a GPU (tags = ["gpu"]).

#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "ops/cpu/cpu_backend.h"
#include "ops/cuda/attention_kernels.h"
#include "ops/cuda/cuda_backend.h"
#include "ops/cuda/gemv_kernels.h"
#include "ops/cuda/testing/cpu_gpu_test.h"

namespace quest::ops {
namespace {

constexpr double kBf16Tol = 1e-2;

class CudaOpsTest : public testing::CpuGpuTest {
 protected:
  CudaOpsTest() : CpuGpuTest(20240611) {}

  // Fills device tensor t of backend b with NaN.
  static void Poison(Backend& b, Tensor& t) {
    Tensor nan = Tensor::Empty(DType::kFloat32, t.shape());
    std::fill(nan.data<float>(), nan.data<float>() + nan.numel(), std::numeric_limits<float>::quiet_NaN());
    b.CopyFromHost(nan, t);
  }
  // Device storage filled with NaN.
  Tensor Poisoned(DType dtype, std::vector<int64_t> shape) {
    Tensor t = gpu_->Allocate(dtype, shape);
    Poison(*gpu_, t);
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

// Decode-shaped linear layers (m <= cuda::kMaxGemvRows) run on the
// backend's own kernels: the CUDA-core one (every row count it is built
// for, 1, 2, 4, and 3 padded up to 4; n not a multiple of any rows-per-CTA
// choice, each choice) and the tensor-core one (m up to 8, n not a multiple
// of its 16 rows, k a multiple of 64), both from the default pick; shapes
// neither takes (k not a multiple of 64 above 4 rows, more than 8 rows) go
// to cuBLASLt. Bias, bf16 and f32 outputs. f32 outputs are held to 1e-4
// (both sides accumulate in float32; only the order differs).
TEST_F(CudaOpsTest, DecodeLinear) {
  static_assert(cuda::kMaxGemvRows == 8, "the shapes below straddle the kernels' limits");
  struct Shape { int64_t m, k, n; };
  const Shape shapes[] = {{1, 8, 1},      {1, 4104, 4099}, {2, 72, 5},     {3, 1032, 77},  {4, 11008, 33},
                          {5, 256, 130},  {6, 4096, 1},    {7, 96, 17},    {8, 4096, 67},  {8, 11008, 40},
                          {8, 104, 9},    {9, 136, 19},    {2, 4096, 4099}};
  struct Config { int variant, rows_per_cta; };
  for (const Config config : {Config{0, 0}, Config{1, 2}, Config{1, 4}, Config{1, 8}, Config{2, 0}}) {
    CudaBackendOptions options;
    options.gemv_variant = config.variant;
    options.gemv_rows_per_cta = config.rows_per_cta;
    absl::StatusOr<std::unique_ptr<Backend>> made = CreateCudaBackend(options);
    ASSERT_TRUE(made.ok()) << made.status();
    Backend& gpu = **made;
    for (const Shape s : shapes) {
      for (DType out_dtype : {DType::kBFloat16, DType::kFloat32}) {
        for (bool with_bias : {false, true}) {
          Tensor x = Random({s.m, s.k}), w = Random({s.n, s.k}, 0.1f), b = Random({s.n});
          Tensor cx = OnCpu(x), cw = OnCpu(w), cb = OnCpu(b), cy = cpu_->Allocate(DType::kFloat32, {s.m, s.n});
          cpu_->Linear(cx, cw, with_bias ? &cb : nullptr, cy);
          Tensor gx = *gpu.UploadWeight(x), gw = *gpu.UploadWeight(w), gb = *gpu.UploadWeight(b);
          Tensor gy = gpu.Allocate(out_dtype, {s.m, s.n});
          Poison(gpu, gy);
          gpu.Linear(gx, gw, with_bias ? &gb : nullptr, gy);
          Tensor want = cpu_->ToHost(cy), got = gpu.ToHost(gy);
          Compare(want.data<float>(), got.data<float>(), want.numel(),
                  "decode linear variant " + std::to_string(config.variant) + " rows/cta " +
                      std::to_string(config.rows_per_cta) + " m=" + std::to_string(s.m) + " k=" +
                      std::to_string(s.k) + " n=" + std::to_string(s.n) + " out=" + DTypeName(out_dtype) +
                      (with_bias ? " +bias" : ""),
                  out_dtype == DType::kFloat32 ? 1e-4 : kBf16Tol);
        }
      }
    }
  }
  for (auto [variant, rows] : {std::pair{3, 0}, std::pair{0, 3}}) {
    CudaBackendOptions bad;
    bad.gemv_variant = variant;
    bad.gemv_rows_per_cta = rows;
    EXPECT_EQ(CreateCudaBackend(bad).status().code(), absl::StatusCode::kInvalidArgument);
  }
}

// A group of linear layers over one x (q/k/v, gate/up) in one launch: each
// output bitwise equal to its own Linear call (the parts' CTAs cover the
// same rows in the same order) and within tolerance of the CPU; parts of
// different n, with and without bias; shapes the GEMV kernels do not take
// (9 rows; 8 rows with k not a multiple of 64) fall back to one call each.
TEST_F(CudaOpsTest, LinearGroup) {
  struct Shape { int64_t m, k; };
  for (const Shape s : {Shape{1, 256}, Shape{2, 136}, Shape{3, 512}, Shape{8, 4096}, Shape{8, 136}, Shape{9, 64}}) {
    for (DType out_dtype : {DType::kBFloat16, DType::kFloat32}) {
      const std::vector<int64_t> ns = {96, 33, 17};
      const std::string what = "linear group m=" + std::to_string(s.m) + " k=" + std::to_string(s.k) +
                               " out=" + DTypeName(out_dtype);
      Tensor x = Random({s.m, s.k});
      Tensor gx = OnGpu(x), cx = OnCpu(x);
      std::vector<Tensor> w, b, gw, gb, grouped, single;
      for (size_t j = 0; j < ns.size(); ++j) {
        w.push_back(Random({ns[j], s.k}, 0.1f));
        b.push_back(Random({ns[j]}));
        gw.push_back(OnGpu(w[j]));
        gb.push_back(OnGpu(b[j]));
        grouped.push_back(Poisoned(out_dtype, {s.m, ns[j]}));
        single.push_back(Poisoned(out_dtype, {s.m, ns[j]}));
      }
      std::vector<Backend::LinearOut> outs;
      for (size_t j = 0; j < ns.size(); ++j) outs.push_back({&gw[j], j == 1 ? nullptr : &gb[j], &grouped[j]});
      gpu_->LinearGroup(gx, outs);
      for (size_t j = 0; j < ns.size(); ++j) {
        gpu_->Linear(gx, gw[j], j == 1 ? nullptr : &gb[j], single[j]);
        Tensor cy = cpu_->Allocate(DType::kFloat32, {s.m, ns[j]});
        Tensor cb = OnCpu(b[j]);
        cpu_->Linear(cx, OnCpu(w[j]), j == 1 ? nullptr : &cb, cy);
        CompareTensors(cy, grouped[j], what + " part " + std::to_string(j),
                       out_dtype == DType::kFloat32 ? 1e-4 : kBf16Tol);
        Tensor a = gpu_->ToHost(grouped[j]), one = gpu_->ToHost(single[j]);
        EXPECT_EQ(std::memcmp(a.raw_data(), one.raw_data(), a.nbytes()), 0) << what << " part " << j;
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
  for (auto [m, d] : std::vector<std::pair<int64_t, int64_t>>{
           {1, 64}, {3, 576}, {17, 4096}, {2, 100}, {1, 8192}, {1, 11008}}) {
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
      // The fused residual add and norm: against the CPU's two ops, and
      // bitwise against the GPU's own two ops (the sum is rounded to bf16
      // before the norm either way).
      Tensor cx = OnCpu(x), co = cpu_->Allocate(DType::kFloat32, {m, d});
      cpu_->AddRmsNorm(cx, OnCpu(y), OnCpu(w), 1e-5f, co);
      Tensor gx = OnGpu(x), go = Poisoned(DType::kBFloat16, {m, d});
      gpu_->AddRmsNorm(gx, OnGpu(y), OnGpu(w), 1e-5f, go);
      CompareTensors(cx, gx, "add_rmsnorm x" + shape);
      CompareTensors(co, go, "add_rmsnorm out" + shape);
      Tensor ux = OnGpu(x), uo = Poisoned(DType::kBFloat16, {m, d});
      gpu_->Add(ux, OnGpu(y));
      gpu_->RmsNorm(ux, OnGpu(w), 1e-5f, uo);
      Tensor fused_x = gpu_->ToHost(gx), fused_out = gpu_->ToHost(go);
      Tensor two_x = gpu_->ToHost(ux), two_out = gpu_->ToHost(uo);
      EXPECT_EQ(std::memcmp(fused_x.raw_data(), two_x.raw_data(), fused_x.nbytes()), 0) << "add_rmsnorm x" << shape;
      EXPECT_EQ(std::memcmp(fused_out.raw_data(), two_out.raw_data(), fused_out.nbytes()), 0)
          << "add_rmsnorm out" << shape;
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

// CudaBackendOptions::stream: the backend runs on the caller's stream, so a
// run of its ops can be captured into a CUDA graph. A Quest decode step of
// one layer (page bounds, SelectTopPages, PagedAttention over the selected
// table, then a Linear) runs once uncaptured (which uploads the page table)
// and is then captured and replayed; the replay must equal the uncaptured
// run bit for bit, and the attention the CPU reference.
TEST_F(CudaOpsTest, CallerStreamAndGraphCapture) {
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);
  {
    CudaBackendOptions options;
    options.stream = stream;
    absl::StatusOr<std::unique_ptr<Backend>> created = CreateCudaBackend(options);
    ASSERT_TRUE(created.ok()) << created.status();
    Backend& b = **created;
    const int page_size = 16, heads = 8, kv_heads = 2, d = 128, pages = 40, k = 9;
    const int64_t kv_len = pages * page_size - 5;  // the last page partly filled
    const int64_t used = (kv_len + page_size - 1) / page_size;
    std::vector<int32_t> table(used);
    std::iota(table.begin(), table.end(), 0);
    std::shuffle(table.begin(), table.end(), rng_);
    Tensor kh = Random({pages, page_size, kv_heads, d}), vh = Random({pages, page_size, kv_heads, d});
    Tensor qh = Random({1, heads, d}), xh = Random({1, heads * d}), wh = Random({64, heads * d}, 0.1f);
    Tensor kp = *b.UploadWeight(kh), vp = *b.UploadWeight(vh), q = *b.UploadWeight(qh);
    Tensor w = *b.UploadWeight(wh);
    Tensor bounds = b.AllocateZeros(DType::kBFloat16, PageBoundsShape(pages, kv_heads, d));
    Tensor selected = b.Allocate(DType::kInt32, {kv_heads, k + 1});
    Tensor attn = b.Allocate(DType::kBFloat16, {1, heads * d}), y = b.Allocate(DType::kFloat32, {1, 64});
    const PageBoundsArgs pb = WholeSequenceBounds(kp, table, page_size, kv_len);
    TopPagesArgs ta;
    ta.q = &q;
    ta.bounds = &bounds;
    ta.num_pages = used;
    ta.k = k;
    PagedAttentionArgs aa;
    aa.q = &q;
    aa.k_pages = &kp;
    aa.v_pages = &vp;
    aa.page_table = table;
    aa.kv_len = kv_len;
    aa.page_size = page_size;
    aa.selected_table = &selected;
    aa.selection_chunk = page_size;
    aa.scale = 1.0f / std::sqrt(static_cast<float>(d));
    b.UpdatePageBounds(pb, bounds);  // every page, as prefill leaves them
    // A decode step folds only the current page (its physical index goes as
    // a kernel argument: nothing to upload, so it can be captured).
    PageBoundsArgs pb_last = pb;
    pb_last.begin = (used - 1) * page_size;
    auto step = [&] {
      b.UpdatePageBounds(pb_last, bounds);
      b.SelectTopPages(ta, selected);
      b.PagedAttention(aa, attn);
      b.Linear(attn, w, nullptr, y);
    };
    step();
    const Tensor sel_once = b.ToHost(selected), attn_once = b.ToHost(attn), y_once = b.ToHost(y);

    // The CPU reference of the attention over the same selection.
    Tensor cq = OnCpu(qh), ck = OnCpu(kh), cv = OnCpu(vh), cout = cpu_->Allocate(DType::kFloat32, {1, heads * d});
    std::vector<int32_t> indptr = {0}, chunks;
    for (int g = 0; g < kv_heads; ++g) {
      for (int j = 0; j <= k; ++j) chunks.push_back(sel_once.data<int32_t>()[g * (k + 1) + j]);
      indptr.push_back(static_cast<int32_t>(chunks.size()));
    }
    PagedAttentionArgs ca = aa;
    ca.q = &cq;
    ca.k_pages = &ck;
    ca.v_pages = &cv;
    ca.selected_table = nullptr;
    ca.selected_indptr = indptr;
    ca.selected_chunks = chunks;
    cpu_->PagedAttention(ca, cout);
    Tensor want = cpu_->ToHost(cout);
    Compare(want.data<float>(), attn_once.data<float>(), want.numel(), "attention on the caller's stream",
            kBf16Tol);

    Poison(b, attn);
    Poison(b, y);
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), cudaSuccess);
    step();
    ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
    ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
    for (int replay = 0; replay < 3; ++replay) {
      ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
      const Tensor sel_g = b.ToHost(selected), attn_g = b.ToHost(attn), y_g = b.ToHost(y);
      EXPECT_EQ(0, std::memcmp(sel_g.raw_data(), sel_once.raw_data(), sel_once.nbytes())) << "replay " << replay;
      EXPECT_EQ(0, std::memcmp(attn_g.raw_data(), attn_once.raw_data(), attn_once.nbytes())) << "replay " << replay;
      EXPECT_EQ(0, std::memcmp(y_g.raw_data(), y_once.raw_data(), y_once.nbytes())) << "replay " << replay;
      Poison(b, attn);
    }
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
  }  // the backend and its tensors go before the stream
  EXPECT_EQ(cudaStreamDestroy(stream), cudaSuccess);
}

// SelectTopPagesBatch: every member's rows equal a SelectTopPages call of
// its own, bit for bit (that call is checked against the CPU reference in
// quest_kernels_test), over ragged page counts (k == 0, k == n, one page,
// thousands), bf16 and FP8 bounds, MHA and GQA with SUM and MAX, a batch
// past one launch's kMaxTopPagesBatch members, and a batch mixing shapes
// (which selects member by member). Rows are poisoned before each call.
TEST_F(CudaOpsTest, SelectTopPagesBatchMatchesSingles) {
  struct Shape {
    int heads, kv_heads, d;
    bool sum;
  };
  const int page_size = 16;
  auto build = [&](const Shape& sh, DType bounds_dtype, int64_t len, Tensor& q, Tensor& bounds) {
    const int64_t pages = (len + page_size - 1) / page_size;
    Tensor kpool = OnGpu(Random({pages, page_size, sh.kv_heads, sh.d}));
    std::vector<int32_t> table(pages);
    std::iota(table.begin(), table.end(), 0);
    q = OnGpu(Random({1, sh.heads, sh.d}));
    bounds = gpu_->AllocateZeros(bounds_dtype, PageBoundsShape(pages, sh.kv_heads, sh.d));
    gpu_->UpdatePageBounds(WholeSequenceBounds(kpool, table, page_size, len), bounds);
  };
  struct Member {
    Tensor q, bounds, batched, single;
    TopPagesArgs args;
  };
  auto run = [&](std::vector<Member>& ms, const std::string& what) {
    std::vector<TopPagesArgs> args;
    std::vector<Tensor*> outs;
    for (Member& m : ms) {
      m.args.q = &m.q;
      m.args.bounds = &m.bounds;
      const int64_t kv = m.bounds.dim(1);
      m.batched = gpu_->Allocate(DType::kInt32, {kv, m.args.k + 1});
      m.single = gpu_->Allocate(DType::kInt32, {kv, m.args.k + 1});
      std::vector<int32_t> poison(kv * (m.args.k + 1), -7);
      Tensor host = Tensor::Empty(DType::kInt32, {kv, m.args.k + 1});
      std::copy(poison.begin(), poison.end(), host.data<int32_t>());
      gpu_->CopyFromHost(host, m.batched);
      gpu_->CopyFromHost(host, m.single);
      args.push_back(m.args);
      outs.push_back(&m.batched);
    }
    gpu_->SelectTopPagesBatch(args, outs);
    for (size_t i = 0; i < ms.size(); ++i) {
      gpu_->SelectTopPages(ms[i].args, ms[i].single);
      const Tensor got = gpu_->ToHost(ms[i].batched), want = gpu_->ToHost(ms[i].single);
      ASSERT_EQ(got.numel(), want.numel());
      EXPECT_EQ(0, std::memcmp(got.raw_data(), want.raw_data(), want.nbytes()))
          << what << ": member " << i << " (" << ms[i].args.num_pages << " pages, k " << ms[i].args.k << ")";
      const int32_t* row = got.data<int32_t>();
      EXPECT_EQ(row[ms[i].args.k], ms[i].args.num_pages - 1) << what << ": member " << i << " current page";
    }
  };
  for (const Shape sh : {Shape{8, 8, 128, true}, Shape{16, 4, 128, true}, Shape{16, 4, 64, false},
                         Shape{16, 2, 256, true}}) {
    for (DType bdt : {DType::kBFloat16, DType::kFloat8E4M3}) {
      const std::string what = "heads " + std::to_string(sh.heads) + "/" + std::to_string(sh.kv_heads) +
                               " d " + std::to_string(sh.d) + (sh.sum ? " sum " : " max ") + DTypeName(bdt);
      std::vector<Member> ms;
      // (tokens, k): ragged, the edge cases k == 0 and k == n, one page.
      for (const auto& [len, k] : std::vector<std::pair<int64_t, int64_t>>{
               {16 * 2048 - 3, 127}, {5000, 40}, {16 * 300, 299}, {777, 0}, {16, 0}, {16 * 4100, 255},
               {100, 3}, {40000, 63}}) {
        Member m;
        build(sh, bdt, len, m.q, m.bounds);
        m.args.num_pages = (len + page_size - 1) / page_size;
        m.args.k = std::min<int64_t>(k, m.args.num_pages - 1);
        m.args.combine_sum = sh.sum;
        ms.push_back(std::move(m));
      }
      run(ms, what);
    }
  }
  // More members than one launch takes, short contexts.
  {
    std::vector<Member> ms;
    std::uniform_int_distribution<int64_t> len(17, 3000);
    for (int i = 0; i < 57; ++i) {
      Member m;
      const int64_t l = len(rng_);
      build(Shape{8, 2, 128, true}, DType::kFloat8E4M3, l, m.q, m.bounds);
      m.args.num_pages = (l + page_size - 1) / page_size;
      m.args.k = std::min<int64_t>(i % 20, m.args.num_pages - 1);
      ms.push_back(std::move(m));
    }
    run(ms, "57 members");
  }
  // Mixed shapes: member by member.
  {
    std::vector<Member> ms(2);
    build(Shape{8, 8, 128, true}, DType::kBFloat16, 3000, ms[0].q, ms[0].bounds);
    build(Shape{8, 2, 64, true}, DType::kBFloat16, 3000, ms[1].q, ms[1].bounds);
    for (Member& m : ms) {
      m.args.num_pages = (3000 + page_size - 1) / page_size;
      m.args.k = 20;
    }
    run(ms, "mixed shapes");
  }
}

enum class Sel { kDense, kCsr, kTable };

struct AttnCase {
  int heads, kv_heads, head_dim, page_size;
  int64_t kv_len, n;
  Sel sel = Sel::kDense;
  int chunk_div = 1;           // selection chunk = page_size / chunk_div
  bool holes = false;          // page-table holes before the new tokens
  bool mask = false;           // token_valid, ~80% kept
  bool weights = false;        // attention_sum / attention_last
  bool over_context = false;   // selections name chunks past kv_len too
  bool empty_head = false;     // KV head 0 attends nothing
  DType dtype = DType::kBFloat16;
};

std::string Name(const AttnCase& c) {
  const char* sel = c.sel == Sel::kDense ? "" : c.sel == Sel::kCsr ? " csr/" : " table/";
  std::string s = "attn H=" + std::to_string(c.heads) + " KV=" + std::to_string(c.kv_heads) +
                  " d=" + std::to_string(c.head_dim) + " page=" + std::to_string(c.page_size) +
                  " kv_len=" + std::to_string(c.kv_len) + " n=" + std::to_string(c.n);
  if (c.sel != Sel::kDense) s += sel + std::to_string(c.chunk_div);
  if (c.holes) s += " holes";
  if (c.mask) s += " mask";
  if (c.weights) s += " weights";
  if (c.over_context) s += " over";
  if (c.empty_head) s += " empty0";
  if (c.dtype != DType::kBFloat16) s += std::string(" ") + DTypeName(c.dtype);
  return s;
}

class CudaAttentionTest : public CudaOpsTest {
 protected:
  Backend& Gpu(DType dtype) {
    if (dtype == DType::kBFloat16) return *gpu_;
    if (gpu_f16_ == nullptr) {
      CudaBackendOptions options;
      options.dtype = DType::kFloat16;
      absl::StatusOr<std::unique_ptr<Backend>> g = CreateCudaBackend(options);
      EXPECT_TRUE(g.ok()) << g.status();
      gpu_f16_ = *std::move(g);
    }
    return *gpu_f16_;
  }

  // One PagedAttention call on both backends with fresh random inputs.
  void Run(const AttnCase& c) {
    SCOPED_TRACE(Name(c));
    Backend& gpu = Gpu(c.dtype);
    const int64_t logical = (c.kv_len + c.page_size - 1) / c.page_size;
    const int64_t num_pages = logical + 3;
    std::vector<int32_t> table(num_pages);
    std::iota(table.begin(), table.end(), 0);
    std::shuffle(table.begin(), table.end(), rng_);
    table.resize(logical);
    if (c.holes) {  // pages wholly before the new tokens, as eviction leaves them
      for (int64_t p = 0; (p + 1) * c.page_size <= c.kv_len - c.n; ++p) {
        if (p % 3 == 1) table[p] = -1;
      }
    }
    const int chunk = c.sel == Sel::kDense ? 0 : c.page_size / c.chunk_div;
    std::vector<int32_t> indptr, chunks;
    int64_t per_head = 0;
    if (c.sel != Sel::kDense) {
      const int64_t num_chunks = (c.kv_len + chunk - 1) / chunk;
      // Chunk indices to draw from: the context's, and past it when asked.
      const int64_t range = c.over_context ? num_chunks + 4 : num_chunks;
      std::uniform_int_distribution<int64_t> frac(1, std::max<int64_t>(1, num_chunks));
      per_head = c.sel == Sel::kTable ? std::min<int64_t>(range, frac(rng_)) : 0;
      indptr.push_back(0);
      for (int g = 0; g < c.kv_heads; ++g) {
        std::vector<int32_t> all(range);
        std::iota(all.begin(), all.end(), 0);
        std::vector<int32_t> pick;
        if (c.empty_head && g == 0) {
          // Nothing: an empty CSR row, or a table row past the context.
          for (int64_t i = 0; i < per_head; ++i) pick.push_back(static_cast<int32_t>(num_chunks + i));
        } else {
          std::shuffle(all.begin(), all.end(), rng_);
          const int64_t keep = c.sel == Sel::kTable
                                   ? per_head
                                   : std::max<int64_t>(1, std::uniform_int_distribution<int64_t>(1, range)(rng_));
          pick.assign(all.begin(), all.begin() + keep);
          if (c.sel == Sel::kCsr && std::find(pick.begin(), pick.end(), num_chunks - 1) == pick.end()) {
            pick.push_back(static_cast<int32_t>(num_chunks - 1));  // the newest chunk, as Quest keeps it
          }
          std::sort(pick.begin(), pick.end());
        }
        chunks.insert(chunks.end(), pick.begin(), pick.end());
        indptr.push_back(static_cast<int32_t>(chunks.size()));
      }
    }
    std::vector<uint8_t> valid;
    if (c.mask || c.empty_head) {
      valid.assign(static_cast<size_t>(c.kv_heads) * logical * c.page_size, 1);
      std::bernoulli_distribution keep(0.8);
      for (auto& v : valid) v = !c.mask || keep(rng_) ? 1 : 0;
      if (c.empty_head && c.sel == Sel::kDense) {
        std::fill(valid.begin(), valid.begin() + logical * c.page_size, 0);
      }
    }
    Tensor cpu_table, gpu_table;
    if (c.sel == Sel::kTable) {
      cpu_table = Tensor::Empty(DType::kInt32, {c.kv_heads, per_head});
      std::copy(chunks.begin(), chunks.end(), cpu_table.data<int32_t>());
      gpu_table = gpu.Allocate(DType::kInt32, {c.kv_heads, per_head});
      gpu.CopyFromHost(cpu_table, gpu_table);
    }
    Tensor q = Random({c.n, c.heads, c.head_dim}, 2.0f);
    Tensor kp = Random({num_pages, c.page_size, c.kv_heads, c.head_dim}, 2.0f);
    Tensor vp = Random({num_pages, c.page_size, c.kv_heads, c.head_dim});
    auto on_gpu = [&](const Tensor& host) {
      absl::StatusOr<Tensor> t = gpu.UploadWeight(host);
      EXPECT_TRUE(t.ok()) << t.status();
      return *t;
    };
    Tensor cq = OnCpu(q), ck = OnCpu(kp), cv = OnCpu(vp), gq = on_gpu(q), gk = on_gpu(kp), gv = on_gpu(vp);

    const size_t weight_count = static_cast<size_t>(c.heads) * c.kv_len;
    std::vector<float> cpu_sum(weight_count), cpu_last(weight_count);
    std::vector<float> gpu_sum(weight_count, NAN), gpu_last(weight_count, NAN);
    auto args = [&](const Tensor& qq, const Tensor& kk, const Tensor& vv, const Tensor& sel_table, float* sum,
                    float* last) {
      PagedAttentionArgs a;
      a.q = &qq;
      a.k_pages = &kk;
      a.v_pages = &vv;
      a.page_table = table;
      a.kv_len = c.kv_len;
      a.page_size = c.page_size;
      if (c.sel == Sel::kCsr) {
        a.selected_indptr = indptr;
        a.selected_chunks = chunks;
      } else if (c.sel == Sel::kTable) {
        a.selected_table = &sel_table;
      }
      a.selection_chunk = chunk;
      a.token_valid = valid.empty() ? nullptr : valid.data();
      a.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
      if (c.weights) {
        a.attention_sum = sum;
        a.attention_last = last;
      }
      return a;
    };
    Tensor cout = cpu_->Allocate(DType::kFloat32, {c.n, c.heads * c.head_dim});
    cpu_->PagedAttention(args(cq, ck, cv, cpu_table, cpu_sum.data(), cpu_last.data()), cout);
    Tensor gout = gpu.Allocate(c.dtype, {c.n, c.heads * c.head_dim});
    Poison(gpu, gout);
    gpu.PagedAttention(args(gq, gk, gv, gpu_table, gpu_sum.data(), gpu_last.data()), gout);
    Tensor want = cpu_->ToHost(cout), got = gpu.ToHost(gout);
    ASSERT_EQ(want.numel(), got.numel());
    Compare(want.data<float>(), got.data<float>(), want.numel(), Name(c), kBf16Tol);
    if (c.empty_head) {  // the group of KV head 0 outputs exact zeros
      const int64_t group = c.heads / c.kv_heads;
      for (int64_t t = 0; t < c.n; ++t) {
        for (int64_t i = 0; i < group * c.head_dim; ++i) {
          ASSERT_EQ(got.data<float>()[t * c.heads * c.head_dim + i], 0.0f) << "token " << t << " elem " << i;
        }
      }
    }
    if (c.weights) {
      Compare(cpu_sum.data(), gpu_sum.data(), weight_count, "  attention_sum", kBf16Tol);
      Compare(cpu_last.data(), gpu_last.data(), weight_count, "  attention_last", kBf16Tol);
    }
  }

  std::unique_ptr<Backend> gpu_f16_;
};

TEST_F(CudaAttentionTest, FixedShapes) {
  const std::vector<AttnCase> cases = {
      // heads kv d page kv_len n sel div holes mask weights
      {4, 4, 64, 16, 37, 1},                                               // GQA 1, decode, last page partly filled
      {8, 2, 64, 16, 100, 100, Sel::kDense, 1, false, false, true},        // GQA 4, whole prefill, causal
      {16, 2, 128, 16, 300, 1, Sel::kCsr},                                 // GQA 8, Quest-style page selection
      {8, 1, 8, 4, 23, 5},                                                 // tiny head_dim, prefill chunk
      {32, 8, 128, 16, 1000, 1, Sel::kDense, 1, true, true, true},         // holes + eviction mask + weights
      {8, 2, 256, 16, 77, 13, Sel::kCsr, 4, false, true, true},            // sub-page chunks, mask, chunk
      {12, 4, 64, 8, 513, 64, Sel::kCsr, 2, true, false, true},            // selection over holes, group 3
      {16, 2, 128, 16, 1, 1, Sel::kDense, 1, false, false, true},          // first token
      {8, 8, 64, 16, 4096, 1, Sel::kCsr},                                  // long decode, few pages
      {32, 8, 128, 16, 4999, 1, Sel::kTable, 2},                           // device table, chunk 8 in pages of 16
      {32, 4, 128, 16, 3001, 1, Sel::kTable, 2, true, true, true, true},   // table past the context, holes, mask
      {32, 8, 128, 16, 2048, 1, Sel::kCsr, 1, false, false, true, false, true},  // KV head 0: empty CSR row
      {32, 8, 128, 16, 2048, 1, Sel::kTable, 2, false, false, true, false, true},  // KV head 0: table past end
      {32, 8, 64, 16, 2500, 3, Sel::kDense, 1, false, true, true, false, true},  // KV head 0 fully masked
      {32, 32, 128, 16, 20000, 1},                                         // MHA, many splits
      {32, 2, 128, 16, 20011, 1, Sel::kDense, 1, true, true, true},        // GQA 16 (two head tiles), splits
      {8, 1, 128, 16, 30000, 1, Sel::kCsr, 2, false, true},                // one KV head: the most splits
      {28, 4, 128, 16, 9000, 1, Sel::kDense, 1, false, false, true},       // group 7 (a masked head)
      {16, 4, 96, 16, 700, 2},                                             // head_dim 96: simple kernel
      {32, 8, 128, 16, 5000, 7, Sel::kDense, 1, false, false, true},       // small prefill chunk, long context
      {16, 4, 256, 16, 6000, 1, Sel::kDense, 1, true},                     // head_dim 256, splits
  };
  for (const AttnCase& c : cases) Run(c);
}

TEST_F(CudaAttentionTest, F16) {
  const std::vector<AttnCase> cases = {
      {32, 8, 128, 16, 4100, 1, Sel::kDense, 1, false, false, true},
      {32, 32, 64, 16, 777, 1, Sel::kCsr, 2, true, true},
      {16, 2, 128, 16, 3000, 1, Sel::kTable, 2, false, true, false, true},
      {8, 2, 128, 16, 300, 9, Sel::kDense, 1, false, true, true},
      {8, 2, 256, 16, 12000, 1},
  };
  for (AttnCase c : cases) {
    c.dtype = DType::kFloat16;
    Run(c);
  }
}

// Random shapes: GQA 1/4/8, head_dim 64/128 (sometimes 256), ragged
// contexts up to ~5000, decode and small prefill chunks, every selection
// kind, holes, masks.
TEST_F(CudaAttentionTest, RandomSweep) {
  std::uniform_int_distribution<int> pick(0, 1 << 20);
  auto one_of = [&](std::initializer_list<int> v) { return *(v.begin() + pick(rng_) % v.size()); };
  std::uniform_real_distribution<double> log_len(0.0, std::log(5000.0));
  for (int i = 0; i < 90; ++i) {
    AttnCase c{};
    const int group = one_of({1, 4, 8});
    c.kv_heads = group == 1 ? one_of({1, 2, 8, 32}) : one_of({1, 2, 4, 8});
    c.heads = c.kv_heads * group;
    c.head_dim = i % 10 == 9 ? 256 : one_of({64, 128});
    c.page_size = one_of({16, 16, 8, 32});
    c.kv_len = std::max<int64_t>(1, static_cast<int64_t>(std::exp(log_len(rng_))));
    c.n = pick(rng_) % 3 == 0 ? 1 + pick(rng_) % std::min<int64_t>(c.kv_len, 24) : 1;
    c.sel = static_cast<Sel>(pick(rng_) % 3);
    c.chunk_div = one_of({1, 2});
    c.holes = pick(rng_) % 4 == 0;
    c.mask = pick(rng_) % 4 == 0;
    c.weights = pick(rng_) % 5 == 0;
    c.over_context = c.sel != Sel::kDense && pick(rng_) % 3 == 0;
    c.empty_head = pick(rng_) % 10 == 0;
    Run(c);
    if (HasFatalFailure()) return;
  }
}

// Long splits hand their tiles out at run time (dynamic splits: chunks
// from a per-unit counter). The plan is checked for each shape, so these
// cases cannot quietly run the static path; each shape runs twice, as the
// counters must be left at zero.
TEST_F(CudaAttentionTest, DynamicSplits) {
  const std::vector<AttnCase> cases = {
      {32, 32, 128, 16, 20000, 1, Sel::kDense, 1, true, true, true},          // MHA, holes, mask, weights
      {32, 32, 64, 16, 24000, 3, Sel::kDense, 1, false, false, true},         // a 3-token chunk (causal), lse
      {16, 16, 256, 16, 24000, 1, Sel::kDense, 1, true},                      // head_dim 256
      {64, 16, 128, 16, 40000, 1},                                           // GQA 4: tensor cores
      {40, 40, 128, 16, 30000, 1, Sel::kDense, 1, false, false, false, false, true},  // KV head 0 masked
  };
  for (const AttnCase& c : cases) {
    cuda::PagedAttentionParams p;
    p.n = static_cast<int>(c.n);
    p.num_heads = c.heads;
    p.num_kv_heads = c.kv_heads;
    p.head_dim = c.head_dim;
    p.kv_len = c.kv_len;
    p.max_candidates = c.kv_len;
    cuda::PlanPagedAttention(cuda::ElemType::kBFloat16, p);
    EXPECT_TRUE(p.dynamic_splits) << Name(c) << ": " << p.num_splits << " splits of " << p.split_len;
    for (int r = 0; r < 2; ++r) {
      Run(c);
      if (HasFatalFailure()) return;
    }
  }
  AttnCase f16{32, 32, 128, 16, 20000, 1, Sel::kDense, 1, false, true};
  f16.dtype = DType::kFloat16;
  Run(f16);
}

// The same backend twice on one shape: the split counters must be left at
// zero, and the result must not change.
TEST_F(CudaAttentionTest, RepeatedCallsAgree) {
  for (int r = 0; r < 3; ++r) Run({32, 8, 128, 16, 16384, 1, Sel::kDense, 1, false, false, true});
}

// PagedAttentionBatch: a batch of decode tokens of ragged lengths (1 to
// ~20000: one split or many) over one shared pool, each dense or with a
// device selection table, some with page-table holes, against the CPU's
// per-sequence PagedAttention. Members that cannot join the batched launch
// (a CSR selection, attention weights, a prefill chunk) are mixed in, so
// the backend's partition is checked too. Each batch runs twice (the split
// counters must be left at zero).
struct BatchCase {
  int heads, kv_heads, head_dim, seqs;
  bool mixed = false;  // add members that go through PagedAttention alone
  DType dtype = DType::kBFloat16;
};

TEST_F(CudaAttentionTest, BatchedDecode) {
  const std::vector<BatchCase> cases = {
      {32, 32, 128, 8},                              // MHA, CUDA-core kernel
      {32, 8, 128, 8},                               // GQA 4, tensor cores
      {32, 4, 128, 5, true},                         // GQA 8, mixed members
      {16, 16, 64, 12},                              // head_dim 64
      {8, 2, 256, 6, true},                          // head_dim 256
      {28, 4, 128, 7},                               // group 7 (a masked head)
      {32, 2, 128, 3},                               // group 16: two head tiles
      {32, 8, 128, 9, true, DType::kFloat16},        // f16
      {32, 32, 64, 2, false, DType::kFloat16},       // two members
      {32, 8, 128, 40},                              // many sequences
  };
  constexpr int kPage = 16;
  std::uniform_real_distribution<double> log_len(0.0, std::log(20000.0));
  std::uniform_int_distribution<int> coin(0, 1 << 20);
  for (const BatchCase& c : cases) {
    const std::string name = "batch H=" + std::to_string(c.heads) + " KV=" + std::to_string(c.kv_heads) +
                             " d=" + std::to_string(c.head_dim) + " seqs=" + std::to_string(c.seqs) +
                             (c.mixed ? " mixed" : "") + " " + DTypeName(c.dtype);
    SCOPED_TRACE(name);
    Backend& gpu = Gpu(c.dtype);
    // Lengths: a first token, a long one, the rest log-uniform.
    std::vector<int64_t> lens(c.seqs);
    for (int i = 0; i < c.seqs; ++i) {
      lens[i] = i == 0 ? 1 : i == 1 ? 19999 : std::max<int64_t>(1, static_cast<int64_t>(std::exp(log_len(rng_))));
    }
    std::vector<int64_t> ns(c.seqs, 1);
    if (c.mixed) ns[c.seqs - 1] = std::min<int64_t>(lens[c.seqs - 1], 5);  // a prefill chunk
    int64_t total_pages = 0;
    for (int64_t len : lens) total_pages += (len + kPage - 1) / kPage;
    std::vector<int32_t> pool_pages(total_pages + 2);
    std::iota(pool_pages.begin(), pool_pages.end(), 0);
    std::shuffle(pool_pages.begin(), pool_pages.end(), rng_);
    const int64_t num_pages = total_pages + 2;
    Tensor kp = Random({num_pages, kPage, c.kv_heads, c.head_dim}, 2.0f);
    Tensor vp = Random({num_pages, kPage, c.kv_heads, c.head_dim});
    Tensor ck = OnCpu(kp), cv = OnCpu(vp);
    Tensor gk = *gpu.UploadWeight(kp), gv = *gpu.UploadWeight(vp);

    // Per sequence: page table, selection, q, outputs.
    enum class Kind { kDense, kTable, kCsr, kWeights };
    struct Member {
      std::vector<int32_t> table, indptr, chunks;
      Kind kind = Kind::kDense;
      Tensor cq, gq, ctable, gtable, cout, gout;
      std::vector<float> sum, last;
    };
    std::vector<Member> ms(c.seqs);
    int64_t next_page = 0;
    for (int i = 0; i < c.seqs; ++i) {
      Member& m = ms[i];
      const int64_t logical = (lens[i] + kPage - 1) / kPage;
      m.table.assign(pool_pages.begin() + next_page, pool_pages.begin() + next_page + logical);
      next_page += logical;
      if (coin(rng_) % 4 == 0) {  // holes below the newest page, as eviction leaves them
        for (int64_t p = 1; p + 1 < logical; p += 3) m.table[p] = -1;
      }
      m.kind = coin(rng_) % 2 == 0 ? Kind::kDense : Kind::kTable;
      if (c.mixed && i == 2) m.kind = Kind::kCsr;
      if (c.mixed && i == 3) m.kind = Kind::kWeights;
      if (m.kind == Kind::kTable || m.kind == Kind::kCsr) {
        // Quest's shape: k best pages of each KV head, then the newest.
        const int64_t per_head = std::min<int64_t>(logical, 1 + coin(rng_) % 64);
        m.indptr.push_back(0);
        for (int g = 0; g < c.kv_heads; ++g) {
          std::vector<int32_t> all(logical - 1);
          std::iota(all.begin(), all.end(), 0);
          std::shuffle(all.begin(), all.end(), rng_);
          all.resize(per_head - 1);
          std::sort(all.begin(), all.end());
          all.push_back(static_cast<int32_t>(logical - 1));
          m.chunks.insert(m.chunks.end(), all.begin(), all.end());
          m.indptr.push_back(static_cast<int32_t>(m.chunks.size()));
        }
        if (m.kind == Kind::kTable) {
          m.ctable = Tensor::Empty(DType::kInt32, {c.kv_heads, per_head});
          std::copy(m.chunks.begin(), m.chunks.end(), m.ctable.data<int32_t>());
          m.gtable = gpu.Allocate(DType::kInt32, {c.kv_heads, per_head});
          gpu.CopyFromHost(m.ctable, m.gtable);
        }
      }
      Tensor q = Random({ns[i], c.heads, c.head_dim}, 2.0f);
      m.cq = OnCpu(q);
      m.gq = *gpu.UploadWeight(q);
      m.cout = cpu_->Allocate(DType::kFloat32, {ns[i], c.heads * c.head_dim});
      m.gout = gpu.Allocate(c.dtype, {ns[i], c.heads * c.head_dim});
      if (m.kind == Kind::kWeights) {
        m.sum.assign(static_cast<size_t>(c.heads) * lens[i], 0.0f);
        m.last.assign(m.sum.size(), 0.0f);
      }
    }
    auto args = [&](int i, bool on_gpu) {
      Member& m = ms[i];
      PagedAttentionArgs a;
      a.q = on_gpu ? &m.gq : &m.cq;
      a.k_pages = on_gpu ? &gk : &ck;
      a.v_pages = on_gpu ? &gv : &cv;
      a.page_table = m.table;
      a.kv_len = lens[i];
      a.page_size = kPage;
      a.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
      if (m.kind == Kind::kTable) a.selected_table = on_gpu ? &m.gtable : &m.ctable;
      if (m.kind == Kind::kCsr) {
        a.selected_indptr = m.indptr;
        a.selected_chunks = m.chunks;
      }
      if (m.kind == Kind::kWeights && on_gpu) {
        a.attention_sum = m.sum.data();
        a.attention_last = m.last.data();
      }
      return a;
    };
    for (int i = 0; i < c.seqs; ++i) cpu_->PagedAttention(args(i, false), ms[i].cout);
    for (int rep = 0; rep < 2; ++rep) {
      std::vector<PagedAttentionArgs> gargs;
      std::vector<Tensor*> gouts;
      for (int i = 0; i < c.seqs; ++i) {
        Poison(gpu, ms[i].gout);
        gargs.push_back(args(i, true));
        gouts.push_back(&ms[i].gout);
      }
      gpu.PagedAttentionBatch(gargs, gouts);
      for (int i = 0; i < c.seqs; ++i) {
        Tensor want = cpu_->ToHost(ms[i].cout), got = gpu.ToHost(ms[i].gout);
        const char* kind = ms[i].kind == Kind::kDense ? "dense" : ms[i].kind == Kind::kTable ? "table"
                           : ms[i].kind == Kind::kCsr ? "csr" : "weights";
        Compare(want.data<float>(), got.data<float>(), want.numel(),
                "  seq " + std::to_string(i) + " kv_len=" + std::to_string(lens[i]) + " n=" +
                    std::to_string(ns[i]) + " " + kind + " rep " + std::to_string(rep),
                kBf16Tol);
      }
      if (HasFailure()) return;
    }
  }
}

// Decode bandwidth of the attention op against a D2D copy of the same
// bytes (as tools/bench/attention_bench does), only with
// QUEST_ATTN_BENCH=1: a quick check of the kernel alone on the GPU machine.
TEST_F(CudaAttentionTest, DecodeBandwidth) {
  if (std::getenv("QUEST_ATTN_BENCH") == nullptr) GTEST_SKIP() << "set QUEST_ATTN_BENCH=1";
  constexpr int kSeqs = 8, kPage = 16, kD = 128;
  struct Shape { const char* name; int heads, kv; };
  for (const Shape s : {Shape{"MHA 32/32", 32, 32}, Shape{"GQA 32/8", 32, 8}}) {
    for (int64_t ctx : {4096, 32768, 131072}) {
      const int64_t pages_per_seq = ctx / kPage, num_pages = pages_per_seq * kSeqs;
      Tensor k = gpu_->Allocate(DType::kBFloat16, {num_pages, kPage, s.kv, kD});
      Tensor v = gpu_->Allocate(DType::kBFloat16, {num_pages, kPage, s.kv, kD});
      ASSERT_EQ(cudaMemset(k.raw_data(), 0x3c, k.nbytes()), cudaSuccess);
      ASSERT_EQ(cudaMemset(v.raw_data(), 0x3b, v.nbytes()), cudaSuccess);
      std::vector<Tensor> qs, outs;
      for (int i = 0; i < kSeqs; ++i) {
        qs.push_back(OnGpu(Random({1, s.heads, kD})));
        outs.push_back(gpu_->Allocate(DType::kBFloat16, {1, s.heads * kD}));
      }
      std::vector<std::vector<int32_t>> tables(kSeqs, std::vector<int32_t>(pages_per_seq));
      for (int q = 0; q < kSeqs; ++q) {
        for (int64_t i = 0; i < pages_per_seq; ++i) tables[q][i] = static_cast<int32_t>(i * kSeqs + q);
      }
      const double kv_bytes = static_cast<double>(ctx) * s.kv * kD * 2 * 2;
      // Median per-call time over synchronised batches; `enqueue` gets the
      // host time to enqueue the batch (the calls' host cost).
      auto time = [&](const std::function<void(int)>& fn, double* enqueue = nullptr) {
        for (int i = 0; i < 3; ++i) fn(i);
        cudaDeviceSynchronize();
        std::vector<double> ts, es;
        const int n = ctx >= 131072 ? 10 : 40;
        for (int r = 0; r < 5; ++r) {
          const auto a = std::chrono::steady_clock::now();
          for (int i = 0; i < n; ++i) fn(i);
          const auto b = std::chrono::steady_clock::now();
          cudaDeviceSynchronize();
          ts.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - a).count() / n);
          es.push_back(std::chrono::duration<double>(b - a).count() / n);
        }
        std::sort(ts.begin(), ts.end());
        std::sort(es.begin(), es.end());
        if (enqueue != nullptr) *enqueue = es[2];
        return ts[2];
      };
      char* base = static_cast<char*>(k.raw_data());
      const size_t copy_bytes = static_cast<size_t>(kv_bytes);
      const double copy_s = time([&](int i) {
        cudaMemcpyAsync(base + (i % 4) * copy_bytes, base + ((i + 2) % 4) * copy_bytes, copy_bytes,
                        cudaMemcpyDeviceToDevice, 0);
      });
      auto attend = [&](int i, absl::Span<const int32_t> indptr, absl::Span<const int32_t> chunks) {
        PagedAttentionArgs a;
        a.q = &qs[i % kSeqs];
        a.k_pages = &k;
        a.v_pages = &v;
        a.page_table = tables[i % kSeqs];
        a.kv_len = ctx;
        a.page_size = kPage;
        a.selected_indptr = indptr;
        a.selected_chunks = chunks;
        a.scale = 1.0f / std::sqrt(static_cast<float>(kD));
        gpu_->PagedAttention(a, outs[i % kSeqs]);
      };
      double attn_host = 0;
      const double attn_s = time([&](int i) { attend(i, {}, {}); }, &attn_host);
      char* scratch = nullptr;
      ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&scratch), size_t{128} << 20), cudaSuccess);
      // A floor: back-to-back 4-byte memsets.
      double floor_host = 0;
      const double floor_s = time([&](int i) { cudaMemsetAsync(base, 0, 4, 0); }, &floor_host);
      std::printf("BW %-10s ctx %6lld: dense enqueue %.1f us/call; memset floor %.1f us (enqueue %.1f)\n", s.name,
                  static_cast<long long>(ctx), attn_host * 1e6, floor_s * 1e6, floor_host * 1e6);
      for (int budget : {256, 1024, 2048, 4096}) {
        const int64_t picks = budget / kPage - 1;
        std::vector<int32_t> indptr(s.kv + 1, 0), chunks;
        for (int g = 0; g < s.kv; ++g) {
          for (int64_t j = 0; j < picks; ++j) chunks.push_back(static_cast<int32_t>(j * (pages_per_seq - 1) / picks));
          chunks.push_back(static_cast<int32_t>(pages_per_seq - 1));
          indptr[g + 1] = static_cast<int32_t>(chunks.size());
        }
        double host = 0;
        const double t = time([&](int i) { attend(i, indptr, chunks); }, &host);
        // The same selection every call and one sequence: no uploads at all.
        double host1 = 0;
        const double t1 = time([&](int) { attend(0, indptr, chunks); }, &host1);
        const double bytes = static_cast<double>(budget) * s.kv * kD * 2 * 2;
        // Device time alone: the calls queue up behind a long copy on the
        // legacy stream (the backend's stream is a blocking one), so the
        // host's enqueue cost is hidden; minus the copy's own time.
        const size_t blk = size_t{64} << 20;
        auto blocker = [&] {
          for (int r = 0; r < 24; ++r) {
            cudaMemcpyAsync(scratch, scratch + blk, blk, cudaMemcpyDeviceToDevice, 0);
          }
        };
        double blocker_s = 1e30, queued_s = 1e30;
        const int nq = 40;
        for (int r = 0; r < 3; ++r) {
          cudaDeviceSynchronize();
          auto a = std::chrono::steady_clock::now();
          blocker();
          cudaDeviceSynchronize();
          blocker_s = std::min(blocker_s, std::chrono::duration<double>(std::chrono::steady_clock::now() - a).count());
          a = std::chrono::steady_clock::now();
          blocker();
          for (int i = 0; i < nq; ++i) attend(i, indptr, chunks);
          cudaDeviceSynchronize();
          queued_s = std::min(queued_s, std::chrono::duration<double>(std::chrono::steady_clock::now() - a).count());
        }
        std::printf("BW %-10s ctx %6lld B %4d: %5.1f us (enqueue %.1f) = %5.1f%% of copy; one seq %5.1f us "
                    "(enqueue %.1f); device alone %5.1f us\n",
                    s.name, static_cast<long long>(ctx), budget, t * 1e6, host * 1e6,
                    100 * (bytes / t) / (2 * kv_bytes / copy_s), t1 * 1e6, host1 * 1e6,
                    (queued_s - blocker_s) / nq * 1e6);
      }
      cudaFree(scratch);
      ASSERT_EQ(cudaGetLastError(), cudaSuccess);
      const double copy_bw = 2 * kv_bytes / copy_s, attn_bw = kv_bytes / attn_s;
      std::printf("BW %-10s ctx %6lld: copy %5.0f GB/s, attention %5.0f GB/s = %5.1f%% of copy (%.1f us)\n",
                  s.name, static_cast<long long>(ctx), copy_bw / 1e9, attn_bw / 1e9, 100 * attn_bw / copy_bw,
                  attn_s * 1e6);
    }
  }
}

}  // namespace
}  // namespace quest::ops
