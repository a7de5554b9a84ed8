#include "runtime/tokenizer/sentencepiece_tokenizer.h"

#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "runtime/tokenizer/sentencepiece_bridge.h"
#include "runtime/tokenizer/tokenizer.h"

namespace quest {
namespace {

absl::Status ToStatus(const sentencepiece_bridge::Error& error, absl::string_view context) {
  if (error.ok()) return absl::OkStatus();
  const int code = error.code > 0 && error.code <= 16 ? error.code : 2;  // 2 = kUnknown.
  return absl::Status(static_cast<absl::StatusCode>(code),
                      absl::StrCat(context, ": ", error.message));
}

}  // namespace

SentencePieceTokenizer::SentencePieceTokenizer(
    std::unique_ptr<sentencepiece_bridge::Processor> processor)
    : processor_(std::move(processor)) {}

SentencePieceTokenizer::~SentencePieceTokenizer() = default;

absl::StatusOr<std::unique_ptr<SentencePieceTokenizer>> SentencePieceTokenizer::Load(
    const std::string& model_path) {
  sentencepiece_bridge::Error error;
  std::unique_ptr<sentencepiece_bridge::Processor> processor =
      sentencepiece_bridge::Processor::Load(model_path, &error);
  if (processor == nullptr) {
    if (error.ok()) error = {2, "unknown error"};
    return ToStatus(error, absl::StrCat("loading SentencePiece model ", model_path));
  }
  const int size = processor->piece_size();
  if (size <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("SentencePiece model ", model_path, " has no pieces"));
  }
  auto tokenizer =
      std::unique_ptr<SentencePieceTokenizer>(new SentencePieceTokenizer(std::move(processor)));
  const sentencepiece_bridge::Processor& sp = *tokenizer->processor_;
  tokenizer->token_bytes_.resize(size);
  for (int id = 0; id < size; ++id) {
    const std::string& piece = sp.IdToPiece(id);
    const int byte = sp.IsByte(id) ? ParseByteToken(piece) : -1;
    if (byte >= 0) {
      tokenizer->token_bytes_[id] = std::string(1, static_cast<char>(byte));
    } else if (sp.IsControl(id) || sp.IsUnknown(id)) {
      tokenizer->token_bytes_[id] = piece;
      if (!piece.empty()) tokenizer->literals_.push_back({piece, id});
    } else {
      tokenizer->token_bytes_[id] = absl::StrReplaceAll(piece, {{"\xe2\x96\x81", " "}});
    }
  }
  std::stable_sort(
      tokenizer->literals_.begin(), tokenizer->literals_.end(),
      [](const LiteralToken& a, const LiteralToken& b) { return a.text.size() > b.text.size(); });
  const int bos = sp.bos_id();
  const int eos = sp.eos_id();
  tokenizer->bos_id_ = bos >= 0 && bos < size ? bos : -1;
  if (eos >= 0 && eos < size) tokenizer->eos_ids_.push_back(eos);
  return tokenizer;
}

absl::Status SentencePieceTokenizer::EncodeSpan(absl::string_view span,
                                                std::vector<int32_t>* ids) const {
  if (span.empty()) return absl::OkStatus();
  std::vector<int> span_ids;
  absl::Status status =
      ToStatus(processor_->Encode(std::string_view(span.data(), span.size()), &span_ids),
               "SentencePiece encode");
  if (!status.ok()) return status;
  ids->insert(ids->end(), span_ids.begin(), span_ids.end());
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int32_t>> SentencePieceTokenizer::Encode(absl::string_view text) const {
  std::vector<int32_t> ids;
  size_t span_begin = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    const LiteralToken* match = nullptr;
    for (const LiteralToken& literal : literals_) {
      if (text.size() - pos >= literal.text.size() &&
          text.compare(pos, literal.text.size(), literal.text) == 0) {
        match = &literal;
        break;
      }
    }
    if (match == nullptr) {
      ++pos;
      continue;
    }
    absl::Status status = EncodeSpan(text.substr(span_begin, pos - span_begin), &ids);
    if (!status.ok()) return status;
    ids.push_back(match->id);
    pos += match->text.size();
    span_begin = pos;
  }
  absl::Status status = EncodeSpan(text.substr(span_begin), &ids);
  if (!status.ok()) return status;
  return ids;
}

std::string SentencePieceTokenizer::Decode(absl::Span<const int32_t> ids) const {
  std::string text;
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size()) continue;
    text += token_bytes_[id];
  }
  return text;
}

}  // namespace quest
