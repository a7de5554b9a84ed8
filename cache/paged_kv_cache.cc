#include <cmath>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "cache/kv_cache.h"
#include "cache/page_pool.h"
#include "glog/logging.h"

namespace quest::cache {
namespace {

struct Sequence {
  // Logical page -> physical page; -1 once an eviction policy gave it back.
  std::vector<int32_t> page_table;
  int64_t length = 0;  // committed tokens
  std::unique_ptr<CachePolicy> policy;
};

class PagedKVCache final : public KVCache {
 public:
  PagedKVCache(const PagedKVCacheOptions& options, Backend& backend, std::unique_ptr<PagePool> pool)
      : options_(options), backend_(backend), pool_(std::move(pool)) {}

  ~PagedKVCache() override {
    for (auto& [id, seq] : sequences_) ReleaseAll(seq);
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

  void AttendBatch(int layer, absl::Span<const AttendRequest> requests) override {
    // Each request's selection lives until the batched backend call.
    if (selections_.size() < requests.size()) selections_.resize(requests.size());
    batch_args_.clear();
    batch_outs_.clear();
    pending_args_.clear();
    pending_into_.clear();
    const float scale = 1.0f / std::sqrt(static_cast<float>(options_.geometry.head_dim));
    for (size_t i = 0; i < requests.size(); ++i) {
      const AttendRequest& r = requests[i];
      Sequence& seq = Get(r.id);
      const int64_t n = r.q->dim(0);
      const SequenceLayerView view = View(layer, seq, seq.length + n);
      PageSelection& selection = selections_[i];
      selection.Clear();
      selection.defer_select = true;
      seq.policy->SelectPages(view, *r.q, selection);

      PagedAttentionArgs args;
      args.q = r.q;
      args.k_pages = view.k_pages;
      args.v_pages = view.v_pages;
      args.page_table = seq.page_table;
      args.kv_len = view.length;
      args.page_size = options_.geometry.page_size;
      args.selected_indptr = selection.indptr;
      args.selected_chunks = selection.chunks;
      args.selected_table = selection.table;
      args.selection_chunk = selection.chunk_size;
      args.token_valid = selection.token_valid;
      args.scale = scale;
      if (!seq.policy->WantsAttention()) {
        batch_args_.push_back(args);
        batch_outs_.push_back(r.out);
        if (selection.pending) {
          pending_args_.push_back(selection.pending->args);
          pending_into_.push_back(selection.pending->into);
        }
        continue;
      }
      if (selection.pending) backend_.SelectTopPages(selection.pending->args, *selection.pending->into);
      // The policy learns from this sequence's softmax weights (and may
      // evict right after): it attends on its own.
      const size_t size = static_cast<size_t>(options_.geometry.num_heads) * view.length;
      attention_sum_.resize(size);
      attention_last_.resize(size);
      args.attention_sum = attention_sum_.data();
      args.attention_last = attention_last_.data();
      backend_.PagedAttention(args, *r.out);
      seq.policy->OnAttention(view, n, attention_sum_, attention_last_);
    }
    // The batch's deferred selects (Quest's, one per decoding sequence)
    // share their launches, then its attention does.
    if (!pending_args_.empty()) backend_.SelectTopPagesBatch(pending_args_, pending_into_);
    if (!batch_args_.empty()) backend_.PagedAttentionBatch(batch_args_, batch_outs_);
  }

  void Commit(SequenceId id, int64_t n) override {
    Sequence& seq = Get(id);
    seq.length += n;
    released_.clear();
    seq.policy->AfterStep(seq.length, released_);
    const int64_t page_size = options_.geometry.page_size;
    for (int32_t logical : released_) {
      CHECK(logical >= 0 && logical < static_cast<int64_t>(seq.page_table.size()))
          << "policy released logical page " << logical << " of sequence " << id << " with "
          << seq.page_table.size() << " pages";
      CHECK_LE((logical + 1) * page_size, seq.length)
          << "policy released page " << logical << " of sequence " << id
          << ", which holds positions not yet written";
      int32_t& physical = seq.page_table[logical];
      CHECK_GE(physical, 0) << "policy released logical page " << logical << " of sequence " << id
                            << " twice";
      pool_->Release({&physical, 1});
      physical = -1;
    }
  }

  void RemoveSequence(SequenceId id) override {
    auto it = sequences_.find(id);
    if (it == sequences_.end()) return;
    ReleaseAll(it->second);
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
    if (!(*factory)->RunsOn(backend_.device())) {
      return absl::FailedPreconditionError(absl::StrCat(
          "cache policy ", name, " does not run on the ",
          backend_.device() == Device::kCuda ? "CUDA" : backend_.name(),
          " backend (its factory's RunsOn says host only)"));
    }
    if (c.page_size() != 0 && static_cast<int>(c.page_size()) != options_.geometry.page_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "cache.page_size ", c.page_size(), " differs from the engine's KV page size ",
          options_.geometry.page_size, " (a request cannot change the pool's page size)"));
    }
    if (absl::Status s = (*factory)->Validate(c, options_.geometry); !s.ok()) return s;
    return (*factory)->Create(c, options_.geometry);
  }

 private:
  // Returns the pages the sequence still holds (evicted ones went back in
  // Commit).
  void ReleaseAll(Sequence& seq) {
    std::vector<int32_t> held;
    held.reserve(seq.page_table.size());
    for (int32_t p : seq.page_table) {
      if (p >= 0) held.push_back(p);
    }
    pool_->Release(held);
    seq.page_table.clear();
  }

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
  // AttendBatch's per-request selections and backend arguments, reused
  // across calls.
  std::vector<PageSelection> selections_;
  std::vector<PagedAttentionArgs> batch_args_;
  std::vector<Tensor*> batch_outs_;
  std::vector<TopPagesArgs> pending_args_;  // the batch's deferred selects
  std::vector<Tensor*> pending_into_;
  std::vector<float> attention_sum_, attention_last_;  // for WantsAttention() policies
  std::vector<int32_t> released_;
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
