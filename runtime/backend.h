#ifndef QUEST_RUNTIME_BACKEND_H_
#define QUEST_RUNTIME_BACKEND_H_

// The op set every compute backend implements (ops/cpu: the reference;
// ops/cuda: the fast one). The model and the KV cache are written against
// this interface only. Ops take and fill Tensors on the backend's device;
// shapes are checked by the caller (the model), not re-validated per call.
//
// A Backend is used by one engine thread at a time (no internal locking).

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "runtime/page_bounds_layout.h"
#include "runtime/tensor.h"

namespace quest {

// Arguments of attention over one sequence's paged KV cache.
//
// K/V pages of one layer are [num_pages, page_size, num_kv_heads, head_dim].
// The sequence's logical page i holds its tokens [i*page_size, (i+1)*page_size)
// in physical page page_table[i]; -1 marks a page an eviction policy gave back
// (never attended). Queries are the sequence's newest tokens at positions
// [kv_len - n, kv_len); query t sees keys at positions <= its own (causal),
// so prefill chunks and single-token decode are the same op.
//
// Selection: when `selected_indptr` is empty and `selected_table` is null
// every chunk is attended (dense). Otherwise it is a CSR list per KV head: the query heads of KV head g attend
// the chunks selected_chunks[selected_indptr[g] .. selected_indptr[g+1]) only,
// where chunk c covers positions [c*chunk, (c+1)*chunk) and chunk =
// selection_chunk (a divisor of page_size; 0 means page_size). Sparse decode
// is dense decode over fewer chunks: one kernel family.
//
// Eviction: `token_valid`, when set, is [num_kv_heads, page_table.size() *
// page_size] bytes over logical positions; 0 means evicted for that KV head.
struct PagedAttentionArgs {
  const Tensor* q = nullptr;  // [n, num_heads, head_dim]
  const Tensor* k_pages = nullptr;
  const Tensor* v_pages = nullptr;
  absl::Span<const int32_t> page_table;
  int64_t kv_len = 0;
  int page_size = 0;
  absl::Span<const int32_t> selected_indptr;
  absl::Span<const int32_t> selected_chunks;
  int selection_chunk = 0;
  const uint8_t* token_valid = nullptr;
  float scale = 1.0f;  // softmax scale, usually 1/sqrt(head_dim)
  // Or a selection already on the backend's device (Quest's, from
  // SelectTopPages): [num_kv_heads, per_head] int32 chunk indices, KV head g
  // attending row g. At most one of selected_indptr / selected_table is set.
  const Tensor* selected_table = nullptr;
  // Optional outputs for policies that learn from attention (H2O, TOVA),
  // each [num_heads, kv_len] host floats, zero where not attended:
  // the softmax weights summed over the n queries, and those of the last
  // query alone.
  float* attention_sum = nullptr;
  float* attention_last = nullptr;
};

// Quest page bounds (cache/quest): `bounds` is PageBoundsShape(capacity,
// num_kv_heads, head_dim) in the KV dtype or kFloat8E4M3, laid out as
// runtime/page_bounds_layout.h says; for Quest page p (positions
// [p * bound_page, (p + 1) * bound_page)) and KV head g, side 0 holds the
// elementwise min and side 1 the max of the page's Keys. In the KV dtype
// they are exact; in E4M3 the min is rounded down and the max up
// (runtime/fp8.h), so the scores below stay upper bounds.
inline std::vector<int64_t> PageBoundsShape(int64_t pages, int64_t num_kv_heads, int64_t head_dim) {
  return {BoundsTiles(pages), num_kv_heads, head_dim, 2, kBoundsTile};
}
// Quest pages `bounds` has room for.
inline int64_t PageBoundsCapacity(const Tensor& bounds) { return bounds.dim(0) * kBoundsTile; }
// Whether `bounds` is shaped PageBoundsShape(some capacity, num_kv_heads,
// head_dim).
inline bool IsPageBoundsShape(const Tensor& bounds, int64_t num_kv_heads, int64_t head_dim) {
  return bounds.rank() == 5 && bounds.dim(1) == num_kv_heads && bounds.dim(2) == head_dim && bounds.dim(3) == 2 &&
         bounds.dim(4) == kBoundsTile;
}

struct PageBoundsArgs {
  const Tensor* k_pages = nullptr;  // one layer's pool, as in PagedAttentionArgs
  absl::Span<const int32_t> page_table;
  int page_size = 0;   // pool page
  int bound_page = 0;  // Quest page, a power of two dividing page_size
  int64_t begin = 0;   // positions [begin, end) are folded in
  int64_t end = 0;
};

// Quest's selection for one decode query.
struct TopPagesArgs {
  const Tensor* q = nullptr;       // [1, num_heads, head_dim]
  const Tensor* bounds = nullptr;  // as in PageBoundsArgs, num_pages <= capacity
  // Quest pages of the sequence (the last is current). A page's score for
  // one query head is sum_d min(q_d, 0) * min_d + max(q_d, 0) * max_d, each
  // term only where its coefficient is nonzero: the side a zero coefficient
  // would multiply is not read (a NaN there does not count); a NaN query
  // keeps both coefficients NaN.
  int64_t num_pages = 0;
  int64_t k = 0;                   // pages to pick besides the current one
  bool combine_sum = true;         // GQA: sum the group's scores (false: max)
};

// Backend::TopK's order: value `a` at index `ia` ranks before `b` at `ib`
// when it is larger, or equal with the lower index; NaN ranks after every
// number (and NaNs among themselves by index).
inline bool TopKRanksBefore(float a, int32_t ia, float b, int32_t ib) {
  const bool na = a != a, nb = b != b;  // NaN
  if (na != nb) return nb;
  return (!na && a > b) || ((na || a == b) && ia < ib);
}

// Rotary embedding parameters for one forward step: y = x*cos + rotate_half(x)*sin
// with angle = position * inv_freq[i], cos/sin multiplied by attention_scaling
// (YaRN). Hugging Face's half-split layout: pairs (x_i, x_{i + d/2}).
struct RopeParams {
  absl::Span<const float> inv_freq;  // head_dim / 2 values
  float attention_scaling = 1.0f;
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual Device device() const = 0;
  virtual const char* name() const = 0;
  // The dtype the backend computes activations and stores the KV cache in
  // (float32 on the CPU, bf16/f16 on CUDA). The model allocates its
  // activations with it; logits stay float32 on every backend.
  virtual DType activation_dtype() const { return DType::kFloat32; }

