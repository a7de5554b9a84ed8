// Loads libquest_sentencepiece.so (sentencepiece_shim.cc) with deep, local
// binding and forwards to its C interface; see the shim for why.
#include "runtime/tokenizer/sentencepiece_bridge.h"

#include <dlfcn.h>
#include <limits.h>
#include <unistd.h>

#include <cstdlib>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace quest {
namespace sentencepiece_bridge {
namespace {

constexpr char kShimName[] = "libquest_sentencepiece.so";
constexpr char kShimRunfile[] = "quest_runtime/runtime/tokenizer/libquest_sentencepiece.so";

struct Shim {
  void* (*load)(const char*, int*, char**);
  void (*destroy)(void*);
  int (*encode)(const void*, const char*, size_t, int**, size_t*, char**);
  void (*free_buffer)(void*);
  int (*piece_size)(const void*);
  const char* (*id_to_piece)(const void*, int, size_t*);
  int (*piece_kind)(const void*, int);
  int (*bos_id)(const void*);
  int (*eos_id)(const void*);
  char* (*train)(const char*);
};

std::string ExecutableDir() {
  char buf[PATH_MAX];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return "";
  std::string path(buf, n);
  return path.substr(0, path.rfind('/'));
}

std::vector<std::string> Candidates() {
  std::vector<std::string> c;
  if (const char* env = std::getenv("QUEST_SENTENCEPIECE_SHIM")) c.push_back(env);
  for (const char* var : {"RUNFILES_DIR", "TEST_SRCDIR"}) {
    if (const char* dir = std::getenv(var)) c.push_back(std::string(dir) + "/" + kShimRunfile);
  }
  char exe[PATH_MAX];
  const ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  if (n > 0) c.push_back(std::string(exe, n) + ".runfiles/" + kShimRunfile);
  const std::string dir = ExecutableDir();
  if (!dir.empty()) {
    c.push_back(dir + "/" + kShimName);
    c.push_back(dir + "/../lib/" + kShimName);
  }
  c.push_back(kShimName);  // the dynamic loader's own search path
  return c;
}

// Loads the shim once per process. Returns nullptr with `error` set when no
// candidate loads.
const Shim* GetShim(Error* error) {
  static std::once_flag once;
  static Shim shim;
  static bool ok = false;
  static std::string failure;
  std::call_once(once, [] {
    std::string tried;
    for (const std::string& path : Candidates()) {
      void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
      if (handle == nullptr) {
        tried += "\n  " + path + ": " + dlerror();
        continue;
      }
      bool all = true;
      auto sym = [&](const char* name) {
        void* s = dlsym(handle, name);
        if (s == nullptr) all = false;
        return s;
      };
      shim.load = reinterpret_cast<decltype(shim.load)>(sym("quest_sp_load"));
      shim.destroy = reinterpret_cast<decltype(shim.destroy)>(sym("quest_sp_delete"));
      shim.encode = reinterpret_cast<decltype(shim.encode)>(sym("quest_sp_encode"));
      shim.free_buffer = reinterpret_cast<decltype(shim.free_buffer)>(sym("quest_sp_free"));
      shim.piece_size = reinterpret_cast<decltype(shim.piece_size)>(sym("quest_sp_piece_size"));
      shim.id_to_piece = reinterpret_cast<decltype(shim.id_to_piece)>(sym("quest_sp_id_to_piece"));
      shim.piece_kind = reinterpret_cast<decltype(shim.piece_kind)>(sym("quest_sp_piece_kind"));
      shim.bos_id = reinterpret_cast<decltype(shim.bos_id)>(sym("quest_sp_bos_id"));
      shim.eos_id = reinterpret_cast<decltype(shim.eos_id)>(sym("quest_sp_eos_id"));
      shim.train = reinterpret_cast<decltype(shim.train)>(sym("quest_sp_train"));
      if (all) {
        ok = true;
        return;
      }
      tried += "\n  " + path + ": missing quest_sp_* symbols";
    }
    failure = std::string("cannot load the SentencePiece shim ") + kShimName +
              " (set QUEST_SENTENCEPIECE_SHIM to its path); tried:" + tried;
  });
  if (!ok) {
    *error = {9 /* FAILED_PRECONDITION */, failure};
    return nullptr;
  }
  return &shim;
}

std::string TakeMessage(const Shim& shim, char* message) {
  std::string out = message != nullptr ? message : "";
  shim.free_buffer(message);
  return out;
}

}  // namespace

struct Processor::Impl {
  const Shim* shim = nullptr;
  void* handle = nullptr;
  // IdToPiece hands out references: materialise the pieces once.
  std::vector<std::string> pieces;
  ~Impl() {
    if (handle != nullptr) shim->destroy(handle);
  }
};

Processor::Processor(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Processor::~Processor() = default;

std::unique_ptr<Processor> Processor::Load(const std::string& model_path, Error* error) {
  const Shim* shim = GetShim(error);
  if (shim == nullptr) return nullptr;
  auto impl = std::make_unique<Impl>();
  impl->shim = shim;
  int code = 0;
  char* message = nullptr;
  impl->handle = shim->load(model_path.c_str(), &code, &message);
  if (impl->handle == nullptr) {
    *error = {code != 0 ? code : 13, TakeMessage(*shim, message)};
    return nullptr;
  }
  const int n = shim->piece_size(impl->handle);
  impl->pieces.reserve(n);
  for (int id = 0; id < n; ++id) {
    size_t len = 0;
    const char* data = shim->id_to_piece(impl->handle, id, &len);
    impl->pieces.emplace_back(data, len);
  }
  *error = {};
  return std::unique_ptr<Processor>(new Processor(std::move(impl)));
}

Error Processor::Encode(std::string_view text, std::vector<int>* ids) const {
  int* buffer = nullptr;
  size_t n = 0;
  char* message = nullptr;
  const int code = impl_->shim->encode(impl_->handle, text.data(), text.size(), &buffer, &n, &message);
  if (code != 0) return {code, TakeMessage(*impl_->shim, message)};
  ids->assign(buffer, buffer + n);
  impl_->shim->free_buffer(buffer);
  return {};
}

int Processor::piece_size() const { return static_cast<int>(impl_->pieces.size()); }
const std::string& Processor::IdToPiece(int id) const { return impl_->pieces[id]; }
bool Processor::IsControl(int id) const { return impl_->shim->piece_kind(impl_->handle, id) & 1; }
bool Processor::IsUnknown(int id) const { return impl_->shim->piece_kind(impl_->handle, id) & 2; }
bool Processor::IsByte(int id) const { return impl_->shim->piece_kind(impl_->handle, id) & 4; }
int Processor::bos_id() const { return impl_->shim->bos_id(impl_->handle); }
int Processor::eos_id() const { return impl_->shim->eos_id(impl_->handle); }

Error Train(const std::string& args) {
  Error error;
  const Shim* shim = GetShim(&error);
  if (shim == nullptr) return error;
  char* message = shim->train(args.c_str());
  if (message == nullptr) return {};
  return {13 /* INTERNAL */, TakeMessage(*shim, message)};
}

}  // namespace sentencepiece_bridge
}  // namespace quest
