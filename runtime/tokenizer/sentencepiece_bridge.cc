// Deliberately no Abseil includes here: see sentencepiece_bridge.h.
#include "runtime/tokenizer/sentencepiece_bridge.h"

#include <sentencepiece_processor.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace quest {
namespace sentencepiece_bridge {
namespace {

Error ToError(const sentencepiece::util::Status& status) {
  if (status.ok()) return {};
  return {static_cast<int>(status.code()), status.message()};
}

}  // namespace

struct Processor::Impl {
  sentencepiece::SentencePieceProcessor processor;
};

Processor::Processor(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Processor::~Processor() = default;

std::unique_ptr<Processor> Processor::Load(const std::string& model_path, Error* error) {
  auto impl = std::make_unique<Impl>();
  *error = ToError(impl->processor.Load(model_path));
  if (!error->ok()) return nullptr;
  return std::unique_ptr<Processor>(new Processor(std::move(impl)));
}

Error Processor::Encode(std::string_view text, std::vector<int>* ids) const {
  return ToError(impl_->processor.Encode(text, ids));
}

int Processor::piece_size() const { return impl_->processor.GetPieceSize(); }
const std::string& Processor::IdToPiece(int id) const { return impl_->processor.IdToPiece(id); }
bool Processor::IsControl(int id) const { return impl_->processor.IsControl(id); }
bool Processor::IsUnknown(int id) const { return impl_->processor.IsUnknown(id); }
bool Processor::IsByte(int id) const { return impl_->processor.IsByte(id); }
int Processor::bos_id() const { return impl_->processor.bos_id(); }
int Processor::eos_id() const { return impl_->processor.eos_id(); }

}  // namespace sentencepiece_bridge
}  // namespace quest
