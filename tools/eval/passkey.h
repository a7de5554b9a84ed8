#ifndef QUEST_TOOLS_EVAL_PASSKEY_H_
#define QUEST_TOOLS_EVAL_PASSKEY_H_

// Passkey retrieval, as in the Quest paper (after Landmark Attention): a
// five-digit key sentence hidden at some depth in repeated filler text, then
// the question. Prompts are built in token space so one tokenization of each
// piece serves every context length.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "proto/engine_config.pb.h"
#include "runtime/tokenizer/tokenizer.h"

namespace quest::eval {

struct PasskeyPrompt {
  std::vector<int32_t> ids;
  std::string key;       // the five digits
  int64_t key_position;  // token index where the key sentence starts
};

// A prompt of about `context_tokens` tokens (never more) with the key
// sentence at relative `depth` in [0, 1] of the filler.
absl::StatusOr<PasskeyPrompt> BuildPasskeyPrompt(const Tokenizer& tokenizer, int64_t context_tokens,
                                                 double depth, const std::string& key);

// Whether the generated answer contains the key.
bool PasskeyFound(const std::string& answer, const std::string& key);

// The cache config that runs policy `name` with a token budget: quest's
// token_budget, streaming_llm's sinks (4) + window, h2o's and tova's budgets.
// "dense" ignores the budget. Other names (plugins) get the name alone.
config::CacheConfig PolicyWithBudget(const std::string& name, int64_t budget,
                                     config::QuestOptions::GqaCombine gqa_combine =
                                         config::QuestOptions::GQA_COMBINE_UNSPECIFIED);

}  // namespace quest::eval

#endif  // QUEST_TOOLS_EVAL_PASSKEY_H_
