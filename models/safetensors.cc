#include "models/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "models/status_macros.h"
#include "nlohmann/json.hpp"

namespace quest::models {
namespace {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; big-endian hosts are unsupported");

using json = nlohmann::json;

std::string Show(const json& value) {
  std::string s = value.dump();
  if (s.size() > 80) s = absl::StrCat(s.substr(0, 77), "...");
  return s;
}

absl::Status Invalid(absl::string_view path, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", what));
}

absl::Status TensorError(absl::string_view path, absl::string_view name, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": tensor \"", name, "\": ", what));
}

absl::Status ErrnoStatus(int err, absl::string_view what) {
  const std::string message = absl::StrCat(what, ": ", std::strerror(err));
  switch (err) {
    case ENOENT:
    case ENOTDIR:
      return absl::NotFoundError(message);
    case EACCES:
    case EPERM:
      return absl::PermissionDeniedError(message);
    default:
      return absl::UnavailableError(message);
  }
}

// Bytes per element of every safetensors dtype (0: unknown name).
size_t SafetensorsDTypeSize(absl::string_view name) {
  static const auto* const kSizes = new absl::flat_hash_map<std::string, size_t>{
      {"BOOL", 1}, {"U8", 1},       {"I8", 1},       {"F8_E5M2", 1}, {"F8_E4M3", 1},
      {"I16", 2},  {"U16", 2},      {"F16", 2},      {"BF16", 2},    {"I32", 4},
      {"U32", 4},  {"F32", 4},      {"F64", 8},      {"I64", 8},     {"U64", 8},
  };
  auto it = kSizes->find(name);
  return it == kSizes->end() ? 0 : it->second;
}

std::optional<DType> QuestDType(absl::string_view name) {
  if (name == "F32") return DType::kFloat32;
  if (name == "F16") return DType::kFloat16;
  if (name == "BF16") return DType::kBFloat16;
  return std::nullopt;
}

// pread() until `size` bytes arrive.
absl::Status ReadAt(int fd, uint64_t offset, void* dst, size_t size, absl::string_view path) {
  char* out = static_cast<char*>(dst);
  while (size > 0) {
    const size_t chunk = std::min<size_t>(size, size_t{1} << 30);
    const ssize_t n = ::pread(fd, out, chunk, static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, absl::StrCat(path, ": read failed at offset ", offset));
    }
    if (n == 0) {
      return absl::DataLossError(
          absl::StrCat(path, ": unexpected end of file at offset ", offset));
    }
    out += n;
    offset += static_cast<uint64_t>(n);
    size -= static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

// Parses one header entry into `entry`.
absl::Status ParseEntry(absl::string_view path, const std::string& name, const json& value,
                        uint64_t data_size, SafetensorsEntry* entry) {
  entry->name = name;
  if (!value.is_object()) {
    return TensorError(path, name, absl::StrCat("header entry must be an object, got ", Show(value)));
  }
  // dtype
  auto dtype_it = value.find("dtype");
  if (dtype_it == value.end()) return TensorError(path, name, "field \"dtype\" is missing");
  if (!dtype_it->is_string()) {
    return TensorError(path, name, absl::StrCat("field \"dtype\" must be a string, got ",
                                                Show(*dtype_it)));
  }
  entry->dtype_name = dtype_it->get<std::string>();
  const size_t element_size = SafetensorsDTypeSize(entry->dtype_name);
  if (element_size == 0) {
    return TensorError(path, name,
                       absl::StrCat("unknown dtype \"", entry->dtype_name, "\""));
  }
  entry->dtype = QuestDType(entry->dtype_name);

  // shape
  auto shape_it = value.find("shape");
  if (shape_it == value.end()) return TensorError(path, name, "field \"shape\" is missing");
  if (!shape_it->is_array()) {
    return TensorError(path, name, absl::StrCat("field \"shape\" must be a list of sizes, got ",
                                                Show(*shape_it)));
  }
  uint64_t numel = 1;
  bool overflow = false;
  for (const json& d : *shape_it) {
    if (!d.is_number_unsigned() && !(d.is_number_integer() && d.get<int64_t>() >= 0)) {
      return TensorError(path, name,
                         absl::StrCat("field \"shape\" must hold non-negative integers, got ",
                                      Show(*shape_it)));
    }
    const uint64_t dim = d.get<uint64_t>();
    if (dim > static_cast<uint64_t>(INT64_MAX)) overflow = true;
    if (__builtin_mul_overflow(numel, dim, &numel)) overflow = true;
    entry->shape.push_back(static_cast<int64_t>(dim));
  }
  uint64_t nbytes = 0;
  if (overflow || __builtin_mul_overflow(numel, element_size, &nbytes)) {
    return TensorError(path, name,
                       absl::StrCat("shape ", Show(*shape_it), " is too large"));
  }

  // data_offsets
  auto off_it = value.find("data_offsets");
  if (off_it == value.end()) return TensorError(path, name, "field \"data_offsets\" is missing");
  if (!off_it->is_array() || off_it->size() != 2 || !(*off_it)[0].is_number_unsigned() ||
      !(*off_it)[1].is_number_unsigned()) {
    return TensorError(path, name,
                       absl::StrCat("field \"data_offsets\" must be [begin, end] with "
                                    "non-negative integers, got ",
                                    Show(*off_it)));
  }
  entry->begin = (*off_it)[0].get<uint64_t>();
  entry->end = (*off_it)[1].get<uint64_t>();
  if (entry->begin > entry->end) {
    return TensorError(path, name,
                       absl::StrCat("data_offsets [", entry->begin, ", ", entry->end,
                                    "] has begin after end"));
  }
  if (entry->end > data_size) {
    return TensorError(path, name,
                       absl::StrCat("data_offsets [", entry->begin, ", ", entry->end,
                                    "] lie outside the data section of ", data_size, " bytes"));
  }
  if (entry->end - entry->begin != nbytes) {
    return TensorError(path, name,
                       absl::StrCat("data_offsets [", entry->begin, ", ", entry->end, "] span ",
                                    entry->end - entry->begin, " bytes but shape ",
                                    Show(*shape_it), " of ", entry->dtype_name, " needs ",
                                    nbytes));
  }
  return absl::OkStatus();
}

}  // namespace

