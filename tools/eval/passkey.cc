#include "tools/eval/passkey.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace quest::eval {
namespace {

constexpr char kIntro[] =
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
    "I will quiz you about the important information there.";
constexpr char kFiller[] =
    " The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";

absl::StatusOr<std::vector<int32_t>> Encode(const Tokenizer& t, const std::string& text) {
  return t.Encode(text);
}

}  // namespace

absl::StatusOr<PasskeyPrompt> BuildPasskeyPrompt(const Tokenizer& tokenizer, int64_t context_tokens,
                                                 double depth, const std::string& key) {
  absl::StatusOr<std::vector<int32_t>> intro = Encode(tokenizer, kIntro);
  absl::StatusOr<std::vector<int32_t>> filler = Encode(tokenizer, kFiller);
  absl::StatusOr<std::vector<int32_t>> needle =
      Encode(tokenizer, absl::StrCat(" The pass key is ", key, ". Remember it. ", key, " is the pass key."));
  absl::StatusOr<std::vector<int32_t>> question = Encode(tokenizer, " What is the pass key? The pass key is");
  for (const auto* s : {&intro, &filler, &needle, &question}) {
    if (!s->ok()) return s->status();
  }
  const int64_t bos = tokenizer.add_bos() && tokenizer.bos_id() >= 0 ? 1 : 0;
  const int64_t fixed = bos + intro->size() + needle->size() + question->size();
  const int64_t repeats = (context_tokens - fixed) / static_cast<int64_t>(filler->size());
  if (repeats < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("passkey: context of ", context_tokens, " tokens is too short (needs > ", fixed + filler->size(), ")"));
  }
  const int64_t before = std::clamp<int64_t>(static_cast<int64_t>(depth * repeats + 0.5), 0, repeats);
  PasskeyPrompt p;
  p.key = key;
  if (bos) p.ids.push_back(tokenizer.bos_id());
  p.ids.insert(p.ids.end(), intro->begin(), intro->end());
  for (int64_t i = 0; i < before; ++i) p.ids.insert(p.ids.end(), filler->begin(), filler->end());
  p.key_position = static_cast<int64_t>(p.ids.size());
  p.ids.insert(p.ids.end(), needle->begin(), needle->end());
  for (int64_t i = before; i < repeats; ++i) p.ids.insert(p.ids.end(), filler->begin(), filler->end());
  p.ids.insert(p.ids.end(), question->begin(), question->end());
  return p;
}

bool PasskeyFound(const std::string& answer, const std::string& key) { return absl::StrContains(answer, key); }

config::CacheConfig PolicyWithBudget(const std::string& name, int64_t budget,
                                     config::QuestOptions::GqaCombine gqa_combine) {
  config::CacheConfig c;
  c.set_policy(name);
  const uint32_t b = static_cast<uint32_t>(budget);
  if (name == "dense") {
    c.mutable_dense();
  } else if (name == "quest") {
    c.mutable_quest()->set_token_budget(b);
    c.mutable_quest()->set_gqa_combine(gqa_combine);
  } else if (name == "streaming_llm") {
    constexpr uint32_t kSinks = 4;
    c.mutable_streaming_llm()->set_sink_tokens(kSinks);
    c.mutable_streaming_llm()->set_window_tokens(b > kSinks ? b - kSinks : 1);
  } else if (name == "h2o") {
    c.mutable_h2o()->set_token_budget(b);
  } else if (name == "tova") {
    c.mutable_tova()->set_token_budget(b);
  }
  return c;
}

}  // namespace quest::eval
