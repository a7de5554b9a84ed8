// Quest's ops on the GPU (ops/cuda/quest_kernels.cu) against the CPU
// reference (ops/cpu) on fresh random inputs:
//  - UpdatePageBounds: bit-identical bounds (bf16-representable Keys; min
//    and max are exact) after a prefill, 1-token appends, re-appends from
//    mid-page over overwritten Keys, with page-table holes and Quest pages
//    smaller than pool pages. Stale random bounds are there beforehand.
//  - SelectTopPages: rows ascending, no duplicates, the current page last;
//    the same pages as the CPU except where fp32 summation order flips a
//    near-tie: every page picked by one side only must score (float64
//    reference) within 1e-3 of the score scale of the k-th best. With
//    integer-valued inputs (exact sums) the selection must match exactly,
//    ties included. Outputs are poisoned before each run.
//  - Every bounds and select case runs with bf16/f32 bounds and with FP8
//    E4M3 bounds (min rounded down, max rounded up: runtime/fp8.h), the
//    bounds bit-identical to the CPU's codes, selections as above over the
//    codes' values.
//  - Every select implementation (TopPagesParams::variant) gives the same
//    rows; a timing printout (not asserted) against a device-to-device copy
//    of the same bounds bytes.
//
// Needs a GPU (tags = ["gpu"]).

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "ops/cpu/cpu_backend.h"
#include "ops/cuda/cuda_backend.h"
#include "ops/cuda/testing/cpu_gpu_test.h"
#include "ops/cuda/quest_kernels.h"
#include "runtime/fp8.h"

namespace quest::ops {
namespace {

#define CUDA_OK(expr)                                                              \
  do {                                                                             \
    const cudaError_t err_ = (expr);                                               \
    ASSERT_EQ(err_, cudaSuccess) << #expr << ": " << cudaGetErrorString(err_);     \
  } while (0)

float Bf16(float x) { return BFloat16ToFloat(FloatToBFloat16(x)); }

class QuestKernelsTest : public testing::CpuGpuTest {
 protected:
  QuestKernelsTest() : CpuGpuTest(20240612) {}

  // Device int32 storage filled with a value no output may hold.
  Tensor PoisonedIndices(std::vector<int64_t> shape) {
    Tensor t = gpu_->Allocate(DType::kInt32, shape);
    Tensor host = Tensor::Empty(DType::kInt32, shape);
    std::fill(host.data<int32_t>(), host.data<int32_t>() + host.numel(), -77);
    gpu_->CopyFromHost(host, t);
    return t;
  }

  // Exact equality of two float tensors' values (both read back; FP8 codes
  // compare as their decoded values, which tell every code apart).
  void ExpectBitIdentical(const Tensor& cpu_t, const Tensor& gpu_t, const std::string& what) {
    Tensor want = cpu_->ToHost(cpu_t), got = gpu_->ToHost(gpu_t);
    ASSERT_EQ(cpu_t.dtype() == DType::kFloat8E4M3, gpu_t.dtype() == DType::kFloat8E4M3) << what;
    if (want.dtype() != DType::kFloat32) want = want.ToFloat32();
    if (got.dtype() != DType::kFloat32) got = got.ToFloat32();
    ASSERT_EQ(want.numel(), got.numel());
    int64_t bad = 0, first = -1;
    for (int64_t i = 0; i < want.numel(); ++i) {
      if (std::memcmp(&want.data<float>()[i], &got.data<float>()[i], sizeof(float)) != 0) {
        if (first < 0) first = i;
        ++bad;
      }
    }
    EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << want.numel() << " differ, first at " << first
                      << " (cpu " << want.data<float>()[std::max<int64_t>(first, 0)] << ", gpu "
                      << got.data<float>()[std::max<int64_t>(first, 0)] << ")";
  }

