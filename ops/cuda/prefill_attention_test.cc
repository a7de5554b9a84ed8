// The tensor-core prefill kernel (prefill_attention.h) against the CPU
// backend's PagedAttention on random inputs, called through its launcher
// directly (bf16 and f16 storage; every tile configuration of the mma.sync
// kernel and both Hopper wgmma kernels). Inputs are
// bf16-representable (so also exact in f16); outputs are poisoned with NaN
// first and a non-finite value never passes. Error: max |gpu - cpu| /
// max |cpu|, bound 1e-2.
//
// Also a benchmark (printed, not asserted): prefill attention TFLOP/s of the
// new kernel (each tile configuration) and of the old LaunchPagedAttention
// on the same shapes in the same process.
//
// Needs a GPU (tags = ["gpu"]).

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "ops/cpu/cpu_backend.h"
#include "ops/cuda/attention_kernels.h"
#include "ops/cuda/prefill_attention.h"
#include "runtime/backend.h"
#include "runtime/tensor.h"

namespace quest::ops {
namespace {

using cuda::ElemType;
using cuda::PagedAttentionParams;

#define CUDA_OK(expr)                                                              \
  do {                                                                             \
    const cudaError_t err_ = (expr);                                               \
    ASSERT_EQ(err_, cudaSuccess) << #expr << ": " << cudaGetErrorString(err_);     \
  } while (0)

struct DeviceBuffer {
  void* ptr = nullptr;
  explicit DeviceBuffer(size_t bytes) { EXPECT_EQ(cudaMalloc(&ptr, std::max<size_t>(bytes, 16)), cudaSuccess); }
  ~DeviceBuffer() { cudaFree(ptr); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
};

uint16_t ToBits(float x, ElemType type) {
  if (type == ElemType::kBFloat16) return FloatToBFloat16(x);
  const __half h = __float2half(x);
  uint16_t bits;
  std::memcpy(&bits, &h, 2);
  return bits;
}
float FromBits(uint16_t bits, ElemType type) {
  if (type == ElemType::kBFloat16) return BFloat16ToFloat(bits);
  __half_raw raw;
  raw.x = bits;
  return __half2float(__half(raw));
}

std::unique_ptr<DeviceBuffer> Upload(const float* x, int64_t n, ElemType type) {
  std::vector<uint16_t> bits(n);
  for (int64_t i = 0; i < n; ++i) bits[i] = ToBits(x[i], type);
  auto buf = std::make_unique<DeviceBuffer>(n * 2);
  EXPECT_EQ(cudaMemcpy(buf->ptr, bits.data(), n * 2, cudaMemcpyHostToDevice), cudaSuccess);
  return buf;
}

struct Case {
  int heads, kv_heads, head_dim, n, kv_len;
  ElemType type;
  bool holes;
  int page_size = 16;
};

std::string Name(const Case& c) {
  return std::to_string(c.heads) + "/" + std::to_string(c.kv_heads) + " d=" + std::to_string(c.head_dim) +
         " n=" + std::to_string(c.n) + " kv_len=" + std::to_string(c.kv_len) +
         (c.type == ElemType::kBFloat16 ? " bf16" : " f16") + (c.holes ? " holes" : "") +
         (c.page_size != 16 ? " page " + std::to_string(c.page_size) : "");
}

// One way to launch the prefill kernel: the default pick, an mma.sync tile
// configuration, the wgmma kernel with 1 or 2 warpgroups or the
// warp-specialized wgmma kernel.
struct Config {
  enum Kind { kDefault, kMmaSync, kWgmma, kWarpSpecialized } kind;
  int a = 0, b = 0;  // warps x row tiles (kMmaSync), warpgroups (kWgmma)
  std::string name;

  cudaError_t Launch(ElemType type, const PagedAttentionParams& p) const {
    switch (kind) {
      case kDefault:
        return cuda::LaunchPrefillAttention(type, p, nullptr);
      case kMmaSync:
        return cuda::LaunchPrefillAttentionConfig(type, p, a, b, nullptr);
      case kWgmma:
        return cuda::LaunchPrefillAttentionWgmma(type, p, a, nullptr);
      case kWarpSpecialized:
        return cuda::LaunchPrefillAttentionWarpSpecialized(type, p, nullptr);
    }
    return cudaErrorInvalidValue;
  }
};

std::vector<Config> AllConfigs() {
  return {{Config::kDefault, 0, 0, "default"},
          {Config::kMmaSync, 4, 1, "mma 4x1 (BM 64)"},
          {Config::kMmaSync, 4, 2, "mma 4x2 (BM 128)"},
          {Config::kMmaSync, 8, 1, "mma 8x1 (BM 128)"},
          {Config::kWgmma, 1, 0, "wgmma 1 WG (BM 64)"},
          {Config::kWgmma, 2, 0, "wgmma 2 WG (BM 128)"},
          {Config::kWarpSpecialized, 0, 0, "wgmma ws (BM 128)"}};
}

class PrefillAttentionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int count = 0;
    ASSERT_EQ(cudaGetDeviceCount(&count), cudaSuccess);
    ASSERT_GT(count, 0);
    cpu_ = CreateCpuBackend({/*num_threads=*/4});
  }

