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

  // How many of a row's best candidates SampleTop needs: 1 when greedy,
  // top_k when top_k is set, 0 when it needs the whole row (sampling
  // without top_k: the full softmax).
  int TopCandidatesNeeded() const { return greedy_ ? 1 : top_k_; }
  // Picks the next token from a row's best candidates, best first, ties in
  // ascending id order (Backend::TopK's order); ids.size() >=
  // TopCandidatesNeeded() > 0. Same token, and the same random draw, as
  // Sample over the whole row.
  int32_t SampleTop(absl::Span<const int32_t> ids, absl::Span<const float> logits);

 private:
  // The chain and the draw over candidates_, sorted best first.
  int32_t SampleSorted();

  Sampler(bool greedy, float temperature, uint64_t seed) : greedy_(greedy), temperature_(temperature), rng_(seed) {}

  bool greedy_;
  float temperature_;
  int top_k_ = 0;
  std::mt19937_64 rng_;
  std::vector<std::unique_ptr<SamplingStep>> steps_;
  std::vector<TokenCandidate> candidates_;
};

}  // namespace quest

#endif  // QUEST_RUNTIME_SAMPLER_H_