  // A host f32 tensor's values as FP8 codes on `backend` (rounded down,
  // or up with round_up).
  Tensor Fp8On(Backend& backend, const Tensor& host, bool round_up) {
    Tensor codes = Tensor::Empty(DType::kFloat8E4M3, host.shape());
    for (int64_t i = 0; i < host.numel(); ++i) {
      const float x = host.data<float>()[i];
      codes.data<uint8_t>()[i] = round_up ? fp8::E4M3RoundUp(x) : fp8::E4M3RoundDown(x);
    }
    Tensor t = backend.Allocate(DType::kFloat8E4M3, host.shape());
    backend.CopyFromHost(codes, t);
    return t;
  }
};

// [rows, 2, d] bounds rounded outward to FP8 values (min down, max up; NaN
// stays NaN), as host f32.
Tensor RoundBoundsToFp8(const Tensor& bounds, int d) {
  Tensor out = Tensor::Empty(DType::kFloat32, bounds.shape());
  for (int64_t i = 0; i < bounds.numel(); ++i) {
    const float x = bounds.data<float>()[i];
    const bool hi = (i / d) % 2 == 1;
    out.data<float>()[i] = fp8::E4M3ToFloat(hi ? fp8::E4M3RoundUp(x) : fp8::E4M3RoundDown(x));
  }
  return out;
}

// Page-major host bounds [pages, kv_heads, 2, d] (what the select tests
// build and the float64 reference reads) in the backends' tile layout
// (runtime/page_bounds_layout.h), host f32; a last tile's spare pages are 0.
Tensor ToTileLayout(const Tensor& page_major) {
  const int64_t pages = page_major.dim(0), kv = page_major.dim(1), d = page_major.dim(3);
  Tensor t = Tensor::Zeros(DType::kFloat32, PageBoundsShape(pages, kv, d));
  const float* from = page_major.data<float>();
  for (int64_t p = 0; p < pages; ++p) {
    for (int64_t g = 0; g < kv; ++g) {
      for (int side = 0; side < 2; ++side) {
        for (int64_t i = 0; i < d; ++i) t.data<float>()[BoundsIndex(p, g, i, side, kv, d)] = *from++;
      }
    }
  }
  return t;
}

// ---------------------------------------------------------------- bounds

struct BoundsCase {
  int page_size, bound_page, kv_heads, head_dim;
  int64_t len;
  bool holes;
  float key_scale = 2.0f;  // Keys uniform in [-key_scale, key_scale]
};

TEST_F(QuestKernelsTest, UpdatePageBounds) {
  const std::vector<BoundsCase> cases = {
      {16, 16, 8, 128, 1000, false},  // Llama-style
      {16, 8, 2, 64, 777, true},      // Quest page 8 inside pool pages of 16, holes
      {32, 16, 4, 128, 300, true},
      {16, 16, 1, 36, 100, false},    // head_dim not a multiple of 8 (scalar path)
      {16, 4, 3, 256, 129, true},
      {16, 16, 8, 128, 32768 - 5, false},  // a long prefill (the wide launch)
      {16, 16, 2, 128, 300, true, 700.0f},  // beyond FP8's +-448 (saturates)
      {16, 8, 2, 64, 300, false, 0.03f},    // FP8 subnormals (below 2^-6)
  };
  for (const bool fp8 : {false, true})
  for (const BoundsCase& c : cases) {
    const std::string name = "bounds page=" + std::to_string(c.page_size) + " quest=" +
                             std::to_string(c.bound_page) + " kv=" + std::to_string(c.kv_heads) +
                             " d=" + std::to_string(c.head_dim) + " len=" + std::to_string(c.len) +
                             " keys=" + std::to_string(c.key_scale) + (c.holes ? " holes" : "") +
                             (fp8 ? " fp8" : "");
    SCOPED_TRACE(name);
    const int64_t total = c.len + 40;  // room for the appends
    const int64_t logical = (total + c.page_size - 1) / c.page_size;
    const int64_t physical = logical + 3;
    std::vector<int32_t> table(physical);
    std::iota(table.begin(), table.end(), 0);
    std::shuffle(table.begin(), table.end(), rng_);
    table.resize(logical);
    if (c.holes) {
      for (int64_t p = 1; p + 2 < logical; p += 3) table[p] = -1;
    }
    Tensor keys = Random({physical, c.page_size, c.kv_heads, c.head_dim}, c.key_scale);
    const int64_t capacity = (total + c.bound_page - 1) / c.bound_page + 2;
    Tensor stale = Random(PageBoundsShape(capacity, c.kv_heads, c.head_dim), 1.5f * c.key_scale);
    Tensor ck = OnCpu(keys), gk = OnGpu(keys);
    Tensor cb = fp8 ? Fp8On(*cpu_, stale, false) : OnCpu(stale);
    Tensor gb = fp8 ? Fp8On(*gpu_, stale, false) : OnGpu(stale);
    auto fold = [&](int64_t begin, int64_t end, const std::string& what) {
      PageBoundsArgs a;
      a.page_table = table;
      a.page_size = c.page_size;
      a.bound_page = c.bound_page;
      a.begin = begin;
      a.end = end;
      a.k_pages = &ck;
      cpu_->UpdatePageBounds(a, cb);
      a.k_pages = &gk;
      gpu_->UpdatePageBounds(a, gb);
      ExpectBitIdentical(cb, gb, name + ": " + what + " [" + std::to_string(begin) + ", " +
                                     std::to_string(end) + ")");
    };
    fold(0, c.len, "prefill");
    if (c.holes) fold(c.page_size + 3, c.page_size + 4, "1-token fold into a hole");
    int64_t len = c.len;
    for (int t = 0; t < 20; ++t, ++len) fold(len, len + 1, "1-token append");
    // Overwrite Keys from mid-page on and fold them again from there (a
    // widen of the page's earlier Keys), then from the page start.
    int64_t s = len - 13;
    if (s % c.bound_page == 0) ++s;
    {
      const int64_t row = int64_t{c.kv_heads} * c.head_dim;
      std::uniform_real_distribution<float> dist(-2.0f * c.key_scale, 2.0f * c.key_scale);
      for (int64_t pos = s; pos < len; ++pos) {
        const int32_t phys = table[pos / c.page_size];
        if (phys < 0) continue;
        float* k = keys.data<float>() + (int64_t{phys} * c.page_size + pos % c.page_size) * row;
        for (int64_t i = 0; i < row; ++i) k[i] = Bf16(dist(rng_));
      }
      ck = OnCpu(keys);
      gk = OnGpu(keys);
    }
    fold(s, len, "re-append from mid-page");
    fold(s - s % c.bound_page, len, "refold from the page start");
    for (int t = 0; t < 20; ++t, ++len) fold(len, len + 1, "1-token append after refold");
    // A prefill chunk that starts mid-page.
    const int64_t mid = c.len / 2 + 3;
    fold(mid, mid + 50 < len ? mid + 50 : len, "chunk from mid-page");
  }
}

// ---------------------------------------------------------------- select

struct SelectCase {
  int64_t num_pages;
  int heads, kv_heads, head_dim;
};

std::string Name(const SelectCase& c, int64_t k, bool sum, bool fp8) {
  return "select pages=" + std::to_string(c.num_pages) + " k=" + std::to_string(k) + " H=" +
         std::to_string(c.heads) + " KV=" + std::to_string(c.kv_heads) + " d=" +
         std::to_string(c.head_dim) + (sum ? " sum" : " max") + (fp8 ? " fp8" : "");
}

// float64 scores [kv_heads][num_pages - 1] and the score scale (the largest
// sum of |terms| of a page).
void ReferenceScores(const Tensor& q, const Tensor& bounds, const SelectCase& c, bool sum,
                     std::vector<std::vector<double>>* scores, double* scale) {
  const int d = c.head_dim, group = c.heads / c.kv_heads;
  const int64_t n = c.num_pages - 1;
  scores->assign(c.kv_heads, std::vector<double>(n));
  *scale = 0.0;
  for (int g = 0; g < c.kv_heads; ++g) {
    for (int64_t p = 0; p < n; ++p) {
      const float* lo = bounds.data<float>() + (p * c.kv_heads + g) * 2 * d;
      const float* hi = lo + d;
      double combined = 0.0, mag = 0.0;
      bool nan_first = false;
      for (int h = 0; h < group; ++h) {
        const float* qh = q.data<float>() + (int64_t{g} * group + h) * d;
        double s = 0.0;
        for (int i = 0; i < d; ++i) {
          // max(q * lo, q * hi), reading only the side the sign picks
          // (TopPagesArgs: a zero coefficient's side is not read).
          const double x = qh[i];
          s += x < 0 ? x * lo[i] : x > 0 ? x * hi[i] : (std::isnan(x) ? x : 0.0);
          if (std::isfinite(lo[i]) && std::isfinite(hi[i])) {
            mag += std::abs(double{qh[i]}) * std::max(std::abs(lo[i]), std::abs(hi[i]));
          }
        }
        if (h == 0) {
          combined = s;
          nan_first = std::isnan(s);
        } else if (sum) {
          combined += s;
        } else if (!std::isnan(s)) {
          combined = std::max(combined, s);
        }
      }
      if (std::isnan(combined) || nan_first) combined = -INFINITY;
      (*scores)[g][p] = combined;
      *scale = std::max(*scale, mag);
    }
  }
}

// Checks one GPU selection against the CPU's; returns the pages that
// differ (near-ties).
int64_t CheckSelection(const int32_t* cpu_rows, const int32_t* gpu_rows, const SelectCase& c, int64_t k,
                       const std::vector<std::vector<double>>& ref, double scale, bool exact,
                       const std::string& what) {
  const int64_t n = c.num_pages - 1;
  int64_t flips = 0;
  for (int g = 0; g < c.kv_heads; ++g) {
    const int32_t* cr = cpu_rows + g * (k + 1);
    const int32_t* gr = gpu_rows + g * (k + 1);
    EXPECT_EQ(gr[k], n) << what << " head " << g << ": last entry";
    bool ordered = true;
    for (int64_t i = 0; i < k; ++i) {
      if (gr[i] < 0 || gr[i] >= n || (i > 0 && gr[i] <= gr[i - 1])) ordered = false;
    }
    EXPECT_TRUE(ordered) << what << " head " << g << ": not ascending distinct pages in [0, " << n << ")";
    if (!ordered) return -1;
    std::vector<int32_t> only_cpu, only_gpu;
    std::set_difference(cr, cr + k, gr, gr + k, std::back_inserter(only_cpu));
    std::set_difference(gr, gr + k, cr, cr + k, std::back_inserter(only_gpu));
    if (only_cpu.empty()) continue;
    EXPECT_FALSE(exact) << what << " head " << g << ": " << only_cpu.size()
                        << " pages differ from the CPU's (exact sums must match exactly)";
    // The k-th best reference score.
    std::vector<double> sorted = ref[g];
    std::nth_element(sorted.begin(), sorted.begin() + (k - 1), sorted.end(), std::greater<double>());
    const double kth = sorted[k - 1];
    for (const std::vector<int32_t>* side : {&only_cpu, &only_gpu}) {
      for (int32_t p : *side) {
        const double s = ref[g][p];
        const bool near = s == kth || std::abs(s - kth) <= 1e-3 * scale;
        EXPECT_TRUE(near) << what << " head " << g << ": page " << p << " (score " << s
                          << ") picked by the " << (side == &only_cpu ? "cpu" : "gpu")
                          << " only, k-th score " << kth << ", scale " << scale;
      }
    }
    flips += static_cast<int64_t>(only_cpu.size());
  }
  return flips;
}

class SelectTest : public QuestKernelsTest {
 protected:
  enum class Fill { kRandom, kIntegers, kConstant };

