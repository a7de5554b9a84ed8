#ifndef QUEST_RUNTIME_TOKENIZER_SENTENCEPIECE_TRAINING_H_
#define QUEST_RUNTIME_TOKENIZER_SENTENCEPIECE_TRAINING_H_

// Test support: trains a SentencePiece model with libsentencepiece_train.
// Std types only, for the same reason as sentencepiece_bridge.h.

#include <string>

namespace quest {

// `args` are spm_train flags ("--input=... --model_prefix=... ...").
// Returns an empty string on success, else the trainer's error.
std::string TrainSentencePieceModel(const std::string& args);

}  // namespace quest

#endif  // QUEST_RUNTIME_TOKENIZER_SENTENCEPIECE_TRAINING_H_
