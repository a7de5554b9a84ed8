#ifndef QUEST_RUNTIME_TOKENIZER_SENTENCEPIECE_BRIDGE_H_
#define QUEST_RUNTIME_TOKENIZER_SENTENCEPIECE_BRIDGE_H_

// The C++ face of libsentencepiece, which lives in its own shared object
// (sentencepiece_shim.cc explains why) loaded on first use. Debian's
// sentencepiece_processor.h declares `namespace absl { using
// std::string_view; }`, which collides with Abseil's own absl::string_view in
// any translation unit that includes both; this bridge speaks std types only,
// so callers keep using Abseil.

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace quest {
namespace sentencepiece_bridge {

// Canonical status code (same numbering as absl::StatusCode) and message.
struct Error {
  int code = 0;
  std::string message;
  bool ok() const { return code == 0; }
};

class Processor {
 public:
  ~Processor();

  static std::unique_ptr<Processor> Load(const std::string& model_path, Error* error);

  // Thread-safe (the underlying processor's encoding is const).
  Error Encode(std::string_view text, std::vector<int>* ids) const;

  int piece_size() const;
  const std::string& IdToPiece(int id) const;
  bool IsControl(int id) const;
  bool IsUnknown(int id) const;
  bool IsByte(int id) const;
  int bos_id() const;  // -1 when the model has none.
  int eos_id() const;  // -1 when the model has none.

 private:
  struct Impl;
  explicit Processor(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Trains a model (spm_train flags: "--input=... --model_prefix=..."); used
// by tests to make small models.
Error Train(const std::string& args);

}  // namespace sentencepiece_bridge
}  // namespace quest

#endif  // QUEST_RUNTIME_TOKENIZER_SENTENCEPIECE_BRIDGE_H_