  // A weight in the backend's compute dtype and device (a copy).
  virtual absl::StatusOr<Tensor> UploadWeight(const Tensor& host) = 0;
  // Uninitialised activation storage on the backend's device.
  virtual Tensor Allocate(DType dtype, std::vector<int64_t> shape) = 0;
  // Zeroed storage (KV pages).
  virtual Tensor AllocateZeros(DType dtype, std::vector<int64_t> shape) = 0;
  // A float32 host copy of `t` (logits readback, tests); int32 tensors come
  // back as int32.
  virtual Tensor ToHost(const Tensor& t) = 0;
  // Copies a host tensor's data into a device tensor of the same shape.
  virtual void CopyFromHost(const Tensor& host, Tensor& device_tensor) = 0;

  // out[t, :] = table[ids[t], :]; ids are validated by the caller.
  virtual void Embedding(const Tensor& table, absl::Span<const int32_t> ids, Tensor& out) = 0;
  // y[m, n] = x[m, k] . w[n, k]^T (+ bias[n]); w in Hugging Face [out, in] layout.
  virtual void Linear(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y) = 0;
  // Several linear layers of one input (a layer's q, k and v projections,
  // or its gate and up projections): *outs[i].y = x . outs[i].w^T (+
  // *outs[i].bias). The result is that of calling Linear for each, which
  // is what this default does; a backend may run them as one launch (CUDA:
  // decode-shaped ones, up to 3).
  struct LinearOut {
    const Tensor* w = nullptr;
    const Tensor* bias = nullptr;
    Tensor* y = nullptr;
  };
  virtual void LinearGroup(const Tensor& x, absl::Span<const LinearOut> outs) {
    for (const LinearOut& o : outs) Linear(x, *o.w, o.bias, *o.y);
  }
  // y = x * rsqrt(mean(x^2) + eps) * weight, per row of x [m, d].
  virtual void RmsNorm(const Tensor& x, const Tensor& weight, float eps, Tensor& y) = 0;
  // x += y (same shape).
  virtual void Add(Tensor& x, const Tensor& y) = 0;
  // A residual add and the norm after it: x += y, then out = RmsNorm(x,
  // weight, eps) of the updated x. The result is that of the two calls,
  // which is what this default makes; a backend may do both in one pass
  // (CUDA: one kernel per row, x read once).
  virtual void AddRmsNorm(Tensor& x, const Tensor& y, const Tensor& weight, float eps, Tensor& out) {
    Add(x, y);
    RmsNorm(x, weight, eps, out);
  }
  // out = silu(gate) * up (same shape).
  virtual void SiluMul(const Tensor& gate, const Tensor& up, Tensor& out) = 0;
  // In place on x [n, heads, head_dim]; token t is at positions[t].
  virtual void Rope(Tensor& x, absl::Span<const int32_t> positions, const RopeParams& rope) = 0;
  // Writes k/v [n, kv_heads, head_dim] of tokens at positions [start, start+n)
  // into the pages named by page_table.
  virtual void WriteKvPages(const Tensor& k, const Tensor& v, absl::Span<const int32_t> page_table,
                            int64_t start, int page_size, Tensor& k_pages, Tensor& v_pages) = 0;
  // out [n, num_heads * head_dim].
  virtual void PagedAttention(const PagedAttentionArgs& args, Tensor& out) = 0;
  // PagedAttention of several sequences of one layer (args[i] into
  // *outs[i]; the same pools, distinct sequences): the result is that of
  // calling PagedAttention for each, which is what this default does. A
  // backend may run them together (CUDA: the sequences decoding one token
  // share one launch, so a batch of short sequences still fills the GPU).
  virtual void PagedAttentionBatch(absl::Span<const PagedAttentionArgs> args, absl::Span<Tensor* const> outs) {
    for (size_t i = 0; i < args.size(); ++i) PagedAttention(args[i], *outs[i]);
  }

