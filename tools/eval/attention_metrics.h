#ifndef QUEST_TOOLS_EVAL_ATTENTION_METRICS_H_
#define QUEST_TOOLS_EVAL_ATTENTION_METRICS_H_

// What attention_recall measures of a policy's decode query, from attention
// weights ([heads, kv_len] rows, a weight > 0 where the query attended the
// key): the recall of the dense attention's top keys, and how much of a
// selection carries over from one decode step to the next.

#include <cstdint>

#include "absl/types/span.h"

namespace quest::eval {

// Per head: of the `top` keys with the largest weights in `dense`, the
// share that `got` attended. Summed over the heads (divide by `heads` for
// the mean). Both rows [heads, kv_len]; top <= kv_len.
double TopRecall(absl::Span<const float> dense, absl::Span<const float> got, int64_t heads, int top);

// Per head: the share of the keys `now` attends that `before` attended
// too; `before` is the step before ([heads, kv_len - 1] or shorter: keys
// past it count as new). A head attending nothing counts 1. Summed over the
// heads.
double KeptFromPrevious(absl::Span<const float> before, absl::Span<const float> now, int64_t heads);

}  // namespace quest::eval

#endif  // QUEST_TOOLS_EVAL_ATTENTION_METRICS_H_
