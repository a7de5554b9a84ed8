#ifndef QUEST_OPS_CUDA_CUDA_BACKEND_H_
#define QUEST_OPS_CUDA_CUDA_BACKEND_H_

// The CUDA backend: activations and KV pages in bf16 (or f16) on one GPU,
// float32 accumulation everywhere, GEMMs through cuBLASLt. Tensors it makes
// live on Device::kCuda; the small per-call host arrays of the op set
// (token ids, positions, page tables, selections, masks) are uploaded per
// call. Ops are asynchronous on the backend's stream; ToHost synchronises.
// Every CUDA call is checked: a failed one is a fatal error naming it.

#include <memory>

#include "absl/status/statusor.h"
#include "runtime/backend.h"

namespace quest::ops {

struct CudaBackendOptions {
  int device = 0;
  // kBFloat16 or kFloat16.
  DType dtype = DType::kBFloat16;
  // SelectTopPages' implementation (cuda::TopPagesParams::variant: 0 the
  // default, 1, 2, 5 or 6). For measuring the alternatives; every one
  // selects the same pages.
  int quest_select_variant = 0;
  // PagedAttention (or PagedAttentionBatch) over the table the
  // SelectTopPages call just before it made waits, block by block, for its
  // own KV head's row instead of for the whole select to end
  // (cuda::PagedAttentionParams::ready). An UpdatePageBounds, Linear or
  // another attention in between, or attention weights, turn it off for
  // that attention. Off by default: on an H100 the Quest step with it was
  // within noise of without (32K MHA B=2048 FP8 4.63x dense vs 4.51x, 128K
  // 12.90x vs 12.82x, attention_bench session 5), correct (bit-identical).
  bool per_head_select_wait = false;
  // Linear layers of up to cuda::kMaxGemvRows rows of x (decode steps) run
  // on the backend's own kernels (ops/cuda/gemv_kernels.h) instead of
  // cuBLASLt. For measuring the two side by side; on by default.
  bool decode_gemv = true;
  // Its implementation (cuda::GemvParams::variant: 0 the default, 1 CUDA
  // cores, 2 tensor cores; a shape the one asked for does not take goes to
  // cuBLASLt) and the CUDA-core kernel's weight rows per CTA
  // (cuda::GemvParams::rows_per_cta: 2, 4 or 8; 0 the default). Tuning.
  int gemv_variant = 0;
  int gemv_rows_per_cta = 0;
  // The cudaStream_t every op runs on. Null: the backend creates its own
  // (blocking) stream. A caller's stream lets an embedding service order
  // the backend's work against its own and capture a run of ops (a decode
  // step, say) into a CUDA graph. A capture can hold no copy of an op's
  // small host arrays: run the same calls once uncaptured first, so that
  // their page tables and selections are already on the device (ops that
  // upload per call, like Embedding's token ids or a multi-page
  // UpdatePageBounds' table, cannot be captured). A graph holds the
  // backend's scratch buffers as they were at capture: a later call that
  // needs more (a longer context, a larger batch) regrows them, so capture
  // again after such a call before replaying. The caller keeps the
  // stream alive until the backend and every tensor it allocated are gone
  // (their memory returns to the pool in the stream's order).
  void* stream = nullptr;
};

// FAILED_PRECONDITION (naming the CUDA error) when there is no usable GPU;
// INVALID_ARGUMENT for an unsupported dtype or device index.
absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(const CudaBackendOptions& options = {});

}  // namespace quest::ops

#endif  // QUEST_OPS_CUDA_CUDA_BACKEND_H_
