#include "ops/cuda/split_plan.h"

#include <algorithm>

namespace quest::ops::cuda {
namespace {

int64_t RoundUp(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

}  // namespace

Splits PlanSplits(const SplitGeometry& geo, int64_t units, int64_t count) {
  Splits one{1, std::max<int64_t>(count, 1)};
  if (units <= 0 || !WorthSplitting(geo, count)) return one;
  int64_t splits = geo.slots / units;  // one wave of equal blocks
  splits = std::min<int64_t>(splits, (count + geo.min_len - 1) / geo.min_len);
  splits = std::min<int64_t>(std::max<int64_t>(splits, 1), kMaxSplits);
  if (splits <= 1) return one;
  const int64_t len = RoundUp((count + splits - 1) / splits, geo.round);
  splits = (count + len - 1) / len;
  if (splits <= 1) return one;
  return Splits{splits, len};
}

int PlanBatchSplits(const SplitGeometry& geo, const int64_t* candidates, int count, BatchSplit* out,
                    int64_t* workspace_floats) {
  *workspace_floats = 0;
  int64_t total = 0, most = 0;
  for (int i = 0; i < count; ++i) {
    out[i] = BatchSplit{1, std::max<int64_t>(candidates[i], 1), 0};
    if (WorthSplitting(geo, candidates[i])) total += candidates[i];
    most = std::max(most, candidates[i]);
  }
  if (total == 0 || geo.units <= 0) return 1;
  // One split length for the batch, so every block streams about the same
  // rows: the batch's candidates spread over one wave of blocks, but never
  // below a full prologue per warp nor above kMaxSplits splits of a list,
  // and at most kMaxBatchSplitLen, so a long batch runs as several waves.
  const int64_t blocks = std::max<int64_t>(geo.slots / geo.units, 1);  // per unit, over the batch
  int64_t len = std::max((total + blocks - 1) / blocks, geo.min_len);
  len = std::min(len, std::max(kMaxBatchSplitLen, geo.min_len));
  len = RoundUp(std::max(len, (most + kMaxSplits - 1) / kMaxSplits), geo.round);
  int widest = 1;
  for (int i = 0; i < count; ++i) {
    const int64_t splits = WorthSplitting(geo, candidates[i]) ? (candidates[i] + len - 1) / len : 1;
    if (splits <= 1) continue;
    out[i] = BatchSplit{static_cast<int>(splits), len, *workspace_floats};
    *workspace_floats += geo.units * splits * geo.row_floats;
    widest = std::max(widest, static_cast<int>(splits));
  }
  return widest;
}

}  // namespace quest::ops::cuda
