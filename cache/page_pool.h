#ifndef QUEST_CACHE_PAGE_POOL_H_
#define QUEST_CACHE_PAGE_POOL_H_

// Fixed-size KV pages shared by every sequence and policy.
//
// Storage per layer: K and V tensors of [num_pages, page_size, num_kv_heads,
// head_dim] on the backend's device. A page id indexes dimension 0 of every
// layer's tensors at once, so a sequence's page table is layer-independent.
// Pages carry reference counts so that future prefix sharing can hand one
// page to several sequences; a page returns to the free list when its count
// drops to zero. Thread-safe.

#include <cstdint>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "runtime/backend.h"
#include "runtime/tensor.h"

namespace quest::cache {

struct PagePoolOptions {
  int num_layers = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  int page_size = 16;
  int num_pages = 0;
  DType dtype = DType::kFloat32;
};

class PagePool {
 public:
  // Allocates all storage up front; InvalidArgument on non-positive sizes.
  static absl::StatusOr<std::unique_ptr<PagePool>> Create(const PagePoolOptions& options,
                                                          Backend& backend);

  // `count` pages with reference count 1, or RESOURCE_EXHAUSTED (then none
  // are taken).
  absl::StatusOr<std::vector<int32_t>> Allocate(int count);
  void AddRef(int32_t page);
  // Drops one reference of each page.
  void Release(absl::Span<const int32_t> pages);

  int num_pages() const { return options_.num_pages; }
  int page_size() const { return options_.page_size; }
  int free_pages() const;
  int pages_in_use() const { return num_pages() - free_pages(); }
  const PagePoolOptions& options() const { return options_; }

  Tensor& k_pages(int layer) { return k_[layer]; }
  Tensor& v_pages(int layer) { return v_[layer]; }

 private:
  PagePool(const PagePoolOptions& options, std::vector<Tensor> k, std::vector<Tensor> v);

  const PagePoolOptions options_;
  std::vector<Tensor> k_, v_;
  mutable absl::Mutex mu_;
  std::vector<int32_t> free_ ABSL_GUARDED_BY(mu_);
  std::vector<int32_t> refcount_ ABSL_GUARDED_BY(mu_);
};

}  // namespace quest::cache

#endif  // QUEST_CACHE_PAGE_POOL_H_
