#include "runtime/tokenizer/bpe_tokenizer.h"

#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "runtime/tokenizer/tokenizer.h"
#include "runtime/tokenizer/utf8.h"

namespace quest {
namespace {

// GPT-2's bytes_to_unicode(): printable Latin-1 bytes stand for themselves,
// the other 68 bytes (controls, space, DEL, NBSP, soft hyphen) for U+0100
// onwards, in byte order. Vocabulary strings are written in these code points.
struct ByteLevelAlphabet {
  int32_t code_point_of_byte[256];
  // Inverse, indexed by code point (all are below 0x100 + 68).
  int16_t byte_of_code_point[0x144];

  ByteLevelAlphabet() {
    std::fill(std::begin(byte_of_code_point), std::end(byte_of_code_point), -1);
    int32_t next_extra = 0x100;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      code_point_of_byte[b] = printable ? b : next_extra++;
      byte_of_code_point[code_point_of_byte[b]] = static_cast<int16_t>(b);
    }
  }
};

const ByteLevelAlphabet& Alphabet() {
  static const ByteLevelAlphabet* const alphabet = new ByteLevelAlphabet();
  return *alphabet;
}

// The raw bytes of a byte-level vocabulary string. Characters outside the
// alphabet stand for their own UTF-8 (what Hugging Face's ByteLevel decoder
// does), and bytes that are not UTF-8 are kept as they are.
std::string ByteLevelToBytes(absl::string_view token) {
  const ByteLevelAlphabet& alphabet = Alphabet();
  std::string bytes;
  bytes.reserve(token.size());
  size_t pos = 0;
  while (pos < token.size()) {
    const Utf8Char ch = DecodeUtf8At(token, pos);
    if (ch.code_point >= 0 && ch.code_point < 0x144 &&
        alphabet.byte_of_code_point[ch.code_point] >= 0) {
      bytes.push_back(static_cast<char>(alphabet.byte_of_code_point[ch.code_point]));
    } else {
      bytes.append(token.data() + pos, ch.length);
    }
    pos += ch.length;
  }
  return bytes;
}

bool IsLiteralType(TokenType type) {
  return type == TokenType::kControl || type == TokenType::kUserDefined ||
         type == TokenType::kUnknown;
}

}  // namespace

