#ifndef QUEST_CACHE_KV_CACHE_H_
#define QUEST_CACHE_KV_CACHE_H_

// The KV cache as the model sees it. The model appends each layer's K/V of
// new tokens and asks for attention of their queries; which cached tokens
// the queries see is the sequence's CachePolicy's decision (cache_policy.h),
// invisible to the model.
//
// Lifecycle of a sequence: AddSequence -> (Reserve -> per layer: Append,
// Attend -> Commit)* -> RemoveSequence. Reserve is the only call that can
// run out of memory, and it fails before anything is written, so a forward
// step never fails half-way. RemoveSequence returns every page to the pool.
//
// Not thread-safe: one engine thread drives it. stats() may be read from
// other threads.

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "cache/cache_policy.h"
#include "proto/engine_config.pb.h"
#include "runtime/backend.h"
#include "runtime/tensor.h"

namespace quest::cache {

using SequenceId = int64_t;

struct CacheStats {
  int total_pages = 0;
  int pages_in_use = 0;
  int sequences = 0;
};

// One sequence's part of KVCache::AttendBatch.
struct AttendRequest {
  SequenceId id = 0;
  const Tensor* q = nullptr;  // [n, num_heads, head_dim]
  Tensor* out = nullptr;      // [n, num_heads * head_dim]
};

class KVCache {
 public:
  virtual ~KVCache() = default;

  // Starts an empty sequence under `config`'s policy (nullptr: the cache's
  // default). Errors: duplicate id, unknown policy (listing the known ones),
  // invalid policy options.
  virtual absl::Status AddSequence(SequenceId id, const config::CacheConfig* config) = 0;
  // Ensures pages for `n` more tokens. RESOURCE_EXHAUSTED when the pool
  // cannot hold them (nothing is allocated then).
  virtual absl::Status Reserve(SequenceId id, int64_t n) = 0;
  // Stores K/V [n, num_kv_heads, head_dim] of the next n tokens for `layer`.
  virtual void Append(int layer, SequenceId id, const Tensor& k, const Tensor& v) = 0;
  // Attention of q [n, num_heads, head_dim] (the same n new tokens, causal)
  // over the cached tokens the policy selects; out [n, num_heads*head_dim].
  void Attend(int layer, SequenceId id, const Tensor& q, Tensor& out) {
    const AttendRequest request{id, &q, &out};
    AttendBatch(layer, {&request, 1});
  }
  // Attend for each request (distinct sequences) of one layer, in one
  // backend call so the sequences' attention can run together (a forward
  // step's decode tokens share one kernel launch on CUDA).
  virtual void AttendBatch(int layer, absl::Span<const AttendRequest> requests) = 0;
  // After the last layer: the n appended tokens become part of the sequence.
  virtual void Commit(SequenceId id, int64_t n) = 0;
  // Frees the sequence's pages and policy state. Unknown ids are ignored.
  virtual void RemoveSequence(SequenceId id) = 0;

  // Committed tokens of the sequence (0 for unknown ids).
  virtual int64_t Length(SequenceId id) const = 0;
  virtual CacheStats stats() const = 0;
  virtual const CacheGeometry& geometry() const = 0;
};

struct PagedKVCacheOptions {
  CacheGeometry geometry;
  int num_pages = 0;
  DType dtype = DType::kFloat32;
  // The engine-wide default policy and options (CacheConfig.policy, empty =
  // "dense").
  config::CacheConfig default_policy;
};

// The paged implementation over a PagePool. Validates the default policy.
absl::StatusOr<std::unique_ptr<KVCache>> CreatePagedKVCache(const PagedKVCacheOptions& options,
                                                            Backend& backend);

}  // namespace quest::cache

#endif  // QUEST_CACHE_KV_CACHE_H_
