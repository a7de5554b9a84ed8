#include "tools/eval/attention_metrics.h"

#include <algorithm>
#include <numeric>
#include <vector>

namespace quest::eval {

double TopRecall(absl::Span<const float> dense, absl::Span<const float> got, int64_t heads, int top) {
  const int64_t len = static_cast<int64_t>(dense.size()) / heads;
  double total = 0;
  std::vector<int64_t> order(len);
  for (int64_t h = 0; h < heads; ++h) {
    std::iota(order.begin(), order.end(), int64_t{0});
    const float* w = dense.data() + h * len;
    std::partial_sort(order.begin(), order.begin() + top, order.end(),
                      [&](int64_t a, int64_t b) { return w[a] > w[b]; });
    int kept = 0;
    for (int i = 0; i < top; ++i) kept += got[h * len + order[i]] > 0.0f;
    total += static_cast<double>(kept) / top;
  }
  return total;
}

double KeptFromPrevious(absl::Span<const float> before, absl::Span<const float> now, int64_t heads) {
  const int64_t len = static_cast<int64_t>(now.size()) / heads;
  const int64_t prev_len = static_cast<int64_t>(before.size()) / heads;
  double total = 0;
  for (int64_t h = 0; h < heads; ++h) {
    int64_t attended = 0, both = 0;
    for (int64_t j = 0; j < len; ++j) {
      if (now[h * len + j] <= 0.0f) continue;
      ++attended;
      both += j < prev_len && before[h * prev_len + j] > 0.0f;
    }
    total += attended > 0 ? static_cast<double>(both) / attended : 1.0;
  }
  return total;
}

}  // namespace quest::eval