  Tensor Random(std::vector<int64_t> shape, float scale) {
    Tensor t = Tensor::Empty(DType::kFloat32, std::move(shape));
    std::uniform_real_distribution<float> dist(-scale, scale);
    for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = BFloat16ToFloat(FloatToBFloat16(dist(rng_)));
    return t;
  }

  std::mt19937 rng_{20250101};
  std::unique_ptr<Backend> cpu_;
};

TEST_F(PrefillAttentionTest, MatchesCpuReference) {
  const ElemType bf = ElemType::kBFloat16, f16 = ElemType::kFloat16;
  const std::vector<Case> cases = {
      {8, 8, 128, 2, 2, bf, false},        // two tokens, whole sequence
      {8, 8, 64, 2, 1001, bf, false},      // two tokens deep in the sequence
      {8, 8, 64, 17, 17, bf, false},
      {32, 8, 128, 17, 4500, bf, false},   // last page partly filled
      {32, 8, 128, 64, 64, bf, false},
      {28, 4, 64, 64, 3000, bf, false},
      {28, 4, 128, 129, 4500, bf, false},
      {8, 8, 128, 129, 130, bf, false},
      {32, 8, 64, 512, 512, bf, false},    // whole causal prefill
      {8, 8, 128, 512, 4477, bf, false},
      {28, 4, 128, 512, 1333, bf, false},
      {32, 8, 128, 129, 2000, f16, false},
      {8, 8, 64, 64, 100, f16, false},
      {28, 4, 128, 512, 700, f16, false},
      {32, 8, 128, 64, 1000, bf, true},    // page-table holes before the chunk
      {8, 8, 64, 129, 900, bf, true},
      {32, 8, 128, 129, 1500, bf, false, 32},  // other page sizes
      {8, 8, 64, 64, 333, bf, true, 8},
  };
  const std::vector<Config> configs = AllConfigs();
  for (const Case& c : cases) {
    SCOPED_TRACE(Name(c));
    const int page_size = c.page_size;
    const int64_t logical = (c.kv_len + page_size - 1) / page_size;
    const int64_t num_pages = logical + 3;
    std::vector<int32_t> table(num_pages);
    std::iota(table.begin(), table.end(), 0);
    std::shuffle(table.begin(), table.end(), rng_);
    table.resize(logical);
    if (c.holes) {
      for (int64_t p = 0; (p + 1) * page_size <= c.kv_len - c.n; ++p) {
        if (p % 3 == 1) table[p] = -1;
      }
    }
    Tensor q = Random({c.n, c.heads, c.head_dim}, 2.0f);
    Tensor kp = Random({num_pages, page_size, c.kv_heads, c.head_dim}, 2.0f);
    Tensor vp = Random({num_pages, page_size, c.kv_heads, c.head_dim}, 1.0f);
    const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));

    Tensor cq = *cpu_->UploadWeight(q), ck = *cpu_->UploadWeight(kp), cv = *cpu_->UploadWeight(vp);
    PagedAttentionArgs a;
    a.q = &cq;
    a.k_pages = &ck;
    a.v_pages = &cv;
    a.page_table = table;
    a.kv_len = c.kv_len;
    a.page_size = page_size;
    a.scale = scale;
    Tensor cout = cpu_->Allocate(DType::kFloat32, {c.n, c.heads * c.head_dim});
    cpu_->PagedAttention(a, cout);
    Tensor want = cpu_->ToHost(cout);

    auto gq = Upload(q.data<float>(), q.numel(), c.type);
    auto gk = Upload(kp.data<float>(), kp.numel(), c.type);
    auto gv = Upload(vp.data<float>(), vp.numel(), c.type);
    DeviceBuffer gtable(table.size() * sizeof(int32_t));
    CUDA_OK(cudaMemcpy(gtable.ptr, table.data(), table.size() * sizeof(int32_t), cudaMemcpyHostToDevice));
    const int64_t out_n = static_cast<int64_t>(c.n) * c.heads * c.head_dim;
    DeviceBuffer gout(out_n * 2);

    PagedAttentionParams p;
    p.q = gq->ptr;
    p.k_pages = gk->ptr;
    p.v_pages = gv->ptr;
    p.page_table = static_cast<const int32_t*>(gtable.ptr);
    p.page_size = page_size;
    p.kv_len = c.kv_len;
    p.n = c.n;
    p.num_heads = c.heads;
    p.num_kv_heads = c.kv_heads;
    p.head_dim = c.head_dim;
    p.scale = scale;
    p.out = gout.ptr;
    ASSERT_TRUE(cuda::PrefillAttentionSupported(p));

