#include "ops/cuda/cuda_backend.h"

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "glog/logging.h"
#include "ops/cuda/attention_kernels.h"
#include "ops/cuda/gemv_kernels.h"
#include "ops/cuda/kernels.h"
#include "ops/cuda/prefill_attention.h"
#include "ops/cuda/quest_kernels.h"
#include "ops/cuda/sampling_kernels.h"

namespace quest::ops {
namespace {

#define QUEST_CUDA_CHECK(expr)                                                         \
  do {                                                                                 \
    const cudaError_t quest_err = (expr);                                              \
    CHECK(quest_err == cudaSuccess) << #expr << ": " << cudaGetErrorName(quest_err) << ": " \
                                    << cudaGetErrorString(quest_err);                  \
  } while (0)

#define QUEST_CUBLAS_CHECK(expr)                                                     \
  do {                                                                               \
    const cublasStatus_t quest_st = (expr);                                          \
    CHECK(quest_st == CUBLAS_STATUS_SUCCESS) << #expr << ": cuBLAS status " << quest_st; \
  } while (0)

constexpr size_t kWorkspaceBytes = size_t{32} << 20;

// Largest power of two (<= 256) dividing the address: cuBLASLt picks
// kernels by the alignment it is promised.
uint32_t Alignment(const void* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  uint32_t align = 256;
  while (align > 1 && a % align != 0) align >>= 1;
  return align;
}

cudaDataType_t CudaType(DType t) {
  switch (t) {
    case DType::kFloat32: return CUDA_R_32F;
    case DType::kFloat16: return CUDA_R_16F;
    case DType::kBFloat16: return CUDA_R_16BF;
    case DType::kInt32: return CUDA_R_32I;
    case DType::kFloat8E4M3: return CUDA_R_8F_E4M3;
  }
  return CUDA_R_32F;
}

// A growable device buffer for the small per-call host arrays.
class DeviceScratch {
 public:
  ~DeviceScratch() {
    if (ptr_ != nullptr) cudaFree(ptr_);
  }
  void* Ensure(size_t bytes, cudaStream_t stream) {
    if (bytes > capacity_) {
      if (ptr_ != nullptr) {
        // Kernels queued earlier may still read it.
        QUEST_CUDA_CHECK(cudaStreamSynchronize(stream));
        QUEST_CUDA_CHECK(cudaFree(ptr_));
        ptr_ = nullptr;
      }
      capacity_ = std::max<size_t>(bytes, 256) * 2;
      QUEST_CUDA_CHECK(cudaMalloc(&ptr_, capacity_));
      zeroed_ = 0;
    }
    return ptr_;
  }
  // Ensure, for counters that start at zero and that the kernels using them
  // leave zero: bytes not handed out before are zeroed, in stream order.
  void* EnsureZeroed(size_t bytes, cudaStream_t stream) {
    void* p = Ensure(bytes, stream);
    if (bytes > zeroed_) {
      QUEST_CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, stream));
      zeroed_ = bytes;
    }
    return p;
  }
  // Copies host bytes in, in stream order (the host buffer may be reused at
  // once: pageable copies are staged before cudaMemcpyAsync returns).
  template <typename T>
  const T* Upload(const T* host, size_t count, cudaStream_t stream) {
    void* p = Ensure(count * sizeof(T), stream);
    if (count > 0) {
      QUEST_CUDA_CHECK(cudaMemcpyAsync(p, host, count * sizeof(T), cudaMemcpyHostToDevice, stream));
    }
    uploaded_.clear();
    return static_cast<const T*>(p);
  }
  // Upload, skipped when the buffer already holds these bytes from the
  // previous UploadIfChanged (a host compare is cheaper than a pageable copy
  // and its wait in the stream).
  template <typename T>
  const T* UploadIfChanged(const T* host, size_t count, cudaStream_t stream) {
    const size_t bytes = count * sizeof(T);
    if (ptr_ != nullptr && uploaded_.size() == bytes && std::memcmp(uploaded_.data(), host, bytes) == 0) {
      return static_cast<const T*>(ptr_);
    }
    const T* p = Upload(host, count, stream);
    const char* h = reinterpret_cast<const char*>(host);
    uploaded_.assign(h, h + bytes);
    return p;
  }

 private:
  void* ptr_ = nullptr;
  size_t capacity_ = 0;
  size_t zeroed_ = 0;           // EnsureZeroed's bytes
  std::vector<char> uploaded_;  // what UploadIfChanged last put there
};

// The last few distinct page tables uploaded (KV writes and single
// sequences' attention), each in its own device buffer. A forward step
// writes the layers' K/V sequence by sequence (layer-major), so the tables
// rotate over the batch: with one buffer every call would cross the bus
// again; with a small cache each sequence's table is uploaded once per step
// (a host compare is far cheaper than a pageable copy and its wait in the
// stream).
class PageTableCache {
 public:
  const int32_t* Get(const int32_t* host, size_t count, cudaStream_t stream) {
    const size_t bytes = count * sizeof(int32_t);
    ++clock_;
    Entry* victim = &entries_[0];
    for (Entry& e : entries_) {
      if (e.used != 0 && e.bytes.size() == bytes && std::memcmp(e.bytes.data(), host, bytes) == 0) {
        e.used = clock_;
        return static_cast<const int32_t*>(e.buffer.Ensure(bytes, stream));
      }
      if (e.used < victim->used) victim = &e;
    }
    // Stream order keeps kernels queued earlier on the old contents.
    const int32_t* p = victim->buffer.Upload(host, count, stream);
    const char* h = reinterpret_cast<const char*>(host);
    victim->bytes.assign(h, h + bytes);
    victim->used = clock_;
    return p;
  }

 private:
  struct Entry {
    DeviceScratch buffer;
    std::vector<char> bytes;
    uint64_t used = 0;  // 0: empty
  };
  static constexpr int kEntries = 16;
  Entry entries_[kEntries];
  uint64_t clock_ = 0;
};

// The backend's stream, shared with every tensor it allocated: a tensor's
// memory returns to the pool in the stream's order, so the stream must
// outlive the backend while such tensors do.
struct OwnedStream {
  cudaStream_t stream = nullptr;
  bool owned = true;  // false: the caller's (CudaBackendOptions::stream)
  ~OwnedStream() {
    if (stream != nullptr) {
      cudaStreamSynchronize(stream);
      if (owned) cudaStreamDestroy(stream);
    }
  }
};

