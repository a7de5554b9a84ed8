// Backend::TopK (sampling candidates) of the CUDA backend against the CPU
// backend: rows of vocabulary-sized logits with many exact ties and NaNs,
// k from 1 (greedy) to 256. The order is part of the contract (best first,
// ties by ascending id), so ids and values must be identical.
//
// Needs a GPU (tags = ["gpu"]).

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "ops/cpu/cpu_backend.h"
#include "ops/cuda/cuda_backend.h"

namespace quest::ops {
namespace {

TEST(CudaTopKTest, MatchesCpuIncludingTiesAndNaN) {
  auto cpu = CreateCpuBackend();
  absl::StatusOr<std::unique_ptr<Backend>> gpu = CreateCudaBackend();
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  std::mt19937 rng(11);
  for (int64_t vocab : {7, 1000, 49152, 152064}) {
    for (int64_t rows : {1, 3, 8}) {
      for (int k : {1, 2, 40, 256}) {
        if (k > vocab) continue;
        // Coarse levels make exact ties common, including at the k-th value.
        const int levels = vocab < 1000 ? 3 : 400;
        std::uniform_int_distribution<int> level(0, levels);
        Tensor host = Tensor::Empty(DType::kFloat32, {rows, vocab});
        for (int64_t i = 0; i < host.numel(); ++i) host.data<float>()[i] = 0.03125f * level(rng) - 4.0f;
        if (vocab > 10) host.data<float>()[5] = NAN;
        Tensor dev = (*gpu)->Allocate(DType::kFloat32, {rows, vocab});
        (*gpu)->CopyFromHost(host, dev);
        Tensor want_ids = Tensor::Empty(DType::kInt32, {rows, k}), want = Tensor::Empty(DType::kFloat32, {rows, k});
        Tensor got_ids = Tensor::Empty(DType::kInt32, {rows, k}), got = Tensor::Empty(DType::kFloat32, {rows, k});
        for (int64_t i = 0; i < rows * k; ++i) got_ids.data<int32_t>()[i] = -7;  // poison
        cpu->TopK(host, k, want_ids, want);
        (*gpu)->TopK(dev, k, got_ids, got);
        for (int64_t i = 0; i < rows * k; ++i) {
          ASSERT_EQ(got_ids.data<int32_t>()[i], want_ids.data<int32_t>()[i])
              << "vocab " << vocab << " rows " << rows << " k " << k << " entry " << i;
          ASSERT_EQ(got.data<float>()[i], want.data<float>()[i]);
        }
      }
    }
  }
}

// k = 1 takes its own one-pass kernel: rows where its comparison rules
// decide (the CPU's order: NaN lowest, -0 == +0, ties to the lower index).
TEST(CudaTopKTest, GreedyEdgeRows) {
  auto cpu = CreateCpuBackend();
  absl::StatusOr<std::unique_ptr<Backend>> gpu = CreateCudaBackend();
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  const float inf = INFINITY;
  const std::vector<std::vector<float>> rows = {
      {NAN, NAN, NAN, NAN},                  // all NaN: the first
      {-1.0f, -2.0f, 0.0f, -0.0f, -3.0f},    // +0 and -0 tie: the lower index
      {-1.0f, -0.0f, 0.0f, -3.0f},           // the same, -0 first
      {-inf, -inf, NAN, -inf},               // -inf beats NaN
      {1.0f, inf, 2.0f, inf, NAN},           // +inf, twice
  };
  for (size_t r = 0; r < rows.size(); ++r) {
    const int64_t n = static_cast<int64_t>(rows[r].size());
    Tensor host = Tensor::Empty(DType::kFloat32, {1, n});
    std::copy(rows[r].begin(), rows[r].end(), host.data<float>());
    Tensor dev = (*gpu)->Allocate(DType::kFloat32, {1, n});
    (*gpu)->CopyFromHost(host, dev);
    Tensor want_ids = Tensor::Empty(DType::kInt32, {1, 1}), want = Tensor::Empty(DType::kFloat32, {1, 1});
    Tensor got_ids = Tensor::Empty(DType::kInt32, {1, 1}), got = Tensor::Empty(DType::kFloat32, {1, 1});
    got_ids.data<int32_t>()[0] = -7;
    cpu->TopK(host, 1, want_ids, want);
    (*gpu)->TopK(dev, 1, got_ids, got);
    EXPECT_EQ(got_ids.data<int32_t>()[0], want_ids.data<int32_t>()[0]) << "row " << r;
    EXPECT_EQ(std::memcmp(got.data<float>(), want.data<float>(), sizeof(float)), 0) << "row " << r;
  }
}

}  // namespace
}  // namespace quest::ops
