#include "cache/eviction.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "glog/logging.h"

namespace quest::cache {

absl::Status CheckOptionsCase(const config::CacheConfig& config,
                              config::CacheConfig::OptionsCase expected,
                              absl::string_view options_field) {
  if (config.options_case() == expected ||
      config.options_case() == config::CacheConfig::OPTIONS_NOT_SET) {
    return absl::OkStatus();
  }
  const google::protobuf::FieldDescriptor* set = config.GetDescriptor()->FindFieldByNumber(
      static_cast<int>(config.options_case()));
  return absl::InvalidArgumentError(absl::StrCat(
      "cache.", set != nullptr ? set->name() : "options", " is set, but policy \"", config.policy(),
      "\" takes cache.", options_field));
}

TokenMasks::TokenMasks(int num_masks, int num_kv_heads, int page_size)
    : num_kv_heads_(num_kv_heads),
      page_size_(page_size),
      masks_(num_masks),
      kept_count_(static_cast<size_t>(num_masks) * num_kv_heads, 0) {
  CHECK_GT(num_masks, 0);
  CHECK_GT(num_kv_heads, 0);
  CHECK_GT(page_size, 0);
}

void TokenMasks::Grow(int64_t capacity) {
  if (capacity <= capacity_) return;
  CHECK_EQ(capacity % page_size_, 0) << "mask capacity " << capacity << " is not a multiple of the page size "
                                     << page_size_;
  for (std::vector<uint8_t>& mask : masks_) {
    // Re-stride: each head's row grows from capacity_ to capacity.
    std::vector<uint8_t> grown(static_cast<size_t>(num_kv_heads_) * capacity, 1);
    for (int h = 0; h < num_kv_heads_; ++h) {
      std::copy(mask.begin() + h * capacity_, mask.begin() + (h + 1) * capacity_,
                grown.begin() + h * capacity);
    }
    mask = std::move(grown);
  }
  for (int64_t& count : kept_count_) count += capacity - capacity_;
  page_kept_.resize(capacity / page_size_, num_masks() * num_kv_heads_ * page_size_);
  capacity_ = capacity;
}

void TokenMasks::Evict(int mask, int head, int64_t pos) {
  DCHECK_LT(pos, capacity_);
  uint8_t& m = masks_[mask][head * capacity_ + pos];
  if (m == 0) return;
  m = 0;
  --kept_count_[mask * num_kv_heads_ + head];
  const int64_t page = pos / page_size_;
  if (--page_kept_[page] == 0) pending_release_.push_back(static_cast<int32_t>(page));
}

void TokenMasks::EvictAllHeads(int mask, int64_t pos) {
  for (int h = 0; h < num_kv_heads_; ++h) Evict(mask, h, pos);
}

void TokenMasks::TakeReleasedPages(std::vector<int32_t>& pages) {
  pages.insert(pages.end(), pending_release_.begin(), pending_release_.end());
  pending_release_.clear();
}

}  // namespace quest::cache
