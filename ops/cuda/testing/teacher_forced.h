#ifndef QUEST_OPS_CUDA_TESTING_TEACHER_FORCED_H_
#define QUEST_OPS_CUDA_TESTING_TEACHER_FORCED_H_

// GPU-vs-CPU parity of a whole model, teacher forced: both backends run the
// same prompt and then the CPU's greedy tokens, each with its own KV cache
// under the same cache policy, and every step's logits are compared. Greedy
// generation itself may legitimately part ways across precisions (bf16
// rounding flips a near-tie and the sequences diverge); teacher forcing keeps
// the inputs identical so the logits stay comparable at every step.

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "models/checkpoint.h"
#include "proto/engine_config.pb.h"
#include "runtime/backend.h"

namespace quest::testing {

// The bound on max |gpu - cpu| / max |cpu| of logits for bf16 storage with
// fp32 accumulation (bf16 keeps 8 bits: 2^-8 = 3.9e-3 per rounding, and
// every layer rounds activations several times). Measured on the H100: the
// tiny 2-layer model 0.021-0.043 under dense, Quest and StreamingLLM;
// SmolLM2-135M (30 layers) 0.042 over a 42-token prefill.
inline constexpr double kBf16LogitsTol = 5e-2;

struct LogitsComparison {
  double max_err = 0;     // max |gpu - cpu| over the compared rows
  double rel = 0;         // max_err / max |cpu|
  int32_t cpu_argmax = 0;  // of the last row
  int32_t gpu_argmax = 0;
  double cpu_margin = 0;  // top-1 minus top-2 CPU logit of the last row
  // The argmaxes may differ only where a logit error of max_err could flip
  // them: when the CPU margin is at most 2 * max_err.
  bool ArgmaxConsistent() const { return cpu_argmax == gpu_argmax || cpu_margin <= 2 * max_err; }
};

// Step 0 is the prompt's prefill (all its rows compared); steps 1..decode_steps
// are single-token decodes. Non-finite GPU logits give rel = +inf.
absl::StatusOr<std::vector<LogitsComparison>> CompareTeacherForced(
    const models::Checkpoint& checkpoint, Backend& cpu, Backend& gpu, const std::vector<int32_t>& prompt,
    int decode_steps, const config::CacheConfig& policy, int page_size);

}  // namespace quest::testing

#endif  // QUEST_OPS_CUDA_TESTING_TEACHER_FORCED_H_
