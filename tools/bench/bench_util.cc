#include "tools/bench/bench_util.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>

#include "absl/strings/numbers.h"

namespace quest::bench {
namespace {

constexpr double kTargetRepeatSeconds = 0.025;

}  // namespace

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

Timing Time(const std::function<void(int)>& fn) {
  int counter = 0;
  for (int i = 0; i < 2; ++i) fn(counter++);
  BENCH_CUDA(cudaDeviceSynchronize());
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 2; ++i) fn(counter++);
  BENCH_CUDA(cudaDeviceSynchronize());
  const double one = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / 2;
  // Slow cases get fewer calls per repeat (the whole run must fit a lease).
  const int n = std::clamp(static_cast<int>(kTargetRepeatSeconds / std::max(one, 1e-7)), 2, 2000);
  const int repeats = one > 0.05 ? 3 : kRepeats;
  cudaEvent_t start, stop;
  BENCH_CUDA(cudaEventCreate(&start));
  BENCH_CUDA(cudaEventCreate(&stop));
  std::vector<double> host, event;
  for (int r = 0; r < repeats; ++r) {
    BENCH_CUDA(cudaDeviceSynchronize());
    auto a = std::chrono::steady_clock::now();
    BENCH_CUDA(cudaEventRecord(start, 0));
    for (int i = 0; i < n; ++i) fn(counter++);
    BENCH_CUDA(cudaEventRecord(stop, 0));
    BENCH_CUDA(cudaDeviceSynchronize());
    auto b = std::chrono::steady_clock::now();
    BENCH_CUDA(cudaGetLastError());
    float ms = 0;
    BENCH_CUDA(cudaEventElapsedTime(&ms, start, stop));
    host.push_back(std::chrono::duration<double>(b - a).count() / n);
    event.push_back(ms * 1e-3 / n);
  }
  BENCH_CUDA(cudaEventDestroy(start));
  BENCH_CUDA(cudaEventDestroy(stop));
  return {Median(host), Median(event)};
}

// One random block of 64 MiB + 1 MiB uploaded, then every 64 MiB of dst
// copied from it at a random even offset. Shifted windows keep pages from
// repeating (a plain tiling would repeat every page's Keys, and so its
// bounds, every 64 MiB: the exact score ties real Keys do not have).
void FillRandom(void* dst, size_t bytes, std::mt19937& rng) {
  constexpr size_t kBlock = size_t{64} << 20, kSlack = size_t{1} << 20;
  const size_t block = std::min(bytes, kBlock);
  const size_t source_bytes = bytes > kBlock ? kBlock + kSlack : block;
  std::vector<uint16_t> host(source_bytes / 2);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (auto& h : host) {
    float f = u(rng);
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    h = static_cast<uint16_t>(bits >> 16);
  }
  char* d = static_cast<char*>(dst);
  if (bytes <= kBlock) {
    BENCH_CUDA(cudaMemcpy(d, host.data(), bytes, cudaMemcpyHostToDevice));
    return;
  }
  char* source = nullptr;
  BENCH_CUDA(cudaMalloc(&source, source_bytes));
  BENCH_CUDA(cudaMemcpy(source, host.data(), source_bytes, cudaMemcpyHostToDevice));
  std::uniform_int_distribution<size_t> shift(0, kSlack / 2 - 1);
  for (size_t off = 0; off < bytes; off += kBlock) {
    BENCH_CUDA(cudaMemcpy(d + off, source + 2 * shift(rng), std::min(kBlock, bytes - off),
                          cudaMemcpyDeviceToDevice));
  }
  BENCH_CUDA(cudaFree(source));
}

std::vector<int64_t> ParsePositiveInts(const char* tool, const char* flag, const std::vector<std::string>& items) {
  std::vector<int64_t> out;
  for (const std::string& item : items) {
    int64_t v = 0;
    if (!absl::SimpleAtoi(item, &v) || v <= 0) {
      std::fprintf(stderr, "%s: --%s: '%s' is not a positive integer\n", tool, flag, item.c_str());
      std::exit(2);
    }
    out.push_back(v);
  }
  return out;
}

}  // namespace quest::bench
