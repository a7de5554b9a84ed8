#ifndef QUEST_CACHE_CACHE_POLICY_H_
#define QUEST_CACHE_CACHE_POLICY_H_

// The plug-in seam of the KV cache: a CachePolicy decides, for one sequence,
// which of its pages each decode query attends to (Quest: top-k pages by an
// upper bound of q.k; dense: all of them) and keeps whatever per-sequence
// state it needs for that (Quest's page min/max Keys, H2O's scores, ...).
//
// Policies are created per sequence by a CachePolicyFactory found by name in
// the CachePolicyRegistry, so adding a policy never touches cache/ itself.
// A policy object is used by one thread at a time.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "proto/engine_config.pb.h"
#include "runtime/backend.h"
#include "runtime/tensor.h"

namespace quest::cache {

// The model-side shape of the cache a policy works in.
struct CacheGeometry {
  int num_layers = 0;
  int num_heads = 0;     // query heads
  int num_kv_heads = 0;  // num_heads / num_kv_heads query heads share a KV head
  int head_dim = 0;
  int page_size = 0;
};

// One layer of one sequence, as a policy sees it.
struct SequenceLayerView {
  int layer = 0;
  // Logical page -> physical page; -1 for a page an eviction policy gave
  // back (see CachePolicy::AfterStep).
  absl::Span<const int32_t> page_table;
  int64_t length = 0;               // tokens in the sequence, new ones included
  const Tensor* k_pages = nullptr;  // this layer's pool storage
  const Tensor* v_pages = nullptr;
  Backend* backend = nullptr;
};

// Chunks of the sequence to attend, per KV head, in CSR form (see
// PagedAttentionArgs): KV head g attends chunks[indptr[g] .. indptr[g+1]),
// chunk c being positions [c*chunk_size, (c+1)*chunk_size). chunk_size
// divides the pool's page size (0: the page size). Empty `indptr` means
// everything.
//
// `token_valid` (eviction policies): nullptr, or [num_kv_heads,
// page_table.size() * page_size] bytes over logical positions, 0 = evicted
// for that KV head (PagedAttentionArgs::token_valid). Owned by the policy;
// it must stay valid until the policy's next call.
//
// `table` (instead of indptr/chunks): a selection the backend computed on its
// own device, [num_kv_heads, per_head] int32 (Backend::SelectTopPages), so a
// GPU-resident selection never travels through the host. Owned by the
// policy, valid until its next call.
//
// Deferred select: a caller that sets `defer_select` (the paged cache, which
// runs a decode batch's selects as one Backend::SelectTopPagesBatch) lets a
// policy whose table is one Backend::SelectTopPages call leave that call in
// `pending` (its output the tensor `table` names) instead of making it; the
// caller then runs it before attending. Callers that do not set it get the
// table made at once. A policy that wraps another and reads the inner
// policy's table itself clears defer_select before passing the selection
// on.
struct PageSelection {
  std::vector<int32_t> indptr;
  std::vector<int32_t> chunks;
  const Tensor* table = nullptr;
  int chunk_size = 0;
  const uint8_t* token_valid = nullptr;
  bool defer_select = false;
  struct PendingSelect {
    TopPagesArgs args;
    Tensor* into = nullptr;  // the policy's, == table
  };
  std::optional<PendingSelect> pending;
  void Clear() {
    indptr.clear();
    chunks.clear();
    table = nullptr;
    chunk_size = 0;
    token_valid = nullptr;
    defer_select = false;
    pending.reset();
  }
};

class CachePolicy {
 public:
  virtual ~CachePolicy() = default;

  // Called after the K/V of tokens [start, start + n) of a layer were written
  // into the sequence's pages.
  virtual void OnAppend(const SequenceLayerView& seq, int64_t start, int64_t n) {}

  // Chooses the pages that the queries q [n, num_heads, head_dim] of the
  // sequence's newest n tokens attend to. `selection` arrives cleared; a
  // policy that leaves it empty attends every page.
  virtual void SelectPages(const SequenceLayerView& seq, const Tensor& q,
                           PageSelection& selection) = 0;

  // --- Eviction hooks (StreamingLLM, H2O, TOVA). The defaults do nothing,
  // so selection-only policies ignore them. Token positions never change:
  // Keys are cached after RoPE at their original positions, and an evicted
  // token is only masked out (PageSelection::token_valid).

  // True: the cache asks the attention op for its softmax weights and hands
  // them to OnAttention after every Attend.
  virtual bool WantsAttention() const { return false; }

  // After the queries of the newest n tokens attended layer `seq.layer`
  // (seq.length = kv_len, the new tokens included): `attention_sum` and
  // `attention_last` are [num_heads, seq.length] softmax weights summed over
  // the n queries, and those of the last query alone; 0 where not attended.
  // Only called when WantsAttention(). The layer is not attended again in
  // this step, so a policy may evict for it here.
  virtual void OnAttention(const SequenceLayerView& seq, int64_t n,
                           absl::Span<const float> attention_sum,
                           absl::Span<const float> attention_last) {}

  // Called by KVCache::Commit once every layer attended the step's tokens;
  // `length` is the new committed length. A policy appends to
  // `released_pages` the logical pages (page_table indices) that every layer
  // and KV head has now evicted completely, each once over the sequence's
  // life; they lie wholly below `length`. The cache returns them to the pool
  // and sets their page_table entries to -1.
  virtual void AfterStep(int64_t length, std::vector<int32_t>& released_pages) {}
};

class CachePolicyFactory {
 public:
  virtual ~CachePolicyFactory() = default;

  // The name users write in CacheConfig.policy.
  virtual absl::string_view name() const = 0;
  // Checks this policy's options in `config` against the cache geometry.
  // Errors are InvalidArgument naming the option.
  virtual absl::Status Validate(const config::CacheConfig& config,
                                const CacheGeometry& geometry) const = 0;
  // A policy instance for one new sequence; `config` was validated.
  virtual std::unique_ptr<CachePolicy> Create(const config::CacheConfig& config,
                                              const CacheGeometry& geometry) const = 0;
  // Whether this policy's sequences can run with the KV pool on `device`.
  // The default is host only: a policy that reads K/V pages or queries on
  // the host (Quest's metadata) must not see device tensors. The KV cache
  // refuses a policy that does not run on its backend's device
  // (FAILED_PRECONDITION) rather than letting it crash.
  virtual bool RunsOn(Device device) const { return device == Device::kCpu; }
};

// Name -> factory. Built-in policies register at static-initialisation time
// through QUEST_REGISTER_CACHE_POLICY in libraries linked with
// alwayslink = 1. Thread-safe.
class CachePolicyRegistry {
 public:
  static CachePolicyRegistry& Global();

  // AlreadyExists when the name is taken.
  absl::Status Register(std::unique_ptr<CachePolicyFactory> factory);
  // NotFound listing every known name when `name` is unknown.
  absl::StatusOr<const CachePolicyFactory*> Find(absl::string_view name) const;
  std::vector<std::string> Names() const;
};

namespace internal {
bool RegisterAtStartup(std::unique_ptr<CachePolicyFactory> factory);
}  // namespace internal

#define QUEST_REGISTER_CACHE_POLICY(FactoryClass)                                        \
  static const bool quest_cache_policy_registered_##FactoryClass [[maybe_unused]] =      \
      ::quest::cache::internal::RegisterAtStartup(std::make_unique<FactoryClass>())

}  // namespace quest::cache

#endif  // QUEST_CACHE_CACHE_POLICY_H_
