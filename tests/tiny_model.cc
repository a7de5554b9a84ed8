#include "tests/tiny_model.h"

#include <cstdlib>

namespace quest::fixtures {

std::string TinyCheckpointPath(const std::string& variant) {
  return std::string(std::getenv("TEST_SRCDIR")) + "/quest_runtime/tests/fixtures/hf_tiny/" + variant;
}

config::EngineConfig TinyEngineConfig() {
  config::EngineConfig c;
  c.mutable_model()->set_path(TinyCheckpointPath());
  c.mutable_cache()->set_page_size(4);
  return c;
}

api::GenerateRequest TokenRequest(const std::vector<int32_t>& ids, int max_tokens) {
  api::GenerateRequest r;
  for (int32_t id : ids) r.mutable_token_ids()->add_ids(id);
  r.mutable_sampling()->set_max_tokens(max_tokens);
  return r;
}

std::vector<int32_t> TokenIds(const api::GenerateResponse& response) {
  return std::vector<int32_t>(response.token_ids().begin(), response.token_ids().end());
}

}  // namespace quest::fixtures
