// linear_bench: decode-shaped linear layers, y[m, n] = x[m, k] w[n, k]^T
// with m = 1..16 rows of x, through the CUDA backend's real
// Backend::Linear: the backend's own kernel (ops/cuda/gemv_kernels.h, the
// default for m <= 8: CUDA cores for 1-2 rows, tensor cores for 3-8) against cuBLASLt (CudaBackendOptions::decode_gemv =
// false) on Llama-2-7B's projection shapes, side by side in one run.
//
// The weights are cold, as in a model's decode step (each layer's weights
// are read once per step, and a layer's 400 MB never fit the L2): every
// call reads the next of several copies of the weight, at least four L2s
// in all. Reported as % of copy: weight bytes / time over the bandwidth of
// a device-to-device cudaMemcpyAsync of the same bytes from the same
// rotating copies (read + write bytes / time), and as cuBLASLt's time over
// ours. Each row also checks that the two agree (max |ours - cuBLASLt| over
// max |cuBLASLt|).
//
//   tools/gpu/pack.sh //tools/bench:linear_bench    (for the GPU machine)

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "ops/cuda/cuda_backend.h"
#include "ops/cuda/gemv_kernels.h"
#include "runtime/backend.h"
#include "tools/bench/bench_util.h"

ABSL_FLAG(std::vector<std::string>, rows, (std::vector<std::string>{"1", "2", "4", "8", "16"}),
          "Rows of x (m) to measure.");
ABSL_FLAG(int, gemv_variant, 0,
          "Our kernel's implementation (ops::CudaBackendOptions::gemv_variant: 0 the default, 1 CUDA cores, 2 "
          "tensor cores).");
ABSL_FLAG(int, rows_per_cta, 0,
          "Weight rows per CTA of our kernel (ops::CudaBackendOptions::gemv_rows_per_cta; 0: its default).");

namespace quest {
namespace {

using bench::FillRandom;
using bench::Time;

struct Shape {
  const char* what;
  int64_t n, k;
  bool f32_out;
};

// Max |a - b| / max |b| over two float32 host tensors of equal size
// (Backend::ToHost's copies).
double RelDiff(const Tensor& a, const Tensor& b) {
  double diff = 0, scale = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    const double x = a.data<float>()[i], y = b.data<float>()[i];
    diff = std::max(diff, std::abs(x - y));
    scale = std::max(scale, std::abs(y));
  }
  return scale > 0 ? diff / scale : diff;
}

int Main() {
  const std::vector<int64_t> rows = bench::ParsePositiveInts("linear_bench", "rows", absl::GetFlag(FLAGS_rows));
  cudaStream_t stream = nullptr;  // both backends' (never destroyed: it outlives their tensors)
  BENCH_CUDA(cudaStreamCreate(&stream));
  ops::CudaBackendOptions options;
  options.dtype = DType::kBFloat16;
  options.stream = stream;
  options.gemv_variant = absl::GetFlag(FLAGS_gemv_variant);
  options.gemv_rows_per_cta = absl::GetFlag(FLAGS_rows_per_cta);
  auto ours = ops::CreateCudaBackend(options);
  options.decode_gemv = false;
  auto cublas = ops::CreateCudaBackend(options);
  if (!ours.ok() || !cublas.ok()) {
    std::fprintf(stderr, "linear_bench: no usable GPU, nothing measured (this benchmark needs the GPU machine): %s\n",
                 std::string((ours.ok() ? cublas.status() : ours.status()).message()).c_str());
    return 1;
  }
  Backend& a = **ours;
  Backend& b = **cublas;
  cudaDeviceProp prop;
  int dev = 0;
  BENCH_CUDA(cudaGetDevice(&dev));
  BENCH_CUDA(cudaGetDeviceProperties(&prop, dev));
  const size_t l2 = static_cast<size_t>(prop.l2CacheSize);
  std::printf("linear_bench: %s, %d SMs, L2 %zu MiB; Backend::Linear, bf16, fp32 accumulate, cold weights\n",
              prop.name, prop.multiProcessorCount, l2 >> 20);

  const Shape shapes[] = {{"q/o proj", 4096, 4096, false},   {"k/v proj GQA 8", 1024, 4096, false},
                          {"gate/up proj", 11008, 4096, false}, {"down proj", 4096, 11008, false},
                          {"lm head (f32)", 32000, 4096, true}};
  std::mt19937 rng(7);
  std::printf("\n%-15s %4s %6s %6s %10s %10s %14s %10s\n", "layer", "m", "n", "k", "ours %copy", "cuBLASLt",
              "ours speed-up", "rel diff");
  for (const Shape& s : shapes) {
    const size_t bytes = static_cast<size_t>(s.n * s.k) * 2;
    const int copies = static_cast<int>(std::max<size_t>(3, (4 * l2 + bytes - 1) / bytes));
    Tensor weights = a.Allocate(DType::kBFloat16, {copies * s.n, s.k});
    FillRandom(weights.raw_data(), weights.nbytes(), rng);
    std::vector<Tensor> w;
    for (int c = 0; c < copies; ++c) w.push_back(weights.Slice(c * s.n, (c + 1) * s.n));
    Tensor copy_dst = a.Allocate(DType::kBFloat16, {s.n, s.k});
    const bench::Timing copy = Time([&](int i) {
      BENCH_CUDA(cudaMemcpyAsync(copy_dst.raw_data(), w[i % copies].raw_data(), bytes, cudaMemcpyDeviceToDevice,
                                 stream));
    });
    const double copy_bw = 2.0 * bytes / copy.host_s;
    for (int64_t m : rows) {
      Tensor x = a.Allocate(DType::kBFloat16, {m, s.k});
      FillRandom(x.raw_data(), x.nbytes(), rng);
      const DType out = s.f32_out ? DType::kFloat32 : DType::kBFloat16;
      Tensor ya = a.Allocate(out, {m, s.n});
      Tensor yb = a.Allocate(out, {m, s.n});
      const bench::Timing ta = Time([&](int i) { a.Linear(x, w[i % copies], nullptr, ya); });
      const bench::Timing tb = Time([&](int i) { b.Linear(x, w[i % copies], nullptr, yb); });
      a.Linear(x, w[0], nullptr, ya);
      b.Linear(x, w[0], nullptr, yb);
      const double diff = RelDiff(a.ToHost(ya), b.ToHost(yb));
      std::printf("%-15s %4lld %6lld %6lld %9.1f%% %9.1f%% %13.2fx %10.1e\n", s.what, static_cast<long long>(m),
                  static_cast<long long>(s.n), static_cast<long long>(s.k), 100.0 * (bytes / ta.host_s) / copy_bw,
                  100.0 * (bytes / tb.host_s) / copy_bw, tb.host_s / ta.host_s, diff);
    }
  }
  std::printf("\n%% copy = (weight bytes / time) / (D2D copy of the same bytes: read + write bytes / time), "
              "same run; speed-up = cuBLASLt time / ours (both through Backend::Linear; above %d rows, or where "
              "the variant asked for does not take the shape, both are cuBLASLt)\n",
              ops::cuda::kMaxGemvRows);
  return 0;
}

}  // namespace
}  // namespace quest

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return quest::Main();
}
