// Quest's page bounds and top-k page selection (see quest_kernels.h).

#include <cmath>

#include "ops/cuda/device_util.cuh"
#include "ops/cuda/quest_kernels.h"

namespace quest::ops::cuda {

cudaError_t LaunchUpdatePageBounds(ElemType, const PageBoundsParams&, cudaStream_t) {
  return cudaErrorNotSupported;  // being written
}

cudaError_t LaunchSelectTopPages(ElemType, const TopPagesParams&, cudaStream_t) {
  return cudaErrorNotSupported;  // being written
}

}  // namespace quest::ops::cuda