    for (const Config& cfg : configs) {
      const std::vector<uint16_t> poison(out_n, c.type == bf ? 0x7FC0 : 0x7E00);
      CUDA_OK(cudaMemcpy(gout.ptr, poison.data(), out_n * 2, cudaMemcpyHostToDevice));
      CUDA_OK(cfg.Launch(c.type, p));
      CUDA_OK(cudaDeviceSynchronize());
      std::vector<uint16_t> bits(out_n);
      CUDA_OK(cudaMemcpy(bits.data(), gout.ptr, out_n * 2, cudaMemcpyDeviceToHost));
      double max_ref = 0.0, max_err = 0.0;
      int64_t bad = -1;
      for (int64_t i = 0; i < out_n; ++i) {
        const float got = FromBits(bits[i], c.type), ref = want.data<float>()[i];
        if (!std::isfinite(got)) {
          bad = i;
          break;
        }
        max_ref = std::max(max_ref, std::abs(static_cast<double>(ref)));
        max_err = std::max(max_err, std::abs(static_cast<double>(got) - ref));
      }
      const std::string what = Name(c) + " " + cfg.name;
      EXPECT_EQ(bad, -1) << what << ": non-finite output at " << bad;
      const double rel = max_ref > 0 ? max_err / max_ref : max_err;
      std::printf("  %-52s max|cpu|=%-9.4g max err=%-9.4g rel=%.3g\n", what.c_str(), max_ref, max_err, rel);
      EXPECT_LE(rel, 1e-2) << what;
    }
  }
}

TEST_F(PrefillAttentionTest, RefusesWhatItDoesNotCover) {
  PagedAttentionParams p;
  alignas(16) static char dummy[64];
  static const int32_t table[1] = {0};
  p.q = p.k_pages = p.v_pages = dummy;
  p.out = dummy;
  p.page_table = table;
  p.page_size = 16;
  p.kv_len = 8;
  p.n = 4;
  p.num_heads = 4;
  p.num_kv_heads = 2;
  p.head_dim = 128;
  p.scale = 0.1f;
  EXPECT_TRUE(cuda::PrefillAttentionSupported(p));
  PagedAttentionParams x = p;
  x.n = 1;  // decode
  EXPECT_FALSE(cuda::PrefillAttentionSupported(x));
  x = p;
  x.head_dim = 96;
  EXPECT_FALSE(cuda::PrefillAttentionSupported(x));
  x = p;
  x.chunks = table;
  EXPECT_FALSE(cuda::PrefillAttentionSupported(x));
  x = p;
  x.page_size = 24;  // not a power of two
  EXPECT_FALSE(cuda::PrefillAttentionSupported(x));
  x = p;
  static const uint8_t valid[16] = {};
  x.token_valid = valid;
  EXPECT_FALSE(cuda::PrefillAttentionSupported(x));
  x = p;
  static float lse[4];
  x.lse = lse;
  EXPECT_FALSE(cuda::PrefillAttentionSupported(x));
  EXPECT_EQ(cuda::LaunchPrefillAttention(ElemType::kBFloat16, x, nullptr), cudaErrorNotSupported);
}