const char* SafetensorsDTypeName(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return "F32";
    case DType::kFloat16: return "F16";
    case DType::kBFloat16: return "BF16";
    case DType::kInt32: return "I32";
    case DType::kFloat8E4M3: return "F8_E4M3";
  }
  return "?";
}

absl::StatusOr<SafetensorsFile> SafetensorsFile::Open(const std::string& path) {
  const int raw_fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (raw_fd < 0) return ErrnoStatus(errno, absl::StrCat(path, ": cannot open safetensors file"));
  SafetensorsFile file;
  file.path_ = path;
  file.fd_ = std::shared_ptr<int>(new int(raw_fd), [](int* fd) {
    ::close(*fd);
    delete fd;
  });

  struct stat st;
  if (::fstat(raw_fd, &st) != 0) return ErrnoStatus(errno, absl::StrCat(path, ": cannot stat"));
  if (!S_ISREG(st.st_mode)) return Invalid(path, "not a regular file");
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  if (file_size < 8) {
    return Invalid(path, absl::StrCat("file of ", file_size,
                                      " bytes is too short for a safetensors header"));
  }
  unsigned char len_bytes[8];
  MODELS_RETURN_IF_ERROR(ReadAt(raw_fd, 0, len_bytes, 8, path));
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | len_bytes[i];
  if (header_len > kMaxSafetensorsHeaderBytes) {
    return Invalid(path, absl::StrCat("header length ", header_len, " exceeds the limit of ",
                                      kMaxSafetensorsHeaderBytes, " bytes (corrupt file?)"));
  }
  if (header_len > file_size - 8) {
    return Invalid(path, absl::StrCat("header length ", header_len, " exceeds the ",
                                      file_size - 8, " bytes that follow it"));
  }
  file.data_start_ = 8 + header_len;
  file.data_size_ = file_size - file.data_start_;

  std::string header(header_len, '\0');
  MODELS_RETURN_IF_ERROR(ReadAt(raw_fd, 8, header.data(), header_len, path));
  // Writers pad the header to an alignment with spaces (or, rarely, NULs).
  while (!header.empty() && (header.back() == '\0' || header.back() == ' ')) header.pop_back();

  json root;
  try {
    root = json::parse(header);
  } catch (const json::exception& e) {
    return Invalid(path, absl::StrCat("malformed JSON header: ", e.what()));
  }
  if (!root.is_object()) {
    return Invalid(path, absl::StrCat("header must be a JSON object, got ", Show(root)));
  }
  try {
    for (const auto& [name, value] : root.items()) {
      if (name == "__metadata__") {
        if (value.is_null()) continue;
        if (!value.is_object()) {
          return Invalid(path, absl::StrCat("\"__metadata__\" must be an object, got ",
                                            Show(value)));
        }
        for (const auto& [key, v] : value.items()) {
          if (!v.is_string()) {
            return Invalid(path, absl::StrCat("\"__metadata__\" field \"", key,
                                              "\" must be a string, got ", Show(v)));
          }
          file.metadata_[key] = v.get<std::string>();
        }
        continue;
      }
      SafetensorsEntry entry;
      MODELS_RETURN_IF_ERROR(ParseEntry(path, name, value, file.data_size_, &entry));
      file.entries_.emplace(name, std::move(entry));
    }
  } catch (const json::exception& e) {
    return Invalid(path, absl::StrCat("bad header: ", e.what()));
  }
  return file;
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> out;
  out.reserve(entries_.size());
  for (const auto& [name, unused] : entries_) out.push_back(name);
  std::sort(out.begin(), out.end());
  return out;
}