  void MatchesCpuOverShapes();

  // Page-major [capacity, kv_heads, 2, d] bounds (ToTileLayout lays them
  // out for the backends) with min <= max; random ones get
  // duplicated pages (exact ties) and NaN pages.
  Tensor MakeBounds(const SelectCase& c, int64_t capacity, Fill fill) {
    const int d = c.head_dim;
    Tensor b = Tensor::Empty(DType::kFloat32, {capacity, c.kv_heads, 2, d});
    std::uniform_real_distribution<float> dist(-2.0f, 2.0f);
    std::uniform_int_distribution<int> ints(-2, 2);
    for (int64_t row = 0; row < capacity * c.kv_heads; ++row) {
      float* lo = b.data<float>() + row * 2 * d;
      for (int i = 0; i < d; ++i) {
        float x, y;
        if (fill == Fill::kRandom) {
          x = Bf16(dist(rng_));
          y = Bf16(dist(rng_));
        } else if (fill == Fill::kIntegers) {
          x = static_cast<float>(ints(rng_));
          y = static_cast<float>(ints(rng_));
        } else {
          x = -1.0f;
          y = 1.0f;
        }
        lo[i] = std::min(x, y);
        lo[d + i] = std::max(x, y);
      }
    }
    const int64_t n = c.num_pages - 1;
    if (fill != Fill::kConstant && n >= 8) {
      std::uniform_int_distribution<int64_t> page(0, n - 1);
      const int64_t per_page = int64_t{c.kv_heads} * 2 * d;
      for (int i = 0; i < 1 + n / 50; ++i) {  // duplicates: ties at any rank
        const int64_t from = page(rng_), to = page(rng_);
        std::copy_n(b.data<float>() + from * per_page, per_page, b.data<float>() + to * per_page);
      }
      for (int i = 0; i < 2; ++i) {  // NaN pages (-inf scores)
        float* p = b.data<float>() + page(rng_) * per_page;
        std::fill(p, p + per_page, std::numeric_limits<float>::quiet_NaN());
      }
    }
    return b;
  }

