#include "ops/cuda/testing/teacher_forced.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "cache/kv_cache.h"
#include "models/llama/llama_model.h"

namespace quest::testing {
namespace {

LogitsComparison Compare(const Tensor& want, const Tensor& got) {
  LogitsComparison c;
  double ref = 0;
  for (int64_t i = 0; i < want.numel(); ++i) {
    const double w = want.data<float>()[i], g = got.data<float>()[i];
    if (!std::isfinite(g)) {
      c.max_err = c.rel = INFINITY;
      return c;
    }
    ref = std::max(ref, std::abs(w));
    c.max_err = std::max(c.max_err, std::abs(g - w));
  }
  c.rel = c.max_err / ref;
  const int64_t vocab = want.dim(1);
  const float* w = want.data<float>() + (want.dim(0) - 1) * vocab;
  const float* g = got.data<float>() + (got.dim(0) - 1) * vocab;
  c.cpu_argmax = static_cast<int32_t>(std::max_element(w, w + vocab) - w);
  c.gpu_argmax = static_cast<int32_t>(std::max_element(g, g + vocab) - g);
  double second = -INFINITY;
  for (int64_t i = 0; i < vocab; ++i) {
    if (i != c.cpu_argmax) second = std::max<double>(second, w[i]);
  }
  c.cpu_margin = w[c.cpu_argmax] - second;
  return c;
}

}  // namespace

absl::StatusOr<std::vector<LogitsComparison>> CompareTeacherForced(
    const models::Checkpoint& checkpoint, Backend& cpu, Backend& gpu, const std::vector<int32_t>& prompt,
    int decode_steps, const config::CacheConfig& policy, int page_size) {
  auto cpu_model = models::LlamaModel::Create(checkpoint, cpu);
  if (!cpu_model.ok()) return cpu_model.status();
  auto gpu_model = models::LlamaModel::Create(checkpoint, gpu);
  if (!gpu_model.ok()) return gpu_model.status();
  const int64_t tokens = static_cast<int64_t>(prompt.size()) + decode_steps;
  auto make_cache = [&](Backend& b, const models::LlamaModel& m) {
    cache::PagedKVCacheOptions o;
    o.geometry = m.CacheGeometryFor(page_size);
    o.num_pages = static_cast<int>((tokens + page_size - 1) / page_size) + 1;
    o.dtype = b.activation_dtype();
    o.default_policy = policy;
    return cache::CreatePagedKVCache(o, b);
  };
  auto cpu_cache = make_cache(cpu, **cpu_model);
  if (!cpu_cache.ok()) return cpu_cache.status();
  auto gpu_cache = make_cache(gpu, **gpu_model);
  if (!gpu_cache.ok()) return gpu_cache.status();
  for (auto* c : {&*cpu_cache, &*gpu_cache}) {
    if (absl::Status s = (*c)->AddSequence(1, nullptr); !s.ok()) return s;
  }

  std::vector<LogitsComparison> out;
  std::vector<int32_t> step_tokens = prompt;
  for (int step = 0; step <= decode_steps; ++step) {
    const models::SequenceStep s{1, step_tokens};
    const models::LogitsMode mode = step == 0 ? models::LogitsMode::kAllTokens : models::LogitsMode::kLastToken;
    absl::StatusOr<Tensor> want = (*cpu_model)->Forward({&s, 1}, **cpu_cache, mode);
    if (!want.ok()) return want.status();
    absl::StatusOr<Tensor> got = (*gpu_model)->Forward({&s, 1}, **gpu_cache, mode);
    if (!got.ok()) return got.status();
    if (want->shape() != got->shape()) {
      return absl::InternalError(absl::StrCat("step ", step, ": logits ", want->ShapeString(), " vs ",
                                              got->ShapeString()));
    }
    out.push_back(Compare(*want, *got));
    step_tokens = {out.back().cpu_argmax};  // the CPU's greedy token feeds both
  }
  return out;
}

}  // namespace quest::testing