absl::StatusOr<std::unique_ptr<BpeTokenizer>> BpeTokenizer::Create(BpeVocabulary vocab) {
  absl::StatusOr<PreTokenizer> pre_tokenizer = PreTokenizer::Create(vocab.pre_tokenizer);
  if (!pre_tokenizer.ok()) return pre_tokenizer.status();
  const size_t n = vocab.tokens.size();
  if (n == 0) return absl::InvalidArgumentError("BPE vocabulary has no tokens");
  if (n > static_cast<size_t>(INT32_MAX)) {
    return absl::InvalidArgumentError(absl::StrCat("BPE vocabulary has ", n, " tokens; too many"));
  }
  if (!vocab.token_types.empty() && vocab.token_types.size() != n) {
    return absl::InvalidArgumentError(absl::StrCat("BPE vocabulary has ", n, " tokens but ",
                                                   vocab.token_types.size(), " token types"));
  }
  for (size_t i = 0; i < vocab.token_types.size(); ++i) {
    if (vocab.token_types[i] < 0 || vocab.token_types[i] > 6) {
      return absl::InvalidArgumentError(
          absl::StrCat("token ", i, " (\"", absl::CEscape(vocab.tokens[i]),
                       "\") has unknown token type ", vocab.token_types[i], "; expected 0..6"));
    }
  }
  const int32_t vocab_size = static_cast<int32_t>(n);
  if (vocab.bos_id < -1 || vocab.bos_id >= vocab_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("BOS id ", vocab.bos_id, " is outside the vocabulary of ", n, " tokens"));
  }
  if (vocab.add_bos && vocab.bos_id < 0) {
    return absl::InvalidArgumentError("add_bos is set but the vocabulary has no BOS token");
  }
  for (int32_t id : vocab.eos_ids) {
    if (id < 0 || id >= vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("EOS id ", id, " is outside the vocabulary of ", n, " tokens"));
    }
  }

  auto tokenizer = std::unique_ptr<BpeTokenizer>(new BpeTokenizer(*pre_tokenizer));
  tokenizer->ignore_merges_ = pre_tokenizer->kind() == PreTokenizer::Kind::kLlama3;
  tokenizer->bos_id_ = vocab.bos_id;
  tokenizer->eos_ids_ = vocab.eos_ids;
  tokenizer->add_bos_ = vocab.add_bos;
  std::fill(std::begin(tokenizer->byte_token_), std::end(tokenizer->byte_token_), -1);

  // Merges name tokens by their vocabulary strings; the first id wins when a
  // string repeats.
  absl::flat_hash_map<absl::string_view, int32_t> id_of_token;
  id_of_token.reserve(n);
  tokenizer->token_bytes_.resize(n);
  for (int32_t id = 0; id < vocab_size; ++id) {
    const std::string& token = vocab.tokens[id];
    const TokenType type = vocab.token_types.empty()
                               ? TokenType::kNormal
                               : static_cast<TokenType>(vocab.token_types[id]);
    id_of_token.emplace(token, id);
    std::string& bytes = tokenizer->token_bytes_[id];
    if (IsLiteralType(type)) {
      bytes = token;
      if (type == TokenType::kUnknown && tokenizer->unknown_id_ < 0) tokenizer->unknown_id_ = id;
      if (!token.empty()) {
        tokenizer->literals_by_first_byte_[static_cast<uint8_t>(token[0])].push_back({token, id});
      }
      continue;
    }
    const int byte = type == TokenType::kByte ? ParseByteToken(token) : -1;
    bytes = byte >= 0 ? std::string(1, static_cast<char>(byte)) : ByteLevelToBytes(token);
    if (byte >= 0 && tokenizer->byte_token_[byte] < 0) tokenizer->byte_token_[byte] = id;
    if (tokenizer->ignore_merges_ && type != TokenType::kUnused) {
      tokenizer->bytes_to_id_.emplace(bytes, id);
    }
  }
  for (auto& literals : tokenizer->literals_by_first_byte_) {
    std::stable_sort(
        literals.begin(), literals.end(),
        [](const LiteralToken& a, const LiteralToken& b) { return a.text.size() > b.text.size(); });
  }

  const ByteLevelAlphabet& alphabet = Alphabet();
  for (int b = 0; b < 256; ++b) {
    std::string symbol;
    AppendUtf8(alphabet.code_point_of_byte[b], &symbol);
    auto it = id_of_token.find(symbol);
    if (it != id_of_token.end()) tokenizer->byte_token_[b] = it->second;
  }

  tokenizer->merges_.reserve(vocab.merges.size());
  for (size_t rank = 0; rank < vocab.merges.size(); ++rank) {
    const std::string& merge = vocab.merges[rank];
    const size_t space = merge.find(' ');
    if (space == std::string::npos || space == 0 || space + 1 == merge.size() ||
        merge.find(' ', space + 1) != std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat("BPE merge ", rank, " (\"",
                                                     absl::CEscape(merge),
                                                     "\") is not of the form \"left right\""));
    }
    const absl::string_view left(merge.data(), space);
    const absl::string_view right(merge.data() + space + 1, merge.size() - space - 1);
    const std::string merged = absl::StrCat(left, right);
    int32_t ids[3];
    const absl::string_view parts[3] = {left, right, merged};
    for (int k = 0; k < 3; ++k) {
      auto it = id_of_token.find(parts[k]);
      if (it == id_of_token.end()) {
        return absl::InvalidArgumentError(
            absl::StrCat("BPE merge ", rank, " (\"", absl::CEscape(merge), "\"): \"",
                         absl::CEscape(parts[k]), "\" is not in the vocabulary"));
      }
      ids[k] = it->second;
    }
    // A repeated pair keeps its first (lowest) rank, as llama.cpp does.
    tokenizer->merges_.emplace(PairKey(ids[0], ids[1]), Merge{static_cast<uint32_t>(rank), ids[2]});
  }
  return tokenizer;
}

absl::string_view BpeTokenizer::TokenBytes(int32_t id) const {
  if (id < 0 || id >= vocab_size()) return {};
  return token_bytes_[id];
}

