#ifndef QUEST_TOOLS_BENCH_BENCH_UTIL_H_
#define QUEST_TOOLS_BENCH_BENCH_UTIL_H_

// What the GPU benchmarks share: a fatal check of CUDA calls, the timing
// loop (host clock around synchronised batches, events beside it), random
// bf16 device data and their list flags' parsing.

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <string>
#include <vector>

#define BENCH_CUDA(call)                                                                 \
  do {                                                                                   \
    cudaError_t e_ = (call);                                                             \
    if (e_ != cudaSuccess) {                                                             \
      std::fprintf(stderr, "bench: %s failed: %s\n", #call, cudaGetErrorString(e_));     \
      std::exit(1);                                                                      \
    }                                                                                    \
  } while (0)

namespace quest::bench {

struct Timing {
  double host_s = 0;   // per call, steady_clock around synchronised batches
  double event_s = 0;  // per call, legacy-stream events around the same batches
};

// Repeats Time takes the median over (3 when a call takes over 50 ms).
inline constexpr int kRepeats = 7;

double Median(std::vector<double> v);

// Times fn(i) (one enqueued unit of work, i = 0, 1, ...): warm-up, then
// repeats of N calls, N picked so a batch lasts ~25 ms; the medians.
Timing Time(const std::function<void(int)>& fn);

// Fills device bytes with random bf16 values in [-1, 1) (never zeros),
// without repeating a 64 MiB pattern exactly (see the definition).
void FillRandom(void* dst, size_t bytes, std::mt19937& rng);

// The values of list flag --`flag` of benchmark `tool`; an item that is not
// a positive integer prints "<tool>: --<flag>: '<item>' is not a positive
// integer" and exits with 2.
std::vector<int64_t> ParsePositiveInts(const char* tool, const char* flag, const std::vector<std::string>& items);

}  // namespace quest::bench

#endif  // QUEST_TOOLS_BENCH_BENCH_UTIL_H_
