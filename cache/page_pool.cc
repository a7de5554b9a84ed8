#include "cache/page_pool.h"

#include "absl/strings/str_cat.h"
#include "glog/logging.h"

namespace quest::cache {

absl::StatusOr<std::unique_ptr<PagePool>> PagePool::Create(const PagePoolOptions& o,
                                                           Backend& backend) {
  if (o.num_layers <= 0 || o.num_kv_heads <= 0 || o.head_dim <= 0 || o.page_size <= 0 ||
      o.num_pages <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "page pool: all sizes must be positive (layers=", o.num_layers, ", kv_heads=",
        o.num_kv_heads, ", head_dim=", o.head_dim, ", page_size=", o.page_size,
        ", num_pages=", o.num_pages, ")"));
  }
  std::vector<Tensor> k, v;
  for (int l = 0; l < o.num_layers; ++l) {
    k.push_back(backend.AllocateZeros(o.dtype, {o.num_pages, o.page_size, o.num_kv_heads, o.head_dim}));
    v.push_back(backend.AllocateZeros(o.dtype, {o.num_pages, o.page_size, o.num_kv_heads, o.head_dim}));
  }
  return absl::WrapUnique(new PagePool(o, std::move(k), std::move(v)));
}

PagePool::PagePool(const PagePoolOptions& options, std::vector<Tensor> k, std::vector<Tensor> v)
    : options_(options), k_(std::move(k)), v_(std::move(v)), refcount_(options.num_pages, 0) {
  // Hand out low page ids first (pop from the back).
  for (int32_t p = options.num_pages - 1; p >= 0; --p) free_.push_back(p);
}

absl::StatusOr<std::vector<int32_t>> PagePool::Allocate(int count) {
  absl::MutexLock lock(&mu_);
  if (count < 0 || static_cast<size_t>(count) > free_.size()) {
    return absl::ResourceExhaustedError(absl::StrCat("KV page pool: ", count, " pages requested, ",
                                                     free_.size(), " of ", options_.num_pages,
                                                     " free"));
  }
  std::vector<int32_t> pages(free_.end() - count, free_.end());
  free_.resize(free_.size() - count);
  for (int32_t p : pages) refcount_[p] = 1;
  return pages;
}

void PagePool::AddRef(int32_t page) {
  absl::MutexLock lock(&mu_);
  CHECK_GT(refcount_[page], 0) << "AddRef on free page " << page;
  ++refcount_[page];
}

void PagePool::Release(absl::Span<const int32_t> pages) {
  absl::MutexLock lock(&mu_);
  for (int32_t p : pages) {
    CHECK_GT(refcount_[p], 0) << "double release of page " << p;
    if (--refcount_[p] == 0) free_.push_back(p);
  }
}

int PagePool::free_pages() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(free_.size());
}

}  // namespace quest::cache
