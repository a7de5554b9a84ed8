#ifndef QUEST_CACHE_EVICTION_H_
#define QUEST_CACHE_EVICTION_H_

// Shared pieces of the eviction policies (StreamingLLM, H2O, TOVA).
//
// TokenMasks: which cached tokens an eviction policy still keeps, in the layout the attention op reads (PagedAttentionArgs::
// token_valid), plus the bookkeeping that tells when a whole page may go
// back to the pool.
//
// There are `num_masks` masks (one per layer, or a single one shared by all
// layers), each [num_kv_heads, capacity] bytes over logical positions, 1 =
// kept. A per-page count of kept (mask, head, position) triples finds the
// pages that every mask and head evicted completely; each is reported once.
// Positions not yet written count as kept, so a partly written page is never
// reported. Evictions are permanent.

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "proto/engine_config.pb.h"

namespace quest::cache {

// InvalidArgument when `config` sets the options of a policy other than
// `expected` (e.g. cache.quest for policy "h2o"); `options_field` is the
// expected field's name ("h2o"). Unset options are fine here.
absl::Status CheckOptionsCase(const config::CacheConfig& config,
                              config::CacheConfig::OptionsCase expected,
                              absl::string_view options_field);

class TokenMasks {
 public:
  TokenMasks(int num_masks, int num_kv_heads, int page_size);

  // Makes every mask cover `capacity` positions (page_table.size() *
  // page_size, a multiple of page_size), the new ones kept. Never shrinks.
  void Grow(int64_t capacity);
  int64_t capacity() const { return capacity_; }

  // [num_kv_heads, capacity()] bytes; valid until the next Grow.
  const uint8_t* data(int mask) const { return masks_[mask].data(); }
  bool kept(int mask, int head, int64_t pos) const {
    return masks_[mask][head * capacity_ + pos] != 0;
  }
  // Kept positions of (mask, head) among [0, capacity()).
  int64_t kept_count(int mask, int head) const { return kept_count_[mask * num_kv_heads_ + head]; }

  // Evicts `pos` (< capacity()) for one head, or for every head; evicting an
  // evicted position does nothing.
  void Evict(int mask, int head, int64_t pos);
  void EvictAllHeads(int mask, int64_t pos);

  // Appends the logical pages that became fully evicted, in every mask and
  // head, since the last call.
  void TakeReleasedPages(std::vector<int32_t>& pages);

  int num_masks() const { return static_cast<int>(masks_.size()); }
  int num_kv_heads() const { return num_kv_heads_; }

 private:
  const int num_kv_heads_;
  const int page_size_;
  int64_t capacity_ = 0;
  std::vector<std::vector<uint8_t>> masks_;
  std::vector<int64_t> kept_count_;    // [num_masks * num_kv_heads]
  std::vector<int32_t> page_kept_;     // per logical page, over all masks and heads
  std::vector<int32_t> pending_release_;
};

}  // namespace quest::cache

#endif  // QUEST_CACHE_EVICTION_H_