  // Folds the Keys at positions [args.begin, args.end) into `bounds`: a
  // position at a Quest page's start resets that page's bounds to its Key,
  // later ones widen them. Positions in a page-table hole are skipped.
  virtual void UpdatePageBounds(const PageBoundsArgs& args, Tensor& bounds) = 0;
  // selected [num_kv_heads, k + 1] int32 on the backend's device. Per KV
  // head g: every page p < num_pages - 1 is scored with each query head h of
  // g as sum_d max(q_hd * min_pd, q_hd * max_pd) (>= q_h . k for every Key k
  // in p), the group's scores summed (or maxed), NaN counting as -inf; row g
  // holds the k best pages (ties: the lower page) in ascending order, then
  // num_pages - 1. Requires 0 <= k <= num_pages - 1.
  virtual void SelectTopPages(const TopPagesArgs& args, Tensor& selected) = 0;
  // SelectTopPages of several decode queries (args[i] into *selected[i];
  // a decode batch's, one layer): the result is that of calling it for
  // each, which is what this default does. A backend may run them together
  // (CUDA: members of one shape share a scoring and a select launch).
  virtual void SelectTopPagesBatch(absl::Span<const TopPagesArgs> args, absl::Span<Tensor* const> selected) {
    for (size_t i = 0; i < args.size() && i < selected.size(); ++i) SelectTopPages(args[i], *selected[i]);
  }

  // Sampling without copying logits back: the k largest values of each row
  // of `logits` [rows, n] (f32 on the backend's device) into the host
  // tensors `ids` [rows, k] (int32) and `values` [rows, k] (f32), best first,
  // ties in ascending index order (a stable sort's order; NaN ranks lowest).
  // 1 <= k <= n.
  virtual void TopK(const Tensor& logits, int k, Tensor& ids, Tensor& values) = 0;
};

}  // namespace quest

#endif  // QUEST_RUNTIME_BACKEND_H_