size_t BpeTokenizer::MatchLiteral(absl::string_view text, size_t pos, int32_t* id) const {
  for (const LiteralToken& literal : literals_by_first_byte_[static_cast<uint8_t>(text[pos])]) {
    if (text.size() - pos >= literal.text.size() &&
        text.compare(pos, literal.text.size(), literal.text) == 0) {
      *id = literal.id;
      return literal.text.size();
    }
  }
  return 0;
}

void BpeTokenizer::EncodePiece(absl::string_view piece, std::vector<int32_t>* ids) const {
  if (ignore_merges_) {
    auto it = bytes_to_id_.find(piece);
    if (it != bytes_to_id_.end()) {
      ids->push_back(it->second);
      return;
    }
  }
  // A doubly linked list of symbols over the piece's bytes; merging folds the
  // right symbol into the left one, so symbol 0 is always the head.
  struct Symbol {
    int32_t id;
    int32_t prev;
    int32_t next;
    bool alive;
  };
  std::vector<Symbol> symbols;
  symbols.reserve(piece.size());
  for (size_t i = 0; i < piece.size(); ++i) {
    int32_t id = byte_token_[static_cast<uint8_t>(piece[i])];
    if (id < 0) id = unknown_id_;
    if (id < 0) continue;  // Dropped, as Hugging Face and llama.cpp do.
    const int32_t index = static_cast<int32_t>(symbols.size());
    symbols.push_back({id, index - 1, -1, true});
    if (index > 0) symbols[index - 1].next = index;
  }
  if (symbols.empty()) return;
  if (symbols.size() > 1) {
    // Hugging Face's Word::merge_all: a min-heap of candidate merges by
    // (rank, position); entries made stale by an earlier merge are skipped.
    struct Candidate {
      uint32_t rank;
      int32_t pos;
      int32_t merged_id;
    };
    auto later = [](const Candidate& a, const Candidate& b) {
      return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos;
    };
    std::vector<Candidate> heap;
    auto push = [&](int32_t pos) {
      auto it = merges_.find(PairKey(symbols[pos].id, symbols[symbols[pos].next].id));
      if (it == merges_.end()) return;
      heap.push_back({it->second.rank, pos, it->second.merged_id});
      std::push_heap(heap.begin(), heap.end(), later);
    };
    for (int32_t pos = 0; pos + 1 < static_cast<int32_t>(symbols.size()); ++pos) push(pos);
    while (!heap.empty()) {
      std::pop_heap(heap.begin(), heap.end(), later);
      const Candidate top = heap.back();
      heap.pop_back();
      Symbol& left = symbols[top.pos];
      if (!left.alive || left.next < 0) continue;
      Symbol& right = symbols[left.next];
      auto it = merges_.find(PairKey(left.id, right.id));
      if (it == merges_.end() || it->second.merged_id != top.merged_id) continue;
      left.id = top.merged_id;
      right.alive = false;
      left.next = right.next;
      if (left.next >= 0) symbols[left.next].prev = top.pos;
      if (left.prev >= 0) push(left.prev);
      if (left.next >= 0) push(top.pos);
    }
  }
  for (int32_t i = 0; i >= 0; i = symbols[i].next) ids->push_back(symbols[i].id);
}

absl::StatusOr<std::vector<int32_t>> BpeTokenizer::Encode(absl::string_view text) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 1);
  std::vector<absl::string_view> pieces;
  auto encode_span = [&](size_t begin, size_t end) {
    if (begin == end) return;
    pieces.clear();
    pre_tokenizer_.Split(text.substr(begin, end - begin), &pieces);
    for (absl::string_view piece : pieces) EncodePiece(piece, &ids);
  };
  size_t span_begin = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    int32_t id;
    const size_t length = MatchLiteral(text, pos, &id);
    if (length == 0) {
      ++pos;
      continue;
    }
    encode_span(span_begin, pos);
    ids.push_back(id);
    pos += length;
    span_begin = pos;
  }
  encode_span(span_begin, text.size());
  return ids;
}

std::string BpeTokenizer::Decode(absl::Span<const int32_t> ids) const {
  std::string text;
  for (int32_t id : ids) {
    const absl::string_view bytes = TokenBytes(id);
    text.append(bytes.data(), bytes.size());
  }
  return text;
}

}  // namespace quest
