#include <cmath>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "cache/kv_cache.h"
#include "cache/page_pool.h"
#include "glog/logging.h"

namespace quest::cache {
namespace {

struct Sequence {
  std::vector<int32_t> page_table;
  int64_t length = 0;  // committed tokens
  std::unique_ptr<CachePolicy> policy;
};

class PagedKVCache final : public KVCache {
 public:
  PagedKVCache(const PagedKVCacheOptions& options, Backend& backend, std::unique_ptr<PagePool> pool)
      : options_(options), backend_(backend), pool_(std::move(pool)) {}

  ~PagedKVCache() override {
    for (auto& [id, seq] : sequences_) pool_->Release(seq.page_table);
  }

  absl::Status AddSequence(SequenceId id, const config::CacheConfig* config) override {
    if (sequences_.contains(id)) {
      return absl::AlreadyExistsError(absl::StrCat("KV cache: sequence ", id, " already exists"));
    }
    const config::CacheConfig& c = config != nullptr ? *config : options_.default_policy;
    absl::StatusOr<std::unique_ptr<CachePolicy>> policy = MakePolicy(c);
    if (!policy.ok()) return policy.status();
    sequences_[id].policy = *std::move(policy);
    return absl::OkStatus();
  }

  absl::Status Reserve(SequenceId id, int64_t n) override {
    Sequence& seq = Get(id);
    const int page_size = options_.geometry.page_size;
    const int64_t needed = (seq.length + n + page_size - 1) / page_size;
    const int64_t missing = needed - static_cast<int64_t>(seq.page_table.size());
    if (missing <= 0) return absl::OkStatus();
    absl::StatusOr<std::vector<int32_t>> pages = pool_->Allocate(static_cast<int>(missing));
    if (!pages.ok()) {
      return absl::ResourceExhaustedError(absl::StrCat(pages.status().message(), " (sequence ", id,
                                                       " needs ", missing, " more for ", n,
                                                       " tokens)"));
    }
    seq.page_table.insert(seq.page_table.end(), pages->begin(), pages->end());
    return absl::OkStatus();
  }

  void Append(int layer, SequenceId id, const Tensor& k, const Tensor& v) override {
    Sequence& seq = Get(id);
    const int64_t n = k.dim(0);
    CHECK_LE(seq.length + n, static_cast<int64_t>(seq.page_table.size()) * options_.geometry.page_size)
        << "Append without Reserve for sequence " << id;
    backend_.WriteKvPages(k, v, seq.page_table, seq.length, options_.geometry.page_size,
                          pool_->k_pages(layer), pool_->v_pages(layer));
    seq.policy->OnAppend(View(layer, seq, seq.length + n), seq.length, n);
  }

  void Attend(int layer, SequenceId id, const Tensor& q, Tensor& out) override {
    Sequence& seq = Get(id);
    const int64_t n = q.dim(0);
    const SequenceLayerView view = View(layer, seq, seq.length + n);
    selection_.Clear();
    seq.policy->SelectPages(view, q, selection_);

    PagedAttentionArgs args;
    args.q = &q;
    args.k_pages = view.k_pages;
    args.v_pages = view.v_pages;
    args.page_table = seq.page_table;
    args.kv_len = view.length;
    args.page_size = options_.geometry.page_size;
    args.selected_indptr = selection_.indptr;
    args.selected_chunks = selection_.chunks;
    args.selection_chunk = selection_.chunk_size;
    args.scale = 1.0f / std::sqrt(static_cast<float>(options_.geometry.head_dim));
    backend_.PagedAttention(args, out);
  }

  void Commit(SequenceId id, int64_t n) override { Get(id).length += n; }

  void RemoveSequence(SequenceId id) override {
    auto it = sequences_.find(id);
    if (it == sequences_.end()) return;
    pool_->Release(it->second.page_table);
    sequences_.erase(it);
  }

  int64_t Length(SequenceId id) const override {
    auto it = sequences_.find(id);
    return it == sequences_.end() ? 0 : it->second.length;
  }

  CacheStats stats() const override {
    return CacheStats{pool_->num_pages(), pool_->pages_in_use(), static_cast<int>(sequences_.size())};
  }

  const CacheGeometry& geometry() const override { return options_.geometry; }

  absl::StatusOr<std::unique_ptr<CachePolicy>> MakePolicy(const config::CacheConfig& c) const {
    const std::string name = c.policy().empty() ? "dense" : c.policy();
    absl::StatusOr<const CachePolicyFactory*> factory = CachePolicyRegistry::Global().Find(name);
    if (!factory.ok()) return factory.status();
    if (c.page_size() != 0 && static_cast<int>(c.page_size()) != options_.geometry.page_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "cache.page_size ", c.page_size(), " differs from the engine's KV page size ",
          options_.geometry.page_size, " (a request cannot change the pool's page size)"));
    }
    if (absl::Status s = (*factory)->Validate(c, options_.geometry); !s.ok()) return s;
    return (*factory)->Create(c, options_.geometry);
  }

 private:
  Sequence& Get(SequenceId id) {
    auto it = sequences_.find(id);
    CHECK(it != sequences_.end()) << "unknown sequence " << id;
    return it->second;
  }

  SequenceLayerView View(int layer, const Sequence& seq, int64_t length) {
    SequenceLayerView v;
    v.layer = layer;
    v.page_table = seq.page_table;
    v.length = length;
    v.k_pages = &pool_->k_pages(layer);
    v.v_pages = &pool_->v_pages(layer);
    v.backend = &backend_;
    return v;
  }

  const PagedKVCacheOptions options_;
  Backend& backend_;
  std::unique_ptr<PagePool> pool_;
  absl::flat_hash_map<SequenceId, Sequence> sequences_;
  PageSelection selection_;  // reused across calls
};

}  // namespace

absl::StatusOr<std::unique_ptr<KVCache>> CreatePagedKVCache(const PagedKVCacheOptions& options,
                                                            Backend& backend) {
  const CacheGeometry& g = options.geometry;
  if (g.page_size <= 0 || (g.page_size & (g.page_size - 1)) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("cache.page_size must be a power of two, got ", g.page_size));
  }
  if (g.num_heads <= 0 || g.num_kv_heads <= 0 || g.num_heads % g.num_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat("KV cache: ", g.num_heads,
                                                   " query heads do not group onto ",
                                                   g.num_kv_heads, " KV heads"));
  }
  PagePoolOptions pool_options;
  pool_options.num_layers = g.num_layers;
  pool_options.num_kv_heads = g.num_kv_heads;
  pool_options.head_dim = g.head_dim;
  pool_options.page_size = g.page_size;
  pool_options.num_pages = options.num_pages;
  pool_options.dtype = options.dtype;
  absl::StatusOr<std::unique_ptr<PagePool>> pool = PagePool::Create(pool_options, backend);
  if (!pool.ok()) return pool.status();
  auto cache = std::make_unique<PagedKVCache>(options, backend, *std::move(pool));
  // Validate the default policy now rather than at the first request.
  if (absl::StatusOr<std::unique_ptr<CachePolicy>> p = cache->MakePolicy(options.default_policy);
      !p.ok()) {
    return p.status();
  }
  return cache;
}

}  // namespace quest::cache