// Everything cuBLASLt needs for one GEMM shape, built once.
struct GemmPlan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo;
  bool bias_epilogue = false;
};

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(const CudaBackendOptions& options)
      : device_(options.device),
        dtype_(options.dtype),
        select_variant_(options.quest_select_variant),
        per_head_select_wait_(options.per_head_select_wait),
        decode_gemv_(options.decode_gemv),
        gemv_variant_(options.gemv_variant),
        gemv_rows_per_cta_(options.gemv_rows_per_cta),
        caller_stream_(static_cast<cudaStream_t>(options.stream)) {}

  absl::Status Init() {
    if (cudaError_t e = cudaSetDevice(device_); e != cudaSuccess) {
      return absl::FailedPreconditionError(
          absl::StrCat("CUDA backend: cudaSetDevice(", device_, "): ", cudaGetErrorString(e)));
    }
    owned_stream_ = std::make_shared<OwnedStream>();
    if (caller_stream_ != nullptr) {
      owned_stream_->stream = caller_stream_;
      owned_stream_->owned = false;
    } else if (cudaError_t e = cudaStreamCreate(&owned_stream_->stream); e != cudaSuccess) {
      return absl::FailedPreconditionError(
          absl::StrCat("CUDA backend: cudaStreamCreate: ", cudaGetErrorString(e)));
    }
    stream_ = owned_stream_->stream;
    // Tensors come from the device's stream-ordered pool (cudaMallocAsync).
    // With no release threshold, freed blocks stay cached in the pool and
    // later allocations reuse them, so a decode step's dozen activation
    // buffers cost no cudaMalloc/cudaFree (cudaFree synchronises the device).
    cudaMemPool_t pool = nullptr;
    if (cudaError_t e = cudaDeviceGetDefaultMemPool(&pool, device_); e != cudaSuccess) {
      return absl::FailedPreconditionError(
          absl::StrCat("CUDA backend: no stream-ordered memory pool: ", cudaGetErrorString(e)));
    }
    uint64_t keep_all = UINT64_MAX;
    if (cudaError_t e = cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep_all);
        e != cudaSuccess) {
      return absl::FailedPreconditionError(
          absl::StrCat("CUDA backend: memory pool threshold: ", cudaGetErrorString(e)));
    }
    if (cublasStatus_t s = cublasLtCreate(&lt_); s != CUBLAS_STATUS_SUCCESS) {
      return absl::FailedPreconditionError(absl::StrCat("CUDA backend: cublasLtCreate: status ", s));
    }
    if (cudaError_t e = cudaMalloc(&workspace_, kWorkspaceBytes); e != cudaSuccess) {
      return absl::ResourceExhaustedError(
          absl::StrCat("CUDA backend: cuBLASLt workspace: ", cudaGetErrorString(e)));
    }
    return absl::OkStatus();
  }

  ~CudaBackend() override {
    if (stream_ != nullptr) cudaStreamSynchronize(stream_);
    for (auto& [key, plan] : plans_) {
      cublasLtMatrixLayoutDestroy(plan.a);
      cublasLtMatrixLayoutDestroy(plan.b);
      cublasLtMatrixLayoutDestroy(plan.c);
      cublasLtMatmulDescDestroy(plan.desc);
    }
    if (workspace_ != nullptr) cudaFree(workspace_);
    if (lt_ != nullptr) cublasLtDestroy(lt_);
    // The stream goes with the last tensor still holding owned_stream_.
  }

  Device device() const override { return Device::kCuda; }
  const char* name() const override { return "cuda"; }
  DType activation_dtype() const override { return dtype_; }

  absl::StatusOr<Tensor> UploadWeight(const Tensor& host) override {
    if (host.device() != Device::kCpu) {
      return absl::InvalidArgumentError("cuda backend: weight is not on the host");
    }
    Tensor converted = host.AsType(dtype_);
    Tensor dev = Allocate(dtype_, host.shape());
    QUEST_CUDA_CHECK(cudaMemcpyAsync(dev.raw_data(), converted.raw_data(), converted.nbytes(),
                                     cudaMemcpyHostToDevice, stream_));
    QUEST_CUDA_CHECK(cudaStreamSynchronize(stream_));  // `converted` dies here
    return dev;
  }

  Tensor Allocate(DType dtype, std::vector<int64_t> shape) override {
    int64_t numel = 1;
    for (int64_t d : shape) {
      CHECK_GE(d, 0) << "negative dimension";
      numel *= d;
    }
    const size_t bytes = std::max<size_t>(static_cast<size_t>(numel) * DTypeSize(dtype), 1);
    void* p = nullptr;
    QUEST_CUDA_CHECK(cudaMallocAsync(&p, bytes, stream_));
    // Back to the pool once the work queued so far is done; fails harmlessly
    // once the runtime is unloading at exit.
    std::shared_ptr<void> storage(p, [owner = owned_stream_](void* q) { cudaFreeAsync(q, owner->stream); });
    return Tensor::Wrap(std::move(storage), p, dtype, std::move(shape), Device::kCuda);
  }

  Tensor AllocateZeros(DType dtype, std::vector<int64_t> shape) override {
    Tensor t = Allocate(dtype, std::move(shape));
    QUEST_CUDA_CHECK(cudaMemsetAsync(t.raw_data(), 0, t.nbytes(), stream_));
    return t;
  }

  Tensor ToHost(const Tensor& t) override {
    if (t.device() == Device::kCpu) return t.dtype() == DType::kInt32 ? t.Clone() : t.ToFloat32().Clone();
    Tensor host = Tensor::Empty(t.dtype(), t.shape());
    QUEST_CUDA_CHECK(cudaMemcpyAsync(host.raw_data(), t.raw_data(), t.nbytes(),
                                     cudaMemcpyDeviceToHost, stream_));
    QUEST_CUDA_CHECK(cudaStreamSynchronize(stream_));
    return host.dtype() == DType::kInt32 ? host : host.ToFloat32();
  }

  void CopyFromHost(const Tensor& host, Tensor& device_tensor) override {
    CHECK(device_tensor.device() == Device::kCuda);
    CHECK_EQ(host.numel(), device_tensor.numel())
        << host.ShapeString() << " -> " << device_tensor.ShapeString();
    CHECK((host.dtype() == DType::kInt32) == (device_tensor.dtype() == DType::kInt32))
        << "CopyFromHost between index and float tensors";
    Tensor converted = host.dtype() == DType::kInt32 ? host : host.AsType(device_tensor.dtype());
    QUEST_CUDA_CHECK(cudaMemcpyAsync(device_tensor.raw_data(), converted.raw_data(),
                                     converted.nbytes(), cudaMemcpyHostToDevice, stream_));
    QUEST_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }

  void Embedding(const Tensor& table, absl::Span<const int32_t> ids, Tensor& out) override {
    CheckCompute(table, "embedding table");
    CheckCompute(out, "embedding out");
    const int32_t* d_ids = ids_.Upload(ids.data(), ids.size(), stream_);
    QUEST_CUDA_CHECK(cuda::LaunchEmbedding(type(), table.raw_data(), d_ids,
                                           static_cast<int64_t>(ids.size()), table.dim(1),
                                           out.raw_data(), stream_));
  }

  void Linear(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y) override {
    pending_select_ = {};  // a programmatically launched kernel of ours, or cuBLASLt's
    CheckLinear(x, w, bias, y);
    const int64_t k = x.dim(-1), m = x.numel() / k, n = w.dim(0);
    if (m == 0) return;
    const LinearOut one{&w, bias, &y};
    if (TryGemv(x, {&one, 1})) return;
    const bool epilogue = bias != nullptr && y.dtype() == dtype_;
    uint32_t align = std::min({Alignment(x.raw_data()), Alignment(w.raw_data()), Alignment(y.raw_data())});
    if (epilogue) align = std::min(align, Alignment(bias->raw_data()));
    GemmPlan& plan = Plan(m, n, k, y.dtype(), epilogue, align);
    if (epilogue) {
      const void* bias_ptr = bias->raw_data();
      QUEST_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                        &bias_ptr, sizeof(bias_ptr)));
    }
    const float alpha = 1.0f, beta = 0.0f;
    // Column-major view: y^T [n, m] = w [k, n]^T . x^T [k, m].
    QUEST_CUBLAS_CHECK(cublasLtMatmul(lt_, plan.desc, &alpha, w.raw_data(), plan.a, x.raw_data(),
                                      plan.b, &beta, y.raw_data(), plan.c, y.raw_data(), plan.c,
                                      &plan.algo, workspace_, kWorkspaceBytes, stream_));
    if (bias != nullptr && !epilogue) {
      QUEST_CUDA_CHECK(cuda::LaunchAddBiasF32(type(), y.data<float>(), bias->raw_data(), m, n, stream_));
    }
  }

  // Decode-shaped groups (every output of one dtype, at most
  // cuda::kMaxGemvParts) run as one GEMV launch; others one by one.
  void LinearGroup(const Tensor& x, absl::Span<const LinearOut> outs) override {
    if (outs.size() > 1 && outs.size() <= static_cast<size_t>(cuda::kMaxGemvParts)) {
      bool same_out = true;
      for (const LinearOut& o : outs) {
        CheckLinear(x, *o.w, o.bias, *o.y);
        same_out &= o.y->dtype() == outs[0].y->dtype();
      }
      pending_select_ = {};
      if (same_out && x.numel() > 0 && TryGemv(x, outs)) return;
    }
    for (const LinearOut& o : outs) Linear(x, *o.w, o.bias, *o.y);
  }

  void RmsNorm(const Tensor& x, const Tensor& weight, float eps, Tensor& y) override {
    pending_select_ = {};  // a programmatically launched kernel of its own
    CheckCompute(x, "rmsnorm x");
    CheckCompute(weight, "rmsnorm weight");
    CheckCompute(y, "rmsnorm y");
    const int64_t d = x.dim(-1), m = x.numel() / d;
    QUEST_CUDA_CHECK(cuda::LaunchRmsNorm(type(), x.raw_data(), weight.raw_data(), eps, m, d,
                                         y.raw_data(), stream_));
  }

  void AddRmsNorm(Tensor& x, const Tensor& y, const Tensor& weight, float eps, Tensor& out) override {
    pending_select_ = {};  // a programmatically launched kernel of its own
    CheckCompute(x, "add-rmsnorm x");
    CheckCompute(y, "add-rmsnorm y");
    CheckCompute(weight, "add-rmsnorm weight");
    CheckCompute(out, "add-rmsnorm out");
    CHECK_EQ(x.numel(), y.numel());
    CHECK_EQ(x.numel(), out.numel());
    const int64_t d = x.dim(-1), m = x.numel() / d;
    CHECK_EQ(weight.numel(), d);
    QUEST_CUDA_CHECK(cuda::LaunchAddRmsNorm(type(), x.raw_data(), y.raw_data(), weight.raw_data(), eps, m, d,
                                            out.raw_data(), stream_));
  }

  void Add(Tensor& x, const Tensor& y) override {
    pending_select_ = {};  // a programmatically launched kernel of its own
    CheckCompute(x, "add x");
    CheckCompute(y, "add y");
    CHECK_EQ(x.numel(), y.numel());
    QUEST_CUDA_CHECK(cuda::LaunchAdd(type(), x.raw_data(), y.raw_data(), x.numel(), stream_));
  }

  void SiluMul(const Tensor& gate, const Tensor& up, Tensor& out) override {
    pending_select_ = {};  // a programmatically launched kernel of its own
    CheckCompute(gate, "silu gate");
    CheckCompute(up, "silu up");
    CheckCompute(out, "silu out");
    CHECK_EQ(gate.numel(), up.numel());
    CHECK_EQ(gate.numel(), out.numel());
    QUEST_CUDA_CHECK(cuda::LaunchSiluMul(type(), gate.raw_data(), up.raw_data(), out.raw_data(),
                                         gate.numel(), stream_));
  }

  void Rope(Tensor& x, absl::Span<const int32_t> positions, const RopeParams& rope) override {
    pending_select_ = {};  // a programmatically launched kernel of its own
    CheckCompute(x, "rope x");
    const int64_t n = x.dim(0), heads = x.dim(1), d = x.dim(2);
    CHECK_EQ(static_cast<int64_t>(rope.inv_freq.size()), d / 2);
    CHECK_EQ(static_cast<int64_t>(positions.size()), n);
    // The frequencies rarely change between calls: upload them only then.
    if (!std::equal(rope.inv_freq.begin(), rope.inv_freq.end(), inv_freq_host_.begin(),
                    inv_freq_host_.end())) {
      inv_freq_host_.assign(rope.inv_freq.begin(), rope.inv_freq.end());
      inv_freq_dev_ = inv_freq_.Upload(inv_freq_host_.data(), inv_freq_host_.size(), stream_);
    }
    // A step's Rope calls (q and k of every layer) share its positions: one
    // copy per step, not a copy (and a wait for it in the stream) per call.
    const int32_t* d_pos = positions_.UploadIfChanged(positions.data(), positions.size(), stream_);
    QUEST_CUDA_CHECK(cuda::LaunchRope(type(), x.raw_data(), d_pos, inv_freq_dev_,
                                      rope.attention_scaling, n, heads, d, stream_));
  }

  void WriteKvPages(const Tensor& k, const Tensor& v, absl::Span<const int32_t> page_table,
                    int64_t start, int page_size, Tensor& k_pages, Tensor& v_pages) override {
    pending_select_ = {};  // a programmatically launched kernel of its own
    CheckCompute(k, "kv k");
    CheckCompute(v, "kv v");
    CheckCompute(k_pages, "k pages");
    CheckCompute(v_pages, "v pages");
    const int64_t n = k.dim(0);
    if (n == 0) return;
    const int64_t row = k.numel() / n;
    CHECK_LE(start + n, static_cast<int64_t>(page_table.size()) * page_size);
    const int32_t* d_table = page_tables_.Get(page_table.data(), page_table.size(), stream_);
    QUEST_CUDA_CHECK(cuda::LaunchWriteKvPages(type(), k.raw_data(), v.raw_data(), d_table, start, n,
                                              row, page_size, k_pages.raw_data(), v_pages.raw_data(),
                                              stream_));
  }

  void PagedAttention(const PagedAttentionArgs& a, Tensor& out) override {
    const PendingSelect select = std::exchange(pending_select_, {});
    cuda::PagedAttentionParams p = ShapeParams(a, out);
    p.q = a.q->raw_data();
    p.out = out.raw_data();
    p.kv_len = a.kv_len;
    p.page_table = page_tables_.Get(a.page_table.data(), a.page_table.size(), stream_);
    if (a.selected_table != nullptr) {
      CHECK(a.selected_indptr.empty()) << "cuda paged attention: both a CSR and a table selection";
      CheckSelectedTable(*a.selected_table, p.num_kv_heads);
      p.chunk = SelectionChunk(a);
      p.chunks = a.selected_table->data<int32_t>();
      p.chunks_per_head = static_cast<int>(a.selected_table->dim(1));
    } else if (!a.selected_indptr.empty()) {
      CHECK_EQ(static_cast<int>(a.selected_indptr.size()), p.num_kv_heads + 1);
      p.chunk = SelectionChunk(a);
      // Host selections often repeat (a static policy, or one selection
      // shared by the layers): unchanged lists are not copied again.
      p.indptr = indptr_.UploadIfChanged(a.selected_indptr.data(), a.selected_indptr.size(), stream_);
      // A valid pointer even for an empty list (nothing reads it then).
      p.chunks = a.selected_chunks.empty()
                     ? p.indptr
                     : chunks_.UploadIfChanged(a.selected_chunks.data(), a.selected_chunks.size(), stream_);
    }
    if (a.token_valid != nullptr) {
      p.mask_stride = static_cast<int64_t>(a.page_table.size()) * a.page_size;
      p.token_valid = valid_.Upload(a.token_valid, p.num_kv_heads * p.mask_stride, stream_);
    }
    const bool weights = a.attention_sum != nullptr || a.attention_last != nullptr;
    const size_t weight_count = static_cast<size_t>(p.num_heads) * a.kv_len;
    if (weights) {
      p.lse = static_cast<float*>(lse_.Ensure(sizeof(float) * p.n * p.num_heads, stream_));
      float* w = static_cast<float*>(weights_.Ensure(2 * sizeof(float) * weight_count, stream_));
      p.attention_sum = w;
      p.attention_last = w + weight_count;
      QUEST_CUDA_CHECK(cudaMemsetAsync(w, 0, 2 * sizeof(float) * weight_count, stream_));
    }
    // Dense prefill chunks run on the tensor-core flash kernel; everything
    // else (decode, selections, masks, weights) on the split-KV kernel.
    if (cuda::PrefillAttentionSupported(p)) {
      QUEST_CUDA_CHECK(cuda::LaunchPrefillAttention(type(), p, stream_));
      return;
    }
    // The most candidate keys a KV head visits (the split-KV launch is
    // sized by it).
    if (a.selected_table != nullptr) {
      p.max_candidates = static_cast<int64_t>(p.chunks_per_head) * p.chunk;
    } else if (!a.selected_indptr.empty()) {
      int64_t most = 0;
      for (int g = 0; g < p.num_kv_heads; ++g) {
        most = std::max<int64_t>(most, a.selected_indptr[g + 1] - a.selected_indptr[g]);
      }
      p.max_candidates = most * p.chunk;
    } else {
      p.max_candidates = a.kv_len;
    }
    CHECK_LT(p.max_candidates, int64_t{1} << 31) << "cuda paged attention: too many candidates";
    ProvideSplitScratch(cuda::PlanPagedAttention(type(), p), p);
    if (a.selected_table != nullptr && !weights) WaitPerHead(select, a.selected_table->raw_data(), p);
    QUEST_CUDA_CHECK(cuda::LaunchPagedAttention(type(), p, stream_));
    if (weights) {
      QUEST_CUDA_CHECK(cuda::LaunchAttentionWeights(type(), p, stream_));
      if (a.attention_sum != nullptr) {
        QUEST_CUDA_CHECK(cudaMemcpyAsync(a.attention_sum, p.attention_sum, sizeof(float) * weight_count,
                                         cudaMemcpyDeviceToHost, stream_));
      }
      if (a.attention_last != nullptr) {
        QUEST_CUDA_CHECK(cudaMemcpyAsync(a.attention_last, p.attention_last,
                                         sizeof(float) * weight_count, cudaMemcpyDeviceToHost, stream_));
      }
      QUEST_CUDA_CHECK(cudaStreamSynchronize(stream_));
    }
  }

  // The decode tokens among `args` (one query each, dense or a device
  // selection table, no token mask or weights, the same pools and selection
  // chunk) attend in one split-KV launch (PagedAttentionParams::batch); the
  // rest go through PagedAttention one by one.
  void PagedAttentionBatch(absl::Span<const PagedAttentionArgs> args, absl::Span<Tensor* const> outs) override {
    CHECK_EQ(args.size(), outs.size()) << "cuda paged attention batch: arguments and outputs";
    const PendingSelect select = std::exchange(pending_select_, {});
    members_.clear();
    bool launched = false;  // an attention of its own came after the select
    for (size_t i = 0; i < args.size(); ++i) {
      if (Batchable(args[i], *outs[i]) &&
          (members_.empty() || SameLaunch(args[members_.front()], args[i]))) {
        members_.push_back(i);
      } else {
        PagedAttention(args[i], *outs[i]);
        launched = true;
      }
    }
    if (members_.size() <= 1) {
      if (!launched) pending_select_ = select;  // the one member still follows the select
      for (size_t i : members_) PagedAttention(args[i], *outs[i]);
      return;
    }
    const PagedAttentionArgs& first = args[members_.front()];
    cuda::PagedAttentionParams p = ShapeParams(first, *outs[members_.front()]);
    p.chunk = SelectionChunk(first);
    // Every member's page table in one upload: a layer's calls repeat the
    // step's tables, so after the first layer nothing crosses the bus.
    batch_tables_host_.clear();
    for (size_t i : members_) {
      const PagedAttentionArgs& a = args[i];
      batch_tables_host_.insert(batch_tables_host_.end(), a.page_table.begin(), a.page_table.end());
    }
    const int32_t* tables = batch_tables_.UploadIfChanged(batch_tables_host_.data(), batch_tables_host_.size(), stream_);
    batch_seqs_host_.assign(members_.size(), cuda::DecodeSequence{});
    size_t table_offset = 0;
    for (size_t m = 0; m < members_.size(); ++m) {
      const PagedAttentionArgs& a = args[members_[m]];
      ShapeParams(a, *outs[members_[m]]);  // the same checks for every member
      cuda::DecodeSequence& s = batch_seqs_host_[m];
      s.q = a.q->raw_data();
      s.out = outs[members_[m]]->raw_data();
      s.page_table = tables + table_offset;
      table_offset += a.page_table.size();
      s.kv_len = a.kv_len;
      if (a.selected_table != nullptr) {
        CheckSelectedTable(*a.selected_table, p.num_kv_heads);
        s.chunks = a.selected_table->data<int32_t>();
        s.chunks_per_head = static_cast<int>(a.selected_table->dim(1));
        CHECK_LT(static_cast<int64_t>(s.chunks_per_head) * p.chunk, int64_t{1} << 31)
            << "cuda paged attention: too many candidates";
      }
    }
    const cuda::PagedAttentionPlan plan =
        cuda::PlanPagedAttentionBatch(type(), p, batch_seqs_host_.data(), static_cast<int>(members_.size()));
    ProvideSplitScratch(plan, p);
    p.batch = batch_seqs_.UploadIfChanged(batch_seqs_host_.data(), batch_seqs_host_.size(), stream_);
    p.batch_size = static_cast<int>(members_.size());
    if (!launched) {
      for (const cuda::DecodeSequence& s : batch_seqs_host_) WaitPerHead(select, s.chunks, p);
    }
    QUEST_CUDA_CHECK(cuda::LaunchPagedAttention(type(), p, stream_));
  }

  void UpdatePageBounds(const PageBoundsArgs& a, Tensor& bounds) override {
    pending_select_ = {};  // a programmatically launched kernel of its own
    CheckCompute(*a.k_pages, "k pages");
    CheckBounds(bounds, a.k_pages->dim(2), a.k_pages->dim(3));
    if (a.end <= a.begin) return;
    cuda::PageBoundsParams p;
    p.k_pages = a.k_pages->raw_data();
    p.page_size = a.page_size;
    p.bound_page = a.bound_page;
    p.begin = a.begin;
    p.end = a.end;
    p.num_kv_heads = static_cast<int>(a.k_pages->dim(2));
    p.head_dim = static_cast<int>(a.k_pages->dim(3));
    CHECK(a.bound_page > 0 && a.page_size % a.bound_page == 0)
        << "page bounds: Quest page " << a.bound_page << " vs pool page " << a.page_size;
    CHECK_LE((a.end + a.bound_page - 1) / a.bound_page, PageBoundsCapacity(bounds))
        << "page bounds: positions up to " << a.end << " overflow " << bounds.ShapeString();
    CHECK_LE(a.end, static_cast<int64_t>(a.page_table.size()) * a.page_size);
    // Only the pool pages under [begin, end). A decode step's range lies in
    // one pool page: its physical index goes as a kernel argument (no
    // upload; a hole folds nothing).
    const int64_t first = a.begin / a.page_size, last = (a.end - 1) / a.page_size;
    if (first == last) {
      p.one_page = true;
      p.phys_page = a.page_table[first];
      if (p.phys_page < 0) return;
    } else {
      p.page_table = bounds_table_.Upload(a.page_table.data() + first, last - first + 1, stream_);
      p.table_base = first;
    }
    p.bounds = bounds.raw_data();
    p.bounds_fp8 = bounds.dtype() == DType::kFloat8E4M3;
    QUEST_CUDA_CHECK(cuda::LaunchUpdatePageBounds(type(), p, stream_));
  }

  void SelectTopPages(const TopPagesArgs& a, Tensor& selected) override {
    cuda::TopPagesParams p = TopPagesShape(a, selected);
    p.q = a.q->raw_data();
    p.bounds = a.bounds->raw_data();
    p.num_pages = a.num_pages;
    p.k = a.k;
    const int kv_heads = p.num_kv_heads;
    p.scores = static_cast<float*>(
        scores_.Ensure(sizeof(float) * static_cast<size_t>(kv_heads) * a.num_pages, stream_));
    p.arrivals = static_cast<unsigned*>(select_arrivals_.EnsureZeroed(sizeof(unsigned) * kv_heads, stream_));
    p.selected = selected.data<int32_t>();
    p.variant = select_variant_;
    pending_select_ = {};
    if (per_head_select_wait_) {
      p.ready = static_cast<unsigned*>(select_ready_.EnsureZeroed(sizeof(unsigned) * kv_heads, stream_));
      if (++select_epoch_ == 0) {  // wrapped: no flag may hold a reused epoch
        QUEST_CUDA_CHECK(cudaMemsetAsync(p.ready, 0, sizeof(unsigned) * kv_heads, stream_));
        select_epoch_ = 1;
      }
      p.epoch = select_epoch_;
    }
    QUEST_CUDA_CHECK(cuda::LaunchSelectTopPages(type(), p, stream_));
    if (p.ready != nullptr) pending_select_ = {selected.raw_data(), p.ready, p.epoch};
  }

  // Members of one shape (heads, head_dim, bounds dtype, combine) share two
  // launches per kMaxTopPagesBatch of them; anything else (a mixed batch,
  // a shape the scorer does not hold in registers, a measurement variant or
  // the per-head wait) selects member by member.
  void SelectTopPagesBatch(absl::Span<const TopPagesArgs> args, absl::Span<Tensor* const> selected) override {
    CHECK_EQ(args.size(), selected.size()) << "select top pages batch: " << args.size() << " queries, "
                                           << selected.size() << " outputs";
    if (args.empty()) return;
    // Every member is checked; the first's shape is the batch's.
    const cuda::TopPagesParams shape = TopPagesShape(args[0], *selected[0]);
    bool together = args.size() > 1 && select_variant_ <= 1 && !per_head_select_wait_;
    for (size_t i = 0; i < args.size(); ++i) {
      const cuda::TopPagesParams s = i == 0 ? shape : TopPagesShape(args[i], *selected[i]);
      together = together && s.num_heads == shape.num_heads && s.num_kv_heads == shape.num_kv_heads &&
                 s.head_dim == shape.head_dim && s.bounds_fp8 == shape.bounds_fp8 &&
                 s.combine_sum == shape.combine_sum &&
                 cuda::SelectTopPagesBatchSupported(s, args[i].bounds->raw_data());
    }
    if (!together) {
      for (size_t i = 0; i < args.size(); ++i) SelectTopPages(args[i], *selected[i]);
      return;
    }
    pending_select_ = {};
    size_t floats = 0;
    for (const TopPagesArgs& a : args) floats += static_cast<size_t>(shape.num_kv_heads) * a.num_pages;
    float* scores = static_cast<float*>(scores_.Ensure(sizeof(float) * floats, stream_));
    // The members travel by value in the launch's parameters.
    if (select_batch_ == nullptr) select_batch_ = std::make_unique<cuda::TopPagesBatchParams>();
    cuda::TopPagesBatchParams* batch = select_batch_.get();
    batch->shape = shape;
    batch->shape.scores = scores;
    int64_t offset = 0;
    for (size_t first = 0; first < args.size(); first += cuda::kMaxTopPagesBatch) {
      const size_t count = std::min<size_t>(cuda::kMaxTopPagesBatch, args.size() - first);
      batch->count = static_cast<int>(count);
      for (size_t j = 0; j < count; ++j) {
        const TopPagesArgs& a = args[first + j];
        cuda::TopPagesMember& m = batch->members[j];
        m.q = a.q->raw_data();
        m.bounds = a.bounds->raw_data();
        m.selected = selected[first + j]->data<int32_t>();
        m.num_pages = a.num_pages;
        m.k = a.k;
        m.scores_offset = offset;
        offset += int64_t{shape.num_kv_heads} * a.num_pages;
      }
      QUEST_CUDA_CHECK(cuda::LaunchSelectTopPagesBatch(type(), *batch, stream_));
    }
  }

  void TopK(const Tensor& logits, int k, Tensor& ids, Tensor& values) override {
    CHECK(logits.device() == Device::kCuda && logits.dtype() == DType::kFloat32 && logits.rank() == 2)
        << "top-k: logits " << logits.ShapeString();
    const int64_t rows = logits.dim(0), n = logits.dim(1);
    CHECK(k >= 1 && k <= n && ids.device() == Device::kCpu && ids.dtype() == DType::kInt32 &&
          ids.numel() == rows * k && values.device() == Device::kCpu &&
          values.dtype() == DType::kFloat32 && values.numel() == rows * k)
        << "top-k: k " << k << " of " << logits.ShapeString() << " into " << ids.ShapeString()
        << " / " << values.ShapeString();
    const size_t count = static_cast<size_t>(rows) * k;
    char* scratch = static_cast<char*>(topk_.Ensure(count * (sizeof(int32_t) + sizeof(float)), stream_));
    int32_t* d_ids = reinterpret_cast<int32_t*>(scratch);
    float* d_values = reinterpret_cast<float*>(scratch + count * sizeof(int32_t));
    QUEST_CUDA_CHECK(cuda::LaunchRowTopK(logits.data<float>(), rows, n, k, d_ids, d_values, stream_));
    QUEST_CUDA_CHECK(cudaMemcpyAsync(ids.raw_data(), d_ids, count * sizeof(int32_t),
                                     cudaMemcpyDeviceToHost, stream_));
    QUEST_CUDA_CHECK(cudaMemcpyAsync(values.raw_data(), d_values, count * sizeof(float),
                                     cudaMemcpyDeviceToHost, stream_));
    QUEST_CUDA_CHECK(cudaStreamSynchronize(stream_));
    // The kernel leaves each row's k winners unordered: best first, ties by
    // ascending id, NaN last (the contract's order).
    std::vector<std::pair<float, int32_t>> row(k);
    for (int64_t r = 0; r < rows; ++r) {
      int32_t* ri = ids.data<int32_t>() + r * k;
      float* rv = values.data<float>() + r * k;
      for (int j = 0; j < k; ++j) row[j] = {rv[j], ri[j]};
      std::sort(row.begin(), row.end(), [](const auto& a, const auto& b) {
        return TopKRanksBefore(a.first, a.second, b.first, b.second);
      });
      for (int j = 0; j < k; ++j) {
        rv[j] = row[j].first;
        ri[j] = row[j].second;
      }
    }
  }

 private:
  void CheckLinear(const Tensor& x, const Tensor& w, const Tensor* bias, const Tensor& y) const {
    CheckCompute(x, "linear x");
    CheckCompute(w, "linear w");
    CHECK(y.device() == Device::kCuda && (y.dtype() == dtype_ || y.dtype() == DType::kFloat32))
        << "linear y " << y.ShapeString();
    const int64_t k = x.dim(-1), m = x.numel() / k, n = w.dim(0);
    CHECK_EQ(w.dim(1), k) << x.ShapeString() << " x " << w.ShapeString();
    CHECK_EQ(y.numel(), m * n);
    if (bias != nullptr) {
      CheckCompute(*bias, "linear bias");
      CHECK_EQ(bias->numel(), n) << "linear bias " << bias->ShapeString() << " for " << w.ShapeString();
    }
  }

  // Launches the outputs (checked, of one dtype) as one decode-shaped GEMV
  // when its kernels take them (CudaBackendOptions::decode_gemv).
  bool TryGemv(const Tensor& x, absl::Span<const LinearOut> outs) {
    if (!decode_gemv_ || outs.size() > static_cast<size_t>(cuda::kMaxGemvParts)) return false;
    cuda::GemvParams g;
    g.x = x.raw_data();
    g.k = x.dim(-1);
    g.m = x.numel() / g.k;
    g.y_f32 = outs[0].y->dtype() == DType::kFloat32;
    g.variant = gemv_variant_;
    g.rows_per_cta = gemv_rows_per_cta_;
    g.num_parts = static_cast<int>(outs.size());
    for (size_t j = 0; j < outs.size(); ++j) {
      g.parts[j].w = outs[j].w->raw_data();
      g.parts[j].bias = outs[j].bias != nullptr ? outs[j].bias->raw_data() : nullptr;
      g.parts[j].y = outs[j].y->raw_data();
      g.parts[j].n = outs[j].w->dim(0);
    }
    if (!cuda::GemvSupported(g)) return false;
    QUEST_CUDA_CHECK(cuda::LaunchGemv(type(), g, stream_));
    return true;
  }

  cuda::ElemType type() const {
    return dtype_ == DType::kBFloat16 ? cuda::ElemType::kBFloat16 : cuda::ElemType::kFloat16;
  }

  void CheckCompute(const Tensor& t, const char* what) const {
    CHECK(t.device() == Device::kCuda && t.dtype() == dtype_)
        << "cuda backend: " << what << " is " << t.ShapeString() << " on "
        << (t.device() == Device::kCuda ? "cuda" : "cpu") << ", expected " << DTypeName(dtype_)
        << " on cuda";
  }

  // The launch fields every paged attention call shares (shape, pools,
  // scale), checked against the tensors.
  cuda::PagedAttentionParams ShapeParams(const PagedAttentionArgs& a, const Tensor& out) const {
    const Tensor& q = *a.q;
    CheckCompute(q, "attention q");
    CheckCompute(*a.k_pages, "k pages");
    CheckCompute(*a.v_pages, "v pages");
    CheckCompute(out, "attention out");
    cuda::PagedAttentionParams p;
    p.n = static_cast<int>(q.dim(0));
    p.num_heads = static_cast<int>(q.dim(1));
    p.head_dim = static_cast<int>(q.dim(2));
    p.num_kv_heads = static_cast<int>(a.k_pages->dim(2));
    CHECK_LE(p.head_dim, cuda::kMaxHeadDim) << "cuda paged attention: head_dim " << p.head_dim;
    CHECK_EQ(p.num_heads % p.num_kv_heads, 0);
    CHECK_EQ(out.numel(), static_cast<int64_t>(p.n) * p.num_heads * p.head_dim);
    CHECK_LT(a.kv_len, int64_t{1} << 31) << "cuda paged attention: kv_len " << a.kv_len;
    p.k_pages = a.k_pages->raw_data();
    p.v_pages = a.v_pages->raw_data();
    p.page_size = a.page_size;
    p.scale = a.scale;
    return p;
  }

  static int SelectionChunk(const PagedAttentionArgs& a) {
    return a.selection_chunk > 0 ? a.selection_chunk : a.page_size;
  }

  void CheckSelectedTable(const Tensor& table, int num_kv_heads) const {
    CHECK(table.device() == Device::kCuda && table.dtype() == DType::kInt32 && table.rank() == 2 &&
          table.dim(0) == num_kv_heads)
        << "cuda paged attention: selected_table is " << table.ShapeString() << ", expected ["
        << num_kv_heads << ", per_head] i32 on cuda";
  }

  // Whether a call can join a batched decode launch (see
  // PagedAttentionBatch).
  static bool Batchable(const PagedAttentionArgs& a, const Tensor& out) {
    auto aligned = [](const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; };
    const int64_t d = a.q->rank() == 3 ? a.q->dim(2) : 0;
    return a.q->rank() == 3 && a.q->dim(0) == 1 && (d == 64 || d == 128 || d == 256) &&
           a.selected_indptr.empty() && a.token_valid == nullptr && a.attention_sum == nullptr &&
           a.attention_last == nullptr && aligned(a.q->raw_data()) && aligned(out.raw_data());
  }
  static bool SameLaunch(const PagedAttentionArgs& a, const PagedAttentionArgs& b) {
    return a.k_pages == b.k_pages && a.v_pages == b.v_pages && a.page_size == b.page_size &&
           a.scale == b.scale && a.q->dim(1) == b.q->dim(1) && a.q->dim(2) == b.q->dim(2) &&
           SelectionChunk(a) == SelectionChunk(b);
  }

  // The last SelectTopPages launch while no other programmatically launched
  // kernel (ours: UpdatePageBounds, SelectTopPages, attention; or a GEMM,
  // whose launch cuBLASLt decides) has come after it
  // (CudaBackendOptions::per_head_select_wait): its table, and the flags it
  // publishes each KV head's row with. The other ops launch in plain stream
  // order: an attention after one of them starts after it ends, and it
  // after the select's end.
  struct PendingSelect {
    const void* table = nullptr;
    const unsigned* ready = nullptr;
    unsigned epoch = 0;
  };

  // An attention launched right after `select` over its table (`table`,
  // one of the launch's) waits per KV head for that select's rows
  // (PagedAttentionParams::ready).
  static void WaitPerHead(const PendingSelect& select, const void* table, cuda::PagedAttentionParams& p) {
    if (select.table == nullptr || table != select.table) return;
    p.ready = select.ready;
    p.ready_epoch = select.epoch;
  }

  // The split-KV launch's partial results and dynamic splits' counters.
  void ProvideSplitScratch(const cuda::PagedAttentionPlan& plan, cuda::PagedAttentionParams& p) {
    if (plan.workspace_floats == 0) return;
    p.workspace = static_cast<float*>(attn_workspace_.Ensure(sizeof(float) * plan.workspace_floats, stream_));
    p.counters = static_cast<int*>(attn_counters_.EnsureZeroed(sizeof(int) * plan.counters, stream_));
  }

  // Quest page bounds: in the compute dtype, or FP8 E4M3, shaped by
  // PageBoundsShape for `kv_heads` and `head_dim`.
  void CheckBounds(const Tensor& t, int64_t kv_heads, int64_t head_dim) const {
    CHECK(t.device() == Device::kCuda && (t.dtype() == dtype_ || t.dtype() == DType::kFloat8E4M3) &&
          IsPageBoundsShape(t, kv_heads, head_dim))
        << "cuda backend: page bounds are " << t.ShapeString() << " on "
        << (t.device() == Device::kCuda ? "cuda" : "cpu") << ", expected PageBoundsShape(..., " << kv_heads << ", "
        << head_dim << ") " << DTypeName(dtype_) << " or f8e4m3 on cuda";
  }

  GemmPlan& Plan(int64_t m, int64_t n, int64_t k, DType out, bool bias, uint32_t align) {
    const auto key = std::make_tuple(m, n, k, out, bias, align);
    auto it = plans_.find(key);
    if (it != plans_.end()) return it->second;
    GemmPlan plan;
    plan.bias_epilogue = bias;
    QUEST_CUBLAS_CHECK(cublasLtMatmulDescCreate(&plan.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    QUEST_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
    QUEST_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
    if (bias) {
      const cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
      QUEST_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
    }
    const cudaDataType_t in = CudaType(dtype_);
    QUEST_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan.a, in, k, n, k));
    QUEST_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan.b, in, k, m, k));
    QUEST_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan.c, CudaType(out), n, m, n));
    cublasLtMatmulPreference_t pref = nullptr;
    QUEST_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    const uint64_t ws = kWorkspaceBytes;
    QUEST_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
    for (auto attr : {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES}) {
      QUEST_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, attr, &align, sizeof(align)));
    }
    cublasLtMatmulHeuristicResult_t result;
    int returned = 0;
    QUEST_CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(lt_, plan.desc, plan.a, plan.b, plan.c, plan.c,
                                                      pref, 1, &result, &returned));
    cublasLtMatmulPreferenceDestroy(pref);
    CHECK_GT(returned, 0) << "cuBLASLt has no algorithm for [" << m << ", " << k << "] x [" << n
                          << ", " << k << "]^T -> " << DTypeName(out) << " (alignment " << align << ")";
    plan.algo = result.algo;
    return plans_.emplace(key, plan).first->second;
  }

  // One query's SelectTopPages checks, and the launch parameters its
  // shape fixes (heads, head_dim, bounds dtype, combine).
  cuda::TopPagesParams TopPagesShape(const TopPagesArgs& a, const Tensor& selected) {
    CheckCompute(*a.q, "quest query");
    CheckBounds(*a.bounds, a.bounds->dim(1), a.q->dim(2));
    const int kv_heads = static_cast<int>(a.bounds->dim(1));
    CHECK(selected.device() == Device::kCuda && selected.dtype() == DType::kInt32 &&
          selected.numel() == kv_heads * (a.k + 1))
        << "select top pages: selected is " << selected.ShapeString() << ", expected ["
        << kv_heads << ", " << a.k + 1 << "] i32 on cuda";
    CHECK(a.num_pages >= 1 && a.k >= 0 && a.k <= a.num_pages - 1 && a.num_pages <= PageBoundsCapacity(*a.bounds))
        << "select top pages: k " << a.k << " of " << a.num_pages << " pages, bounds "
        << a.bounds->ShapeString();
    CHECK_EQ(a.q->dim(0), 1) << "select top pages: one decode query";
    cuda::TopPagesParams p;
    p.bounds_fp8 = a.bounds->dtype() == DType::kFloat8E4M3;
    p.num_heads = static_cast<int>(a.q->dim(1));
    p.num_kv_heads = kv_heads;
    p.head_dim = static_cast<int>(a.q->dim(2));
    p.combine_sum = a.combine_sum;
    return p;
  }

  const int device_;
  const DType dtype_;
  const int select_variant_;  // CudaBackendOptions::quest_select_variant
  const bool per_head_select_wait_;  // CudaBackendOptions::per_head_select_wait
  const bool decode_gemv_;           // CudaBackendOptions::decode_gemv
  const int gemv_variant_;           // CudaBackendOptions::gemv_variant
  const int gemv_rows_per_cta_;      // CudaBackendOptions::gemv_rows_per_cta
  const cudaStream_t caller_stream_;  // CudaBackendOptions::stream (null: make one)
  std::unique_ptr<cuda::TopPagesBatchParams> select_batch_;  // SelectTopPagesBatch's launch parameters
  std::shared_ptr<OwnedStream> owned_stream_;
  cudaStream_t stream_ = nullptr;  // owned_stream_->stream
  cublasLtHandle_t lt_ = nullptr;
  void* workspace_ = nullptr;
  std::map<std::tuple<int64_t, int64_t, int64_t, DType, bool, uint32_t>, GemmPlan> plans_;
  DeviceScratch ids_, positions_, inv_freq_, indptr_, chunks_, valid_, lse_, weights_,
      scores_, topk_, bounds_table_;
  // Split-KV attention: partial results of the splits, and the dynamic
  // splits' per-(token, KV head, head tile) chunk counters (zero between
  // launches).
  DeviceScratch attn_workspace_, attn_counters_;
  DeviceScratch select_arrivals_;  // SelectTopPages' per-KV-head counters (zero between launches)
  // per_head_select_wait: the flags SelectTopPages publishes its rows with
  // (TopPagesParams::ready), the last epoch, and the select an attention
  // may follow.
  DeviceScratch select_ready_;
  unsigned select_epoch_ = 0;
  PendingSelect pending_select_;
  PageTableCache page_tables_;  // WriteKvPages' and PagedAttention's
  // PagedAttentionBatch: the members' indices, their page tables (one
  // upload) and launch descriptors.
  std::vector<size_t> members_;
  std::vector<int32_t> batch_tables_host_;
  std::vector<cuda::DecodeSequence> batch_seqs_host_;
  DeviceScratch batch_tables_, batch_seqs_;
  std::vector<float> inv_freq_host_;
  const float* inv_freq_dev_ = nullptr;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(const CudaBackendOptions& options) {
  if (options.dtype != DType::kBFloat16 && options.dtype != DType::kFloat16) {
    return absl::InvalidArgumentError(absl::StrCat("CUDA backend: dtype ", DTypeName(options.dtype),
                                                   " is not supported (bf16 or f16)"));
  }
  const int v = options.quest_select_variant;
  if (v != 0 && v != 1 && v != 2 && v != 5 && v != 6) {
    return absl::InvalidArgumentError(absl::StrCat("CUDA backend: quest_select_variant ", v,
                                                   " is not a select (0, 1, 2, 5 or 6)"));
  }
  if (options.per_head_select_wait && v != 0 && v != 1 && v != 2) {
    return absl::InvalidArgumentError(absl::StrCat("CUDA backend: per_head_select_wait needs a select that "
                                                   "publishes its rows (quest_select_variant 0, 1 or 2, not ",
                                                   v, ")"));
  }
  if (options.gemv_variant < 0 || options.gemv_variant > 2) {
    return absl::InvalidArgumentError(absl::StrCat("CUDA backend: gemv_variant ", options.gemv_variant,
                                                   " is not 0 (the default), 1 (CUDA cores) or 2 (tensor cores)"));
  }
  if (const int r = options.gemv_rows_per_cta; r != 0 && r != 2 && r != 4 && r != 8) {
    return absl::InvalidArgumentError(
        absl::StrCat("CUDA backend: gemv_rows_per_cta ", r, " is not 2, 4 or 8 (or 0, the default)"));
  }
  int count = 0;
  if (cudaError_t e = cudaGetDeviceCount(&count); e != cudaSuccess) {
    return absl::FailedPreconditionError(absl::StrCat("CUDA backend: no usable GPU (cudaGetDeviceCount: ",
                                                      cudaGetErrorName(e), ": ", cudaGetErrorString(e), ")"));
  }
  if (count == 0) return absl::FailedPreconditionError("CUDA backend: no usable GPU (no CUDA device found)");
  if (options.device < 0 || options.device >= count) {
    return absl::InvalidArgumentError(
        absl::StrCat("CUDA backend: device ", options.device, " does not exist (", count, " devices)"));
  }
  auto backend = std::make_unique<CudaBackend>(options);
  if (absl::Status s = backend->Init(); !s.ok()) return s;
  return backend;
}

}  // namespace quest::ops
