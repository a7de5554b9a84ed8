#include "runtime/sampler.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "glog/logging.h"

namespace quest {
namespace {

void Softmax(std::vector<TokenCandidate>& c, float temperature) {
  const float max_logit = c.front().logit;
  double sum = 0.0;
  for (TokenCandidate& t : c) sum += (t.prob = std::exp((t.logit - max_logit) / temperature));
  for (TokenCandidate& t : c) t.prob = static_cast<float>(t.prob / sum);
}

class TopK final : public SamplingStep {
 public:
  explicit TopK(int k) : k_(k) {}
  void Apply(std::vector<TokenCandidate>& c) override {
    if (static_cast<size_t>(k_) < c.size()) c.resize(k_);
  }

 private:
  int k_;
};

// Keeps the smallest prefix whose probability mass reaches p (at least one).
class TopP final : public SamplingStep {
 public:
  TopP(float p, float temperature) : p_(p), temperature_(temperature) {}
  void Apply(std::vector<TokenCandidate>& c) override {
    Softmax(c, temperature_);
    double mass = 0.0;
    size_t keep = 0;
    while (keep < c.size()) {
      mass += c[keep++].prob;
      if (mass >= p_) break;
    }
    c.resize(std::max<size_t>(keep, 1));
  }

 private:
  float p_, temperature_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Sampler>> Sampler::Create(const api::SamplingParams& p) {
  if (!(p.temperature() >= 0.0f) || std::isinf(p.temperature())) {
    return absl::InvalidArgumentError(absl::StrCat("sampling.temperature must be >= 0, got ", p.temperature()));
  }
  if (p.top_k() < 0) {
    return absl::InvalidArgumentError(absl::StrCat("sampling.top_k must be >= 0, got ", p.top_k()));
  }
  if (!(p.top_p() >= 0.0f && p.top_p() <= 1.0f)) {
    return absl::InvalidArgumentError(absl::StrCat("sampling.top_p must be in [0, 1], got ", p.top_p()));
  }
  const bool greedy = p.temperature() == 0.0f;
  auto sampler = absl::WrapUnique(new Sampler(greedy, p.temperature(), p.seed()));
  if (!greedy) {
    if (p.top_k() > 0) {
      sampler->top_k_ = p.top_k();
      sampler->steps_.push_back(std::make_unique<TopK>(p.top_k()));
    }
    if (p.top_p() > 0.0f && p.top_p() < 1.0f) {
      sampler->steps_.push_back(std::make_unique<TopP>(p.top_p(), p.temperature()));
    }
  }
  return sampler;
}

int32_t Sampler::Sample(absl::Span<const float> logits) {
  if (greedy_) {
    // First maximum wins ties, as torch.argmax does.
    return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  }
  candidates_.resize(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) candidates_[i] = {static_cast<int32_t>(i), logits[i], 0.0f};
  std::stable_sort(candidates_.begin(), candidates_.end(),
                   [](const TokenCandidate& a, const TokenCandidate& b) { return a.logit > b.logit; });
  return SampleSorted();
}

int32_t Sampler::SampleTop(absl::Span<const int32_t> ids, absl::Span<const float> logits) {
  CHECK(TopCandidatesNeeded() > 0 && ids.size() >= static_cast<size_t>(TopCandidatesNeeded()) &&
        ids.size() == logits.size())
      << "SampleTop with " << ids.size() << " candidates, needs " << TopCandidatesNeeded();
  if (greedy_) return ids[0];
  // Only the first top_k matter: the chain's TopK step would cut the rest.
  candidates_.resize(top_k_);
  for (int i = 0; i < top_k_; ++i) candidates_[i] = {ids[i], logits[i], 0.0f};
  return SampleSorted();
}

int32_t Sampler::SampleSorted() {
  for (auto& step : steps_) step->Apply(candidates_);
  Softmax(candidates_, temperature_);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  double r = uniform(rng_);
  for (const TokenCandidate& c : candidates_) {
    r -= c.prob;
    if (r <= 0.0) return c.id;
  }
  return candidates_.back().id;
}

}  // namespace quest
