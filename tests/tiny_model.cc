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

}  // namespace quest::fixtures
