#ifndef QUEST_RUNTIME_TESTING_FORWARDING_BACKEND_H_
#define QUEST_RUNTIME_TESTING_FORWARDING_BACKEND_H_

// A Backend that passes every op to another one. Tests derive from it and
// override the ops they watch (how often a caller batches, what it asks
// for), leaving the arithmetic to the real backend underneath.

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "runtime/backend.h"
#include "runtime/tensor.h"

namespace quest::testing {

class ForwardingBackend : public Backend {
 public:
  explicit ForwardingBackend(Backend& inner) : inner_(inner) {}

  Device device() const override { return inner_.device(); }
  const char* name() const override { return inner_.name(); }
  DType activation_dtype() const override { return inner_.activation_dtype(); }
  absl::StatusOr<Tensor> UploadWeight(const Tensor& host) override { return inner_.UploadWeight(host); }
  Tensor Allocate(DType dtype, std::vector<int64_t> shape) override { return inner_.Allocate(dtype, shape); }
  Tensor AllocateZeros(DType dtype, std::vector<int64_t> shape) override {
    return inner_.AllocateZeros(dtype, shape);
  }
  Tensor ToHost(const Tensor& t) override { return inner_.ToHost(t); }
  void CopyFromHost(const Tensor& host, Tensor& device_tensor) override { inner_.CopyFromHost(host, device_tensor); }
  void Embedding(const Tensor& table, absl::Span<const int32_t> ids, Tensor& out) override {
    inner_.Embedding(table, ids, out);
  }
  void Linear(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y) override { inner_.Linear(x, w, bias, y); }
  void RmsNorm(const Tensor& x, const Tensor& weight, float eps, Tensor& y) override {
    inner_.RmsNorm(x, weight, eps, y);
  }
  void Add(Tensor& x, const Tensor& y) override { inner_.Add(x, y); }
  void SiluMul(const Tensor& gate, const Tensor& up, Tensor& out) override { inner_.SiluMul(gate, up, out); }
  void Rope(Tensor& x, absl::Span<const int32_t> positions, const RopeParams& rope) override {
    inner_.Rope(x, positions, rope);
  }
  void WriteKvPages(const Tensor& k, const Tensor& v, absl::Span<const int32_t> page_table, int64_t start,
                    int page_size, Tensor& k_pages, Tensor& v_pages) override {
    inner_.WriteKvPages(k, v, page_table, start, page_size, k_pages, v_pages);
  }
  void PagedAttention(const PagedAttentionArgs& args, Tensor& out) override { inner_.PagedAttention(args, out); }
  void PagedAttentionBatch(absl::Span<const PagedAttentionArgs> args, absl::Span<Tensor* const> outs) override {
    inner_.PagedAttentionBatch(args, outs);
  }
  void UpdatePageBounds(const PageBoundsArgs& args, Tensor& bounds) override { inner_.UpdatePageBounds(args, bounds); }
  void SelectTopPages(const TopPagesArgs& args, Tensor& selected) override { inner_.SelectTopPages(args, selected); }
  void SelectTopPagesBatch(absl::Span<const TopPagesArgs> args, absl::Span<Tensor* const> selected) override {
    inner_.SelectTopPagesBatch(args, selected);
  }
  void TopK(const Tensor& logits, int k, Tensor& ids, Tensor& values) override { inner_.TopK(logits, k, ids, values); }

 private:
  Backend& inner_;
};

}  // namespace quest::testing

#endif  // QUEST_RUNTIME_TESTING_FORWARDING_BACKEND_H_
