#ifndef QUEST_OPS_CPU_CPU_BACKEND_H_
#define QUEST_OPS_CPU_CPU_BACKEND_H_

// The reference backend: float32 on the host. GEMMs go through OpenBLAS;
// everything else is plain loops written to be obviously right, because GPU
// kernels are tested against these.

#include <memory>

#include "runtime/backend.h"

namespace quest::ops {

struct CpuBackendOptions {
  // Threads for BLAS; 0 leaves OpenBLAS's default (all cores).
  int num_threads = 0;
};

std::unique_ptr<Backend> CreateCpuBackend(const CpuBackendOptions& options = {});

}  // namespace quest::ops

#endif  // QUEST_OPS_CPU_CPU_BACKEND_H_