// Prefill shapes of a 32-head, head_dim-128 model: 512- and 2048-token
// chunks (the engine's default chunk is 2048) at kv_len 4K and 32K and a
// whole 4K causal prefill, MHA and GQA 4.
TEST_F(PrefillAttentionTest, Benchmark) {
  struct Shape { int n, kv_len, heads, kv_heads; };
  const Shape shapes[] = {{512, 4096, 32, 32},   {512, 4096, 32, 8},   {512, 32768, 32, 32},
                          {512, 32768, 32, 8},   {2048, 32768, 32, 32}, {2048, 32768, 32, 8},
                          {4096, 4096, 32, 32},  {4096, 4096, 32, 8}};
  const int d = 128, page_size = 16;
  const ElemType type = ElemType::kBFloat16;
  std::printf("BENCH prefill attention, bf16, head_dim 128, page 16 (TFLOP/s = 4*d*heads*sum(visible keys) / time)\n");
  // PREFILL_BENCH_SHAPE=i runs shape i alone (to profile one launch).
  const char* only = std::getenv("PREFILL_BENCH_SHAPE");
  for (const Shape& s : shapes) {
    if (only != nullptr && &s - shapes != std::atoi(only)) continue;
    const int64_t logical = (s.kv_len + page_size - 1) / page_size;
    std::vector<int32_t> table(logical);
    std::iota(table.begin(), table.end(), 0);
    std::shuffle(table.begin(), table.end(), rng_);
    const int64_t kv_elems = logical * page_size * s.kv_heads * d;
    const int64_t q_elems = static_cast<int64_t>(s.n) * s.heads * d;
    DeviceBuffer gk(kv_elems * 2), gv(kv_elems * 2), gq(q_elems * 2), gout(q_elems * 2), gout_old(q_elems * 2);
    DeviceBuffer gtable(table.size() * 4);
    {
      std::vector<uint16_t> bits(std::max(kv_elems, q_elems) + 8);
      uint32_t x = 12345;
      for (auto& b : bits) {
        x = x * 1664525u + 1013904223u;
        b = FloatToBFloat16(static_cast<float>(x >> 8) * (2.0f / 16777216.0f) - 1.0f);
      }
      CUDA_OK(cudaMemcpy(gk.ptr, bits.data(), kv_elems * 2, cudaMemcpyHostToDevice));
      CUDA_OK(cudaMemcpy(gv.ptr, bits.data() + 7, kv_elems * 2, cudaMemcpyHostToDevice));
      CUDA_OK(cudaMemcpy(gq.ptr, bits.data() + 3, q_elems * 2, cudaMemcpyHostToDevice));
      CUDA_OK(cudaMemcpy(gtable.ptr, table.data(), table.size() * 4, cudaMemcpyHostToDevice));
    }
    PagedAttentionParams p;
    p.q = gq.ptr;
    p.k_pages = gk.ptr;
    p.v_pages = gv.ptr;
    p.page_table = static_cast<const int32_t*>(gtable.ptr);
    p.page_size = page_size;
    p.kv_len = s.kv_len;
    p.n = s.n;
    p.num_heads = s.heads;
    p.num_kv_heads = s.kv_heads;
    p.head_dim = d;
    p.scale = 1.0f / std::sqrt(static_cast<float>(d));
    p.out = gout.ptr;
    double visible = 0;  // sum over queries of the keys each attends
    for (int t = 0; t < s.n; ++t) visible += s.kv_len - s.n + t + 1;
    const double flops = 4.0 * d * s.heads * visible;

    cudaEvent_t start, stop;
    CUDA_OK(cudaEventCreate(&start));
    CUDA_OK(cudaEventCreate(&stop));
    auto time_ms = [&](auto&& launch, int warmup, int iters) {
      for (int i = 0; i < warmup; ++i) EXPECT_EQ(launch(), cudaSuccess);
      EXPECT_EQ(cudaEventRecord(start), cudaSuccess);
      for (int i = 0; i < iters; ++i) EXPECT_EQ(launch(), cudaSuccess);
      EXPECT_EQ(cudaEventRecord(stop), cudaSuccess);
      EXPECT_EQ(cudaEventSynchronize(stop), cudaSuccess);
      float ms = 0;
      EXPECT_EQ(cudaEventElapsedTime(&ms, start, stop), cudaSuccess);
      return ms / iters;
    };
    char label[96];
    std::snprintf(label, sizeof(label), "n=%d kv_len=%d heads %d/%d", s.n, s.kv_len, s.heads, s.kv_heads);
    for (const Config& cfg : AllConfigs()) {
      const float ms = time_ms([&] { return cfg.Launch(type, p); }, 2, 10);
      std::printf("BENCH %-34s %-18s %9.3f ms %7.1f TFLOP/s\n", label, cfg.name.c_str(), ms, flops / ms / 1e9);
    }
    PagedAttentionParams old = p;
    old.out = gout_old.ptr;
    const float ms_old = time_ms([&] { return cuda::LaunchPagedAttention(type, old, nullptr); }, 1, 2);
    std::printf("BENCH %-34s %-18s %9.3f ms %7.1f TFLOP/s\n", label, "old kernel", ms_old, flops / ms_old / 1e9);
    // The two kernels agree on these shapes too.
    std::vector<uint16_t> a(q_elems), b(q_elems);
    CUDA_OK(cudaMemcpy(a.data(), gout.ptr, q_elems * 2, cudaMemcpyDeviceToHost));
    CUDA_OK(cudaMemcpy(b.data(), gout_old.ptr, q_elems * 2, cudaMemcpyDeviceToHost));
    double max_ref = 0, max_err = 0;
    for (int64_t i = 0; i < q_elems; ++i) {
      const double x = BFloat16ToFloat(a[i]), y = BFloat16ToFloat(b[i]);
      max_ref = std::max(max_ref, std::abs(y));
      max_err = std::max(max_err, std::isfinite(x) ? std::abs(x - y) : INFINITY);
    }
    std::printf("BENCH %-34s new vs old: rel err %.3g\n", label, max_err / max_ref);
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
  }
}

}  // namespace
}  // namespace quest::ops
