#include "runtime/tokenizer/sentencepiece_training.h"

#include "runtime/tokenizer/sentencepiece_bridge.h"

namespace quest {

std::string TrainSentencePieceModel(const std::string& args) {
  const sentencepiece_bridge::Error error = sentencepiece_bridge::Train(args);
  return error.ok() ? std::string() : error.message;
}

}  // namespace quest
