// Deliberately no Abseil includes here: see sentencepiece_bridge.h.
#include "runtime/tokenizer/sentencepiece_training.h"

#include <sentencepiece_trainer.h>

#include <string>

namespace quest {

std::string TrainSentencePieceModel(const std::string& args) {
  const sentencepiece::util::Status status = sentencepiece::SentencePieceTrainer::Train(args);
  return status.ok() ? std::string() : status.ToString();
}

}  // namespace quest
