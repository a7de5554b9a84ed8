#include "runtime/testing/random_tensor.h"

#include <utility>

namespace quest {

Tensor RandomTensor(std::vector<int64_t> shape, std::mt19937& rng, float mean, float stddev) {
  Tensor t = Tensor::Empty(DType::kFloat32, std::move(shape));
  std::normal_distribution<float> dist(mean, stddev);
  float* data = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) data[i] = dist(rng);
  return t;
}

}  // namespace quest