  // Runs every k over the case on both backends; returns the near-tie flips.
  // fp8: the bounds are stored as FP8 codes (rounded outward).
  int64_t RunCase(const SelectCase& c, bool sum, Fill fill, std::vector<int64_t> ks, bool fp8 = false) {
    const int64_t n = c.num_pages - 1;
    Tensor q = fill == Fill::kIntegers ? Tensor::Empty(DType::kFloat32, {1, c.heads, c.head_dim})
                                       : Random({1, c.heads, c.head_dim});
    if (fill == Fill::kIntegers) {
      std::uniform_int_distribution<int> ints(-3, 3);
      for (int64_t i = 0; i < q.numel(); ++i) q.data<float>()[i] = static_cast<float>(ints(rng_));
    }
    Tensor bounds = MakeBounds(c, c.num_pages + 5, fill);
    if (fp8) bounds = RoundBoundsToFp8(bounds, c.head_dim);  // exact as codes
    std::vector<std::vector<double>> ref;
    double scale = 0.0;
    ReferenceScores(q, bounds, c, sum, &ref, &scale);
    Tensor cq = OnCpu(q), gq = OnGpu(q);
    const Tensor tiled = ToTileLayout(bounds);
    Tensor cb = fp8 ? Fp8On(*cpu_, tiled, false) : OnCpu(tiled);
    Tensor gb = fp8 ? Fp8On(*gpu_, tiled, false) : OnGpu(tiled);
    std::sort(ks.begin(), ks.end());
    ks.erase(std::unique(ks.begin(), ks.end()), ks.end());
    int64_t flips = 0;
    for (int64_t k : ks) {
      if (k < 0 || k > n) continue;
      const std::string what = Name(c, k, sum, fp8);
      SCOPED_TRACE(what);
      TopPagesArgs a;
      a.num_pages = c.num_pages;
      a.k = k;
      a.combine_sum = sum;
      a.q = &cq;
      a.bounds = &cb;
      Tensor cs = cpu_->Allocate(DType::kInt32, {c.kv_heads, k + 1});
      cpu_->SelectTopPages(a, cs);
      a.q = &gq;
      a.bounds = &gb;
      Tensor gs = PoisonedIndices({c.kv_heads, k + 1});
      gpu_->SelectTopPages(a, gs);
      Tensor want = cpu_->ToHost(cs), got = gpu_->ToHost(gs);
      const int64_t f = CheckSelection(want.data<int32_t>(), got.data<int32_t>(), c, k, ref, scale,
                                       fill != Fill::kRandom, what);
      if (f < 0) return f;
      flips += f;
    }
    return flips;
  }
};

// Every shape's selection against the CPU's, by the backend `gpu_` holds.
void SelectTest::MatchesCpuOverShapes() {
  std::vector<SelectCase> cases;
  for (int64_t pages : {1, 2, 3, 17, 130, 1025, 2049, 4097, 8193, 9000}) {
    for (auto [h, kv] : std::vector<std::pair<int, int>>{{4, 4}, {16, 4}, {16, 2}}) {  // groups 1/4/8
      for (int d : {64, 128}) cases.push_back({pages, h, kv, d});
    }
  }
  // MHA launches of more tiles than one wave of scoring CTAs holds (an
  // H100 has 4 x 132 slots): several tiles per CTA (score_plan.h).
  cases.push_back({9000, 32, 32, 128});
  cases.push_back({40000, 8, 8, 64});
  // The generic scorer and the other fast-path shapes.
  for (int64_t pages : {5, 300, 3000}) {
    cases.push_back({pages, 10, 2, 128});  // group 5
    cases.push_back({pages, 32, 2, 64});   // group 16
    cases.push_back({pages, 8, 2, 256});   // head_dim 256
    cases.push_back({pages, 16, 2, 256});  // head_dim 256, group 8
    cases.push_back({pages, 8, 2, 96});    // head_dim 96
  }
  int64_t runs = 0, flips = 0;
  for (const SelectCase& c : cases) {
    const int64_t n = c.num_pages - 1;
    for (bool fp8 : {false, true}) {
      for (bool sum : {true, false}) {
        const int64_t f =
            RunCase(c, sum, Fill::kRandom, {0, 1, 2, 7, 15, 127, 255, 511, n / 2, n - 1, n}, fp8);
        ASSERT_GE(f, 0);
        flips += f;
        ++runs;
      }
    }
  }
  std::printf("  select vs cpu: %lld shapes x ks, %lld near-tie pages differ in all\n",
              static_cast<long long>(runs), static_cast<long long>(flips));
}

TEST_F(SelectTest, MatchesCpuOverShapes) { MatchesCpuOverShapes(); }

// The same through a backend whose SelectTopPages is the one-launch select
// (variant 2) and publishes its rows for a per-head attention wait.
TEST_F(SelectTest, OneLaunchSelectMatchesCpuOverShapes) {
  CudaBackendOptions options;
  options.quest_select_variant = 2;
  options.per_head_select_wait = true;
  absl::StatusOr<std::unique_ptr<Backend>> g = CreateCudaBackend(options);
  ASSERT_TRUE(g.ok()) << g.status();
  gpu_ = *std::move(g);
  MatchesCpuOverShapes();
}

TEST_F(SelectTest, ExactTiesMatchExactly) {
  // Integer inputs: every sum is exact on both sides, so the selections must
  // be identical, ties (many) resolved to the lower page.
  for (int64_t pages : {2, 40, 1000, 5000, 9000}) {
    for (auto [h, kv] : std::vector<std::pair<int, int>>{{4, 4}, {16, 2}}) {
      for (bool sum : {true, false}) {
        for (bool fp8 : {false, true}) {
          const SelectCase c{pages, h, kv, 128};
          const int64_t n = pages - 1;
          EXPECT_EQ(RunCase(c, sum, Fill::kIntegers, {1, 3, 100, 300, n / 3, n - 1}, fp8), 0);
          EXPECT_EQ(RunCase(c, sum, Fill::kConstant, {1, 5, 200, n - 1}, fp8), 0);
        }
      }
    }
  }
}

// ---------------------------------------------------------------- variants and timing

class SelectLaunchTest : public QuestKernelsTest {
 protected:
  void SetUp() override {
    QuestKernelsTest::SetUp();
    CUDA_OK(cudaStreamCreate(&stream_));
    arrivals_ = static_cast<unsigned*>(Buffer(sizeof(unsigned) * kMaxKvHeads));
    CUDA_OK(cudaMemset(arrivals_, 0, sizeof(unsigned) * kMaxKvHeads));
  }
  void TearDown() override {
    for (void* p : buffers_) cudaFree(p);
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }
  void* Buffer(size_t bytes) {
    void* p = nullptr;
    EXPECT_EQ(cudaMalloc(&p, bytes), cudaSuccess);
    buffers_.push_back(p);
    return p;
  }
  // The launch's params for query q [1, heads, d] over `bounds` (bf16 or
  // fp8 codes in the tile layout, read with kv_heads), SUM over the group.
  cuda::TopPagesParams SelectParams(const Tensor& q, const Tensor& bounds, int kv_heads, int64_t pages, int64_t k,
                                    float* scores, int32_t* selected) const {
    cuda::TopPagesParams p;
    p.arrivals = arrivals_;
    p.q = q.raw_data();
    p.bounds = bounds.raw_data();
    p.bounds_fp8 = bounds.dtype() == DType::kFloat8E4M3;
    p.num_pages = pages;
    p.k = k;
    p.num_heads = static_cast<int>(q.dim(1));
    p.num_kv_heads = kv_heads;
    p.head_dim = static_cast<int>(q.dim(2));
    p.combine_sum = true;
    p.scores = scores;
    p.selected = selected;
    return p;
  }
  std::vector<int32_t> Run(cuda::TopPagesParams p, int variant, int* launched = nullptr) {
    p.variant = variant;
    p.launched_variant = launched;
    std::vector<int32_t> rows(static_cast<size_t>(p.num_kv_heads) * (p.k + 1));
    EXPECT_EQ(cudaMemsetAsync(p.selected, 0xff, rows.size() * sizeof(int32_t), stream_), cudaSuccess);
    EXPECT_EQ(cuda::LaunchSelectTopPages(cuda::ElemType::kBFloat16, p, stream_), cudaSuccess);
    EXPECT_EQ(cudaMemcpyAsync(rows.data(), p.selected, rows.size() * sizeof(int32_t),
                              cudaMemcpyDeviceToHost, stream_),
              cudaSuccess);
    EXPECT_EQ(cudaStreamSynchronize(stream_), cudaSuccess);
    return rows;
  }
  // Mean microseconds of `iters` launches of fn on stream_; with `graph`,
  // of the launches captured in one CUDA graph (GPU time without the host's
  // launch overhead, as a captured decode step runs).
  template <typename Fn>
  double TimeUs(Fn fn, bool graph = false, int iters = 50) {
    for (int i = 0; i < 3; ++i) fn();
    cudaGraphExec_t exec = nullptr;
    if (graph) {
      cudaGraph_t g = nullptr;
      EXPECT_EQ(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal), cudaSuccess);
      for (int i = 0; i < iters; ++i) fn();
      EXPECT_EQ(cudaStreamEndCapture(stream_, &g), cudaSuccess);
      EXPECT_EQ(cudaGraphInstantiate(&exec, g, 0), cudaSuccess);
      cudaGraphDestroy(g);
      cudaGraphLaunch(exec, stream_);  // warm-up
    }
    cudaEvent_t a, b;
    cudaEventCreate(&a);
    cudaEventCreate(&b);
    cudaEventRecord(a, stream_);
    if (graph) {
      cudaGraphLaunch(exec, stream_);
    } else {
      for (int i = 0; i < iters; ++i) fn();
    }
    cudaEventRecord(b, stream_);
    cudaEventSynchronize(b);
    float ms = 0.0f;
    cudaEventElapsedTime(&ms, a, b);
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    if (exec != nullptr) cudaGraphExecDestroy(exec);
    return 1000.0 * ms / iters;
  }

