#ifndef QUEST_RUNTIME_SAMPLER_H_
#define QUEST_RUNTIME_SAMPLER_H_

// Next-token sampling as a chain of small steps over a candidate list
// (llama.cpp's sampler-chain idea): top-k -> top-p -> temperature -> draw,
// or greedy. Each request owns one Sampler, seeded, so a request's tokens are
// reproducible whatever else runs beside it.

#include <cstdint>
#include <memory>
#include <random>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "proto/generation.pb.h"

namespace quest {

struct TokenCandidate {
  int32_t id;
  float logit;
  float prob;  // filled by steps that need it
};

class SamplingStep {
 public:
  virtual ~SamplingStep() = default;
  // Narrows or reweights `candidates` (sorted by logit, descending, on entry
  // and on exit).
  virtual void Apply(std::vector<TokenCandidate>& candidates) = 0;
};

class Sampler {
 public:
  // InvalidArgument for temperature < 0, top_k < 0, top_p outside [0, 1]
  // (naming the field).
  static absl::StatusOr<std::unique_ptr<Sampler>> Create(const api::SamplingParams& params);

  // Picks the next token from one row of logits.
  int32_t Sample(absl::Span<const float> logits);

 private:
  Sampler(bool greedy, float temperature, uint64_t seed) : greedy_(greedy), temperature_(temperature), rng_(seed) {}

  bool greedy_;
  float temperature_;
  std::mt19937_64 rng_;
  std::vector<std::unique_ptr<SamplingStep>> steps_;
  std::vector<TokenCandidate> candidates_;
};

}  // namespace quest

#endif  // QUEST_RUNTIME_SAMPLER_H_
