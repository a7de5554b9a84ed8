// Backend::TopK (sampling candidates) of the CUDA backend against the CPU
// backend: rows of vocabulary-sized logits with many exact ties and NaNs,
// k from 1 (greedy) to 256. The order is part of the contract (best first,
// ties by ascending id), so ids and values must be identical.
//
// Needs a GPU (tags = ["gpu"]).

#include <cmath>
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

}  // namespace
}  // namespace quest::ops