  static constexpr int kMaxKvHeads = 64;
  cudaStream_t stream_ = nullptr;
  std::vector<void*> buffers_;
  unsigned* arrivals_ = nullptr;  // the fused select's counters (variant 2)
};

TEST_F(SelectLaunchTest, VariantsAgreeAndTiming) {
  const int d = 128, max_kv = 32, heads = 32;
  const int64_t max_pages = 131072 / 16;
  // One random bounds buffer (bf16 values, and the same rounded outward to
  // FP8), built for 32 KV heads and read with every shape's (each 256
  // values of the tile layout stay a min row and its max row).
  Tensor host = Tensor::Empty(DType::kFloat32, {max_pages, max_kv, 2, d});
  {
    std::uniform_real_distribution<float> dist(-2.0f, 2.0f);
    float* b = host.data<float>();
    for (int64_t row = 0; row < max_pages * max_kv; ++row, b += 2 * d) {
      for (int i = 0; i < d; ++i) {
        const float x = Bf16(dist(rng_)), y = Bf16(dist(rng_));
        b[i] = std::min(x, y);
        b[d + i] = std::max(x, y);
      }
    }
  }
  Tensor bounds = OnGpu(ToTileLayout(host));
  Tensor bounds8 = Fp8On(*gpu_, ToTileLayout(RoundBoundsToFp8(host, d)), false);
  Tensor q = OnGpu(Random({1, heads, d}));
  const size_t max_bytes = static_cast<size_t>(max_pages) * max_kv * 2 * d * 2;
  void* copy_dst = Buffer(max_bytes);
  float* scores = static_cast<float*>(Buffer(sizeof(float) * max_pages * max_kv));
  int32_t* selected = static_cast<int32_t*>(Buffer(sizeof(int32_t) * max_kv * 1024));

  std::printf("  SelectTopPages, head_dim 128, 16-token pages, times per call in a CUDA graph of 50 calls;\n"
              "  a D2D copy of the bf16 bounds bytes moves 2x them (read + write); bw = bounds bytes read /\n"
              "  time (fp8: half the bf16 bytes); 'x copy' = bf16 copy time / time\n");
  for (int64_t ctx : {32768, 131072}) {
    for (int kv : {32, 8}) {
      const int64_t pages = ctx / 16;
      cuda::TopPagesParams p = SelectParams(q, bounds, kv, pages, /*k=*/0, scores, selected);
      const size_t bytes = static_cast<size_t>(pages) * kv * 2 * d * 2;
      const double copy_us = TimeUs(
          [&] { cudaMemcpyAsync(copy_dst, bounds.raw_data(), bytes, cudaMemcpyDeviceToDevice, stream_); },
          /*graph=*/true);
      std::printf("  ctx %6lld heads %d/%d: bf16 bounds %.1f MB, D2D copy %.2f us (%.0f GB/s read+write)\n",
                  static_cast<long long>(ctx), heads, kv, bytes / 1e6, copy_us, 2.0 * bytes / copy_us / 1e3);
      for (int64_t budget : {128, 256}) {
        p.k = budget - 1;
        for (bool sum : {true, false}) {
          p.combine_sum = sum;
          double default_us[2] = {0, 0};
          for (bool fp8 : {false, true}) {
            p.bounds = fp8 ? bounds8.raw_data() : bounds.raw_data();
            p.bounds_fp8 = fp8;
            const double read = fp8 ? bytes / 2.0 : static_cast<double>(bytes);
            const std::vector<int32_t> want = Run(p, 1);
            std::string line;
            for (int variant : {1, 2, 4, 5, 6}) {
              if (variant != 4) {
                int launched = -1;
                EXPECT_EQ(Run(p, variant, &launched), want) << "variant " << variant << " ctx " << ctx << " kv "
                                                            << kv << " k+1 " << budget << (fp8 ? " fp8" : "");
                if (variant != 1) {
                  EXPECT_EQ(launched, variant) << "the launch fell back";
                }
              }
              const double us = TimeUs(
                  [&] {
                    p.variant = variant;
                    cuda::LaunchSelectTopPages(cuda::ElemType::kBFloat16, p, stream_);
                  },
                  /*graph=*/true);
              char buf[200];
              std::snprintf(buf, sizeof(buf), "  %s %.2f us (%.0f GB/s, %.2fx)",
                            variant == 1   ? "radix"
                            : variant == 2 ? "fused"
                            : variant == 4 ? "[scoring]"
                            : variant == 5 ? "cluster8"
                                           : "cluster16",
                            us, read / us / 1e3, copy_us / us);
              line += buf;
            }
            p.variant = 0;
            double def_us[2][2];  // [pdl][graph]
            for (int pdl : {0, 1}) {
              for (int graph : {0, 1}) {
                p.pdl = pdl == 1;
                def_us[pdl][graph] = TimeUs(
                    [&] { cuda::LaunchSelectTopPages(cuda::ElemType::kBFloat16, p, stream_); }, graph == 1);
              }
            }
            p.pdl = true;
            default_us[fp8] = def_us[1][1];
            std::printf("    k+1=%lld %s %s:%s\n      default: graph %.2f us = %.2fx copy (no PDL %.2f), "
                        "stream-launched %.2f us (no PDL %.2f)\n",
                        static_cast<long long>(budget), sum ? "sum" : "max", fp8 ? "fp8 " : "bf16", line.c_str(),
                        def_us[1][1], copy_us / def_us[1][1], def_us[0][1], def_us[1][0], def_us[0][0]);
          }
          std::printf("    => fp8 default / bf16 default = %.1f %%\n", 100.0 * default_us[1] / default_us[0]);
        }
      }
    }
  }
  // Scoring CTA sizes (TopPagesParams::score_pages_per_cta), SUM, k+1 = 128.
  std::printf("  scoring CTA size sweep (radix / scoring only, us):\n");
  for (int64_t ctx : {32768, 131072}) {
    for (int kv : {32, 8}) {
      for (bool fp8 : {false, true}) {
        cuda::TopPagesParams p = SelectParams(q, fp8 ? bounds8 : bounds, kv, ctx / 16, /*k=*/127, scores, selected);
        const std::vector<int32_t> want = Run(p, 1);
        std::string line;
        for (int64_t per : {0, 32, 64, 128, 256, 512, 1024}) {
          p.score_pages_per_cta = per;
          EXPECT_EQ(Run(p, 1), want) << "pages per CTA " << per;
          double us[2];
          for (int v : {1, 4}) {
            us[v == 4] = TimeUs(
                [&] {
                  p.variant = v;
                  cuda::LaunchSelectTopPages(cuda::ElemType::kBFloat16, p, stream_);
                },
                /*graph=*/true);
          }
          char buf[100];
          std::snprintf(buf, sizeof(buf), "  %lld: %.2f/%.2f", static_cast<long long>(per), us[0], us[1]);
          line += buf;
        }
        std::printf("    ctx %6lld %d/%d %s%s\n", static_cast<long long>(ctx), heads, kv, fp8 ? "fp8 " : "bf16",
                    line.c_str());
      }
    }
  }
  CUDA_OK(cudaStreamSynchronize(stream_));
  CUDA_OK(cudaGetLastError());
}

// The one-kernel selects (2: the last scoring CTA of a KV head selects; 5
// and 6: radix over a cluster) against the two-kernel select (binned,
// falling back to radix with many ties) on small and odd shapes (empty
// CTAs, one page per CTA, ties between few or many pages), bf16 and FP8
// bounds.
TEST_F(SelectLaunchTest, FusedVariantsMatchTwoKernels) {
  const int d = 128;
  for (int64_t pages : {3, 10, 17, 130, 1025, 2048, 9000, 40000}) {
    for (auto [heads, kv] : std::vector<std::pair<int, int>>{{4, 4}, {16, 2}}) {
      // fill 0: random (a few duplicated pages), 1: values in {-1, 0, 1}
      // (ties everywhere), 2: random pages repeating every 24 (groups of
      // equal scores around every k, as a pool of repeated Keys gives).
      for (int fill = 0; fill < 3; ++fill) {
        const bool ties = fill == 1;
        Tensor host = Tensor::Empty(DType::kFloat32, {pages, kv, 2, d});
        std::uniform_real_distribution<float> dist(-2.0f, 2.0f);
        std::uniform_int_distribution<int> ints(-1, 1);
        float* b = host.data<float>();
        for (int64_t row = 0; row < pages * kv; ++row, b += 2 * d) {
          for (int i = 0; i < d; ++i) {
            const float x = ties ? ints(rng_) : Bf16(dist(rng_)), y = ties ? ints(rng_) : Bf16(dist(rng_));
            b[i] = std::min(x, y);
            b[d + i] = std::max(x, y);
          }
        }
        if (fill == 2) {
          const int64_t per_page = int64_t{kv} * 2 * d;
          for (int64_t pg = 24; pg < pages; ++pg) {
            std::copy_n(host.data<float>() + (pg % 24) * per_page, per_page, host.data<float>() + pg * per_page);
          }
        }
        if (fill == 0 && pages >= 8) {  // a few duplicated pages: exact ties between few pages
          std::uniform_int_distribution<int64_t> page(0, pages - 2);
          const int64_t per_page = int64_t{kv} * 2 * d;
          for (int64_t i = 0; i < 1 + pages / 20; ++i) {
            const int64_t from = page(rng_), to = page(rng_);
            std::copy_n(host.data<float>() + from * per_page, per_page, host.data<float>() + to * per_page);
          }
        }
        Tensor bounds = OnGpu(ToTileLayout(host));
        Tensor bounds8 = Fp8On(*gpu_, ToTileLayout(RoundBoundsToFp8(host, d)), false);
        Tensor q = OnGpu(Random({1, heads, d}));
        float* scores = static_cast<float*>(Buffer(sizeof(float) * pages * kv));
        const int64_t n = pages - 1;
        for (int64_t k : {int64_t{1}, int64_t{2}, int64_t{31}, int64_t{255}, n / 2, n - 1}) {
          if (k < 1 || k >= n) continue;
          int32_t* selected = static_cast<int32_t*>(Buffer(sizeof(int32_t) * kv * (k + 1)));
          for (int mode = 0; mode < 4; ++mode) {
            const bool sum = mode % 2 == 0, fp8 = mode >= 2;
            cuda::TopPagesParams p = SelectParams(q, fp8 ? bounds8 : bounds, kv, pages, k, scores, selected);
            p.combine_sum = sum;
            const std::vector<int32_t> want = Run(p, 1);
            for (int variant : {2, 5, 6}) {
              int launched = -1;
              EXPECT_EQ(Run(p, variant, &launched), want)
                  << "variant " << variant << " pages " << pages << " k " << k << " kv " << kv
                  << (sum ? " sum" : " max") << " fill " << fill << (fp8 ? " fp8" : "");
              EXPECT_EQ(launched, variant);
            }
          }
        }
      }
    }
  }
  CUDA_OK(cudaStreamSynchronize(stream_));
  CUDA_OK(cudaGetLastError());
}

TEST_F(SelectLaunchTest, UpdatePageBoundsTiming) {
  // A decode step's fold (one token) and a 32K-token refold, 8 KV heads x 128.
  const int kv = 8, d = 128, page = 16;
  const int64_t len = 32768;
  Tensor keys = OnGpu(Random({len / page + 1, page, kv, d}));
  Tensor bounds = gpu_->AllocateZeros(DType::kBFloat16, PageBoundsShape(len / page + 1, kv, d));
  Tensor bounds8 = gpu_->AllocateZeros(DType::kFloat8E4M3, PageBoundsShape(len / page + 1, kv, d));
  std::vector<int32_t> table(len / page + 1);
  std::iota(table.begin(), table.end(), 0);
  int32_t* dev_table = static_cast<int32_t*>(Buffer(table.size() * sizeof(int32_t)));
  CUDA_OK(cudaMemcpy(dev_table, table.data(), table.size() * sizeof(int32_t), cudaMemcpyHostToDevice));
  cuda::PageBoundsParams p;
  p.k_pages = keys.raw_data();
  p.page_table = dev_table;
  p.page_size = page;
  p.bound_page = page;
  p.num_kv_heads = kv;
  p.head_dim = d;
  p.bounds = bounds.raw_data();
  for (int call = 0; call < 6; ++call) {
    const int64_t n = call % 3 == 2 ? len : 1;
    const bool one_page = call % 3 == 1;  // the backend's decode path: the page as an argument
    p.bounds_fp8 = call >= 3;
    p.bounds = p.bounds_fp8 ? bounds8.raw_data() : bounds.raw_data();
    p.begin = len - n;
    p.end = len;
    p.one_page = one_page;
    p.phys_page = table[(len - 1) / page];
    const double us = TimeUs([&] { cuda::LaunchUpdatePageBounds(cuda::ElemType::kBFloat16, p, stream_); },
                             /*graph=*/true);
    const double bytes = static_cast<double>(n) * kv * d * 2;
    std::printf("  UpdatePageBounds %s %lld tokens x %d KV heads x %d%s: %.2f us (%.0f GB/s of Keys)\n",
                p.bounds_fp8 ? "fp8 " : "bf16", static_cast<long long>(n), kv, d,
                one_page ? " (page as argument)" : "", us, bytes / us / 1e3);
  }
  CUDA_OK(cudaStreamSynchronize(stream_));
  CUDA_OK(cudaGetLastError());
}

// ---------------------------------------------------------------- per-head wait

// A Quest decode step (UpdatePageBounds over the context, SelectTopPages,
// then paged attention over the selected table) on backends whose
// attention waits per KV head for the select's rows
// (CudaBackendOptions::per_head_select_wait; two-kernel and one-launch
// selects) against the default backend: the same tables and bit-identical
// outputs (the kernels and plans are the same; only when blocks start
// differs). One sequence alone, and a batch of three whose selects all run
// before one batched attention; in the "mixed" batch a member with
// attention weights attends on its own first, which turns the wait off.
// Every step runs three times (epochs advance, counters must be left at
// zero).
TEST_F(QuestKernelsTest, PerHeadSelectWaitMatchesDefault) {
  struct Case {
    int heads, kv_heads, head_dim;
    int64_t budget;  // tokens
  };
  const std::vector<Case> cases = {{32, 32, 128, 1024}, {32, 8, 128, 2048}, {16, 16, 64, 512}, {8, 2, 256, 256}};
  constexpr int kPage = 16;
  const std::vector<int64_t> lens = {9000, 20000, 4097};  // the sequences of the batch; the first alone too
  std::vector<int64_t> pages;  // each sequence's pages
  for (int64_t len : lens) pages.push_back((len + kPage - 1) / kPage);
  const int64_t total_pages = std::accumulate(pages.begin(), pages.end(), int64_t{0});
  std::vector<std::unique_ptr<Backend>> backends;
  for (int variant : {0, 1, 2}) {
    CudaBackendOptions options;
    options.quest_select_variant = variant;
    options.per_head_select_wait = variant != 0;  // 0: the default backend, the reference
    absl::StatusOr<std::unique_ptr<Backend>> g = CreateCudaBackend(options);
    ASSERT_TRUE(g.ok()) << g.status();
    backends.push_back(*std::move(g));
  }
  for (const Case& c : cases) {
    for (bool mixed : {false, true}) {
      const std::string name = "H=" + std::to_string(c.heads) + " KV=" + std::to_string(c.kv_heads) + " d=" +
                               std::to_string(c.head_dim) + " B=" + std::to_string(c.budget) +
                               (mixed ? " mixed" : "");
      SCOPED_TRACE(name);
      const int64_t per_head = c.budget / kPage;  // a selection row: k pages, then the current one
      std::vector<int32_t> pool(total_pages);
      std::iota(pool.begin(), pool.end(), 0);
      std::shuffle(pool.begin(), pool.end(), rng_);
      std::vector<std::vector<int32_t>> tables;
      for (size_t i = 0, next = 0; i < lens.size(); ++i) {
        tables.emplace_back(pool.begin() + next, pool.begin() + next + pages[i]);
        next += pages[i];
      }
      const Tensor kp = Random({total_pages, kPage, c.kv_heads, c.head_dim}, 2.0f);
      const Tensor vp = Random({total_pages, kPage, c.kv_heads, c.head_dim});
      std::vector<Tensor> qs;
      for (size_t i = 0; i < lens.size(); ++i) qs.push_back(Random({1, c.heads, c.head_dim}, 2.0f));

      // Each backend's outputs and tables, read back: the sequence alone,
      // then the batch's three, per repetition.
      std::vector<std::vector<Tensor>> results(backends.size());
      for (size_t b = 0; b < backends.size(); ++b) {
        Backend& gpu = *backends[b];
        Tensor k = *gpu.UploadWeight(kp), v = *gpu.UploadWeight(vp);
        std::vector<Tensor> q, bounds, selected, out;
        for (size_t i = 0; i < lens.size(); ++i) {
          q.push_back(*gpu.UploadWeight(qs[i]));
          bounds.push_back(gpu.AllocateZeros(DType::kBFloat16, PageBoundsShape(pages[i], c.kv_heads, c.head_dim)));
          gpu.UpdatePageBounds(WholeSequenceBounds(k, tables[i], kPage, lens[i]), bounds[i]);
          selected.push_back(gpu.Allocate(DType::kInt32, {c.kv_heads, per_head}));
          out.push_back(gpu.Allocate(DType::kBFloat16, {1, c.heads * c.head_dim}));
        }
        // A member with attention weights: dense over the first sequence.
        Tensor weights_out = gpu.Allocate(DType::kBFloat16, {1, c.heads * c.head_dim});
        std::vector<float> sum(static_cast<size_t>(c.heads) * lens[0]), last(sum.size());
        auto select = [&](size_t i) {
          TopPagesArgs t;
          t.q = &q[i];
          t.bounds = &bounds[i];
          t.num_pages = pages[i];
          t.k = per_head - 1;
          t.combine_sum = true;
          gpu.SelectTopPages(t, selected[i]);
        };
        auto attend_args = [&](size_t i) {
          PagedAttentionArgs a;
          a.q = &q[i];
          a.k_pages = &k;
          a.v_pages = &v;
          a.page_table = tables[i];
          a.kv_len = lens[i];
          a.page_size = kPage;
          a.selected_table = &selected[i];
          a.selection_chunk = kPage;
          a.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
          return a;
        };
        // Poisoned before the selects: a copy between a select and its
        // attention would make the attention wait for the select's end.
        Tensor nan = Tensor::Empty(DType::kFloat32, {1, c.heads * c.head_dim});
        std::fill(nan.data<float>(), nan.data<float>() + nan.numel(), std::numeric_limits<float>::quiet_NaN());
        Tensor bad_rows = Tensor::Empty(DType::kInt32, {c.kv_heads, per_head});
        std::fill(bad_rows.data<int32_t>(), bad_rows.data<int32_t>() + bad_rows.numel(), -77);
        auto poison = [&](size_t i) {
          gpu.CopyFromHost(nan, out[i]);
          gpu.CopyFromHost(bad_rows, selected[i]);
        };
        // From the second repetition on, nothing is uploaded between a
        // select and its attention (page tables and batch descriptors are
        // cached), so the attention's blocks start before the select ends.
        for (int rep = 0; rep < 3; ++rep) {
          poison(0);
          select(0);
          gpu.PagedAttention(attend_args(0), out[0]);
          results[b].push_back(gpu.ToHost(out[0]));
          results[b].push_back(gpu.ToHost(selected[0]));
          std::vector<PagedAttentionArgs> args;
          std::vector<Tensor*> outs;
          if (mixed) {
            PagedAttentionArgs w = attend_args(0);
            w.selected_table = nullptr;
            w.attention_sum = sum.data();
            w.attention_last = last.data();
            args.push_back(w);
            outs.push_back(&weights_out);
          }
          for (size_t i = 0; i < lens.size(); ++i) poison(i);
          for (size_t i = 0; i < lens.size(); ++i) {
            select(i);
            args.push_back(attend_args(i));
            outs.push_back(&out[i]);
          }
          gpu.PagedAttentionBatch(args, outs);
          for (size_t i = 0; i < lens.size(); ++i) {
            results[b].push_back(gpu.ToHost(out[i]));
            results[b].push_back(gpu.ToHost(selected[i]));
          }
        }
      }
      for (size_t b = 1; b < backends.size(); ++b) {
        ASSERT_EQ(results[b].size(), results[0].size());
        for (size_t r = 0; r < results[0].size(); ++r) {
          const Tensor& want = results[0][r];
          const Tensor& got = results[b][r];
          ASSERT_EQ(want.nbytes(), got.nbytes());
          EXPECT_EQ(std::memcmp(want.raw_data(), got.raw_data(), want.nbytes()), 0)
              << "backend " << b << " (select variant " << b << ", per-head wait) result " << r;
          if (want.dtype() != DType::kInt32) {  // outputs: finite, so not a poisoned or stale buffer
            const Tensor f = want.ToFloat32();
            for (int64_t j = 0; j < f.numel(); ++j) ASSERT_TRUE(std::isfinite(f.data<float>()[j])) << r;
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace quest::ops