const SafetensorsEntry* SafetensorsFile::Find(absl::string_view name) const {
  auto it = entries_.find(name);
  return it == entries_.end() ? nullptr : &it->second;
}

absl::StatusOr<Tensor> SafetensorsFile::Read(absl::string_view name) const {
  const SafetensorsEntry* entry = Find(name);
  if (entry == nullptr) {
    return absl::NotFoundError(absl::StrCat(path_, ": no tensor \"", name, "\""));
  }
  if (!entry->dtype.has_value()) {
    return TensorError(path_, name,
                       absl::StrCat("unsupported dtype \"", entry->dtype_name,
                                    "\" (supported: F32, F16, BF16)"));
  }
  Tensor t = Tensor::Empty(*entry->dtype, entry->shape);
  MODELS_RETURN_IF_ERROR(
      ReadAt(*fd_, data_start_ + entry->begin, t.raw_data(), t.nbytes(),
             absl::StrCat(path_, " (tensor \"", name, "\")")));
  return t;
}

absl::StatusOr<absl::flat_hash_map<std::string, Tensor>> SafetensorsFile::ReadAll() const {
  absl::flat_hash_map<std::string, Tensor> out;
  out.reserve(entries_.size());
  for (const std::string& name : names()) {
    MODELS_ASSIGN_OR_RETURN(Tensor t, Read(name));
    out.emplace(name, std::move(t));
  }
  return out;
}

absl::StatusOr<absl::flat_hash_map<std::string, Tensor>> ReadSafetensors(
    const std::string& path) {
  MODELS_ASSIGN_OR_RETURN(SafetensorsFile file, SafetensorsFile::Open(path));
  return file.ReadAll();
}

absl::Status WriteSafetensors(const std::string& path,
                              const std::vector<std::pair<std::string, Tensor>>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  absl::flat_hash_set<std::string> seen;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    if (name.empty()) return Invalid(path, "cannot write a tensor with an empty name");
    if (name == "__metadata__") {
      return Invalid(path, "cannot write a tensor named \"__metadata__\" (reserved)");
    }
    if (!seen.insert(name).second) {
      return Invalid(path, absl::StrCat("duplicate tensor name \"", name, "\""));
    }
    if (!tensor.defined()) return TensorError(path, name, "tensor is undefined");
    if (tensor.device() != Device::kCpu) return TensorError(path, name, "tensor is not on the CPU");
    const uint64_t nbytes = tensor.nbytes();
    header[name] = {{"dtype", SafetensorsDTypeName(tensor.dtype())},
                    {"shape", tensor.shape()},
                    {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
  }
  if (!metadata.empty()) {
    json meta = json::object();
    for (const auto& [key, value] : metadata) meta[key] = value;
    header["__metadata__"] = std::move(meta);
  }
  std::string header_text;
  try {
    header_text = header.dump();
  } catch (const json::exception& e) {  // e.g. a name that is not UTF-8
    return Invalid(path, absl::StrCat("cannot encode header: ", e.what()));
  }
  // Pad so the data section starts 8-byte aligned, as the reference writer does.
  header_text.append((8 - (8 + header_text.size()) % 8) % 8, ' ');

  const std::string tmp_path = absl::StrCat(path, ".tmp.", ::getpid());
  std::FILE* f = std::fopen(tmp_path.c_str(), "wb");
  if (f == nullptr) return ErrnoStatus(errno, absl::StrCat(path, ": cannot create ", tmp_path));
  auto fail = [&](absl::string_view what) {
    const int err = errno;
    std::fclose(f);
    std::remove(tmp_path.c_str());
    return ErrnoStatus(err == 0 ? EIO : err, absl::StrCat(path, ": ", what));
  };
  unsigned char len_bytes[8];
  uint64_t len = header_text.size();
  for (int i = 0; i < 8; ++i) len_bytes[i] = static_cast<unsigned char>(len >> (8 * i));
  errno = 0;
  if (std::fwrite(len_bytes, 1, 8, f) != 8) return fail("write failed");
  if (std::fwrite(header_text.data(), 1, header_text.size(), f) != header_text.size()) {
    return fail("write failed");
  }
  for (const auto& [name, tensor] : tensors) {
    const size_t nbytes = tensor.nbytes();
    if (nbytes > 0 && std::fwrite(tensor.raw_data(), 1, nbytes, f) != nbytes) {
      return fail(absl::StrCat("write failed for tensor \"", name, "\""));
    }
  }
  if (std::fflush(f) != 0) return fail("write failed");
  if (std::fclose(f) != 0) {
    const int err = errno;
    std::remove(tmp_path.c_str());
    return ErrnoStatus(err, absl::StrCat(path, ": close failed"));
  }
  if (std::rename(tmp_path.c_str(), path.c_str()) != 0) {
    const int err = errno;
    std::remove(tmp_path.c_str());
    return ErrnoStatus(err, absl::StrCat(path, ": cannot rename ", tmp_path, " into place"));
  }
  return absl::OkStatus();
}

}  // namespace quest::models
