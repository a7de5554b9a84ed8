#ifndef QUEST_OPS_CUDA_SAMPLING_KERNELS_H_
#define QUEST_OPS_CUDA_SAMPLING_KERNELS_H_

// Candidate selection for sampling on the GPU (Backend::TopK in
// runtime/backend.h is the contract; the CPU backend is the reference).

#include <cuda_runtime_api.h>

#include <cstdint>

namespace quest::ops::cuda {

// For each row of x [rows, n] (f32): the k largest values (NaN ranks lowest;
// among equal values the lower indices) into ids/values [rows, k], in no
// particular order (the caller sorts k entries). One CTA per row: a radix
// select of the k-th largest value, then a pass that collects the rows'
// winners; k = 1 (greedy) is one pass that keeps each thread's best.
// 1 <= k <= n.
cudaError_t LaunchRowTopK(const float* x, int64_t rows, int64_t n, int k, int32_t* ids,
                          float* values, cudaStream_t stream);

}  // namespace quest::ops::cuda

#endif  // QUEST_OPS_CUDA_SAMPLING_KERNELS_H_
