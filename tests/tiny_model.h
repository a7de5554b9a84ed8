#ifndef QUEST_TESTS_TINY_MODEL_H_
#define QUEST_TESTS_TINY_MODEL_H_

// The tiny transformers-made checkpoints (tests/fixtures/hf_tiny/, written by
// tools/reference/hf_reference.py) as tests across packages use them. Link
// //tests:tiny_model; the fixtures come along as runfiles.

#include <cstdint>
#include <string>
#include <vector>

#include "proto/engine_config.pb.h"
#include "proto/generation.pb.h"

namespace quest::fixtures {

// Runfiles path of tests/fixtures/hf_tiny/<variant>.
std::string TinyCheckpointPath(const std::string& variant = "gqa");

// An engine on the GQA checkpoint (8 query / 2 KV heads, context 64,
// vocabulary 128, no tokenizer: prompts are token ids) with 4-token KV pages,
// so short prompts already cross page boundaries.
config::EngineConfig TinyEngineConfig();

// A request for `max_tokens` greedy tokens after the prompt `ids` (the tiny
// model has no tokenizer), and the token ids a response generated.
api::GenerateRequest TokenRequest(const std::vector<int32_t>& ids, int max_tokens);
std::vector<int32_t> TokenIds(const api::GenerateResponse& response);

}  // namespace quest::fixtures

#endif  // QUEST_TESTS_TINY_MODEL_H_
