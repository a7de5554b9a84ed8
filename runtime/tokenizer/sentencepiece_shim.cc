// The only code linked against libsentencepiece, built as its own shared
// object (libquest_sentencepiece.so) and loaded at run time by
// sentencepiece_bridge.cc with RTLD_LOCAL | RTLD_DEEPBIND.
//
// Why: Debian's libsentencepiece.so exports its own bundled copy of
// protobuf-lite (~1600 google::protobuf symbols of an older version). Linked
// into a process that also uses the system libprotobuf (every engine binary:
// the configs and requests are protos), the two interpose and the process
// crashes during static initialisation. Loaded locally with deep binding,
// sentencepiece resolves to its own copy and the rest of the process never
// sees it. The interface is plain C so nothing else crosses the boundary.

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

char* CopyMessage(const sentencepiece::util::Status& status) {
  const std::string text = status.ToString();
  char* out = static_cast<char*>(std::malloc(text.size() + 1));
  std::memcpy(out, text.c_str(), text.size() + 1);
  return out;
}

}  // namespace

extern "C" {

// Returns the processor or nullptr with *code / *message (malloc'ed) set.
void* quest_sp_load(const char* path, int* code, char** message) {
  auto* processor = new sentencepiece::SentencePieceProcessor();
  const sentencepiece::util::Status status = processor->Load(path);
  if (!status.ok()) {
    *code = static_cast<int>(status.code());
    *message = CopyMessage(status);
    delete processor;
    return nullptr;
  }
  *code = 0;
  return processor;
}

void quest_sp_delete(void* processor) {
  delete static_cast<sentencepiece::SentencePieceProcessor*>(processor);
}

// Fills *ids (malloc'ed, *n entries). Returns the status code; on error
// *message is malloc'ed.
int quest_sp_encode(const void* processor, const char* text, size_t len, int** ids, size_t* n,
                    char** message) {
  std::vector<int> out;
  const sentencepiece::util::Status status =
      static_cast<const sentencepiece::SentencePieceProcessor*>(processor)->Encode(
          std::string_view(text, len), &out);
  if (!status.ok()) {
    *message = CopyMessage(status);
    return static_cast<int>(status.code());
  }
  *n = out.size();
  *ids = static_cast<int*>(std::malloc(std::max<size_t>(out.size(), 1) * sizeof(int)));
  std::memcpy(*ids, out.data(), out.size() * sizeof(int));
  return 0;
}

void quest_sp_free(void* buffer) { std::free(buffer); }

int quest_sp_piece_size(const void* processor) {
  return static_cast<const sentencepiece::SentencePieceProcessor*>(processor)->GetPieceSize();
}

// The piece's bytes, owned by the processor (valid while it lives).
const char* quest_sp_id_to_piece(const void* processor, int id, size_t* len) {
  const std::string& piece = static_cast<const sentencepiece::SentencePieceProcessor*>(processor)->IdToPiece(id);
  *len = piece.size();
  return piece.data();
}

// Bit 0: control, bit 1: unknown, bit 2: byte piece.
int quest_sp_piece_kind(const void* processor, int id) {
  const auto* p = static_cast<const sentencepiece::SentencePieceProcessor*>(processor);
  return (p->IsControl(id) ? 1 : 0) | (p->IsUnknown(id) ? 2 : 0) | (p->IsByte(id) ? 4 : 0);
}

int quest_sp_bos_id(const void* processor) {
  return static_cast<const sentencepiece::SentencePieceProcessor*>(processor)->bos_id();
}

int quest_sp_eos_id(const void* processor) {
  return static_cast<const sentencepiece::SentencePieceProcessor*>(processor)->eos_id();
}

// spm_train flags; returns nullptr on success, else a malloc'ed message.
char* quest_sp_train(const char* args) {
  const sentencepiece::util::Status status = sentencepiece::SentencePieceTrainer::Train(args);
  return status.ok() ? nullptr : CopyMessage(status);
}

}  // extern "C"
