#ifndef QUEST_RUNTIME_TESTING_RANDOM_TENSOR_H_
#define QUEST_RUNTIME_TESTING_RANDOM_TENSOR_H_

// Random tensors for tests and benchmarks.

#include <cstdint>
#include <random>
#include <vector>

#include "runtime/tensor.h"

namespace quest {

// A float32 CPU tensor of `shape` whose elements are drawn, in order, from
// N(mean, stddev^2) with `rng`.
Tensor RandomTensor(std::vector<int64_t> shape, std::mt19937& rng, float mean = 0.0f,
                    float stddev = 1.0f);

}  // namespace quest

#endif  // QUEST_RUNTIME_TESTING_RANDOM_TENSOR_H_
