#include "models/safetensors.h"

#include <cstdint>
#include <cstring>
#include <fstream>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/tensor.h"

namespace quest::models {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string TempPath(const std::string& name) {
  return absl::StrCat(::testing::TempDir(), "/", name);
}

std::string ReadFileBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Writes [u64 length][header][data] verbatim.
std::string WriteRaw(const std::string& name, const std::string& header, const std::string& data,
                     uint64_t claimed_length = UINT64_MAX) {
  const std::string path = TempPath(name);
  const uint64_t len = claimed_length == UINT64_MAX ? header.size() : claimed_length;
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((len >> (8 * i)) & 0xff);
  bytes += header;
  bytes += data;
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
  return path;
}

std::string Floats(std::vector<float> values) {
  std::string s(values.size() * 4, '\0');
  std::memcpy(s.data(), values.data(), s.size());
  return s;
}

std::vector<float> Values(const Tensor& t) {
  Tensor f = t.ToFloat32();
  return std::vector<float>(f.data<float>(), f.data<float>() + f.numel());
}

Tensor Half(const std::vector<float>& values, std::vector<int64_t> shape, DType dtype) {
  Tensor t = Tensor::Empty(dtype, std::move(shape));
  for (size_t i = 0; i < values.size(); ++i) {
    t.data<uint16_t>()[i] =
        dtype == DType::kFloat16 ? FloatToHalf(values[i]) : FloatToBFloat16(values[i]);
  }
  return t;
}

TEST(SafetensorsTest, RoundTripAllDTypes) {
  const std::string path = TempPath("round_trip.safetensors");
  const std::vector<float> v6 = {1.0f, -2.5f, 0.125f, 3.0f, -0.5f, 65504.0f};
  std::vector<std::pair<std::string, Tensor>> tensors = {
      {"f32", Tensor::FromFloats(v6, {2, 3})},
      {"f16", Half(v6, {3, 2}, DType::kFloat16)},
      {"bf16", Half({1.0f, -2.0f, 0.5f}, {3}, DType::kBFloat16)},
      {"scalar", Tensor::FromFloats({42.0f}, {})},
      {"empty", Tensor::Zeros(DType::kFloat32, {0, 4})},
  };
  ASSERT_TRUE(WriteSafetensors(path, tensors, {{"format", "pt"}}).ok());

  absl::StatusOr<absl::flat_hash_map<std::string, Tensor>> read = ReadSafetensors(path);
  ASSERT_TRUE(read.ok()) << read.status();
  ASSERT_EQ(read->size(), 5u);
  const Tensor& f32 = read->at("f32");
  EXPECT_EQ(f32.dtype(), DType::kFloat32);
  EXPECT_THAT(f32.shape(), ElementsAre(2, 3));
  EXPECT_EQ(Values(f32), v6);
  const Tensor& f16 = read->at("f16");
  EXPECT_EQ(f16.dtype(), DType::kFloat16);
  EXPECT_THAT(f16.shape(), ElementsAre(3, 2));
  EXPECT_EQ(Values(f16), v6);  // all exactly representable in f16
  const Tensor& bf16 = read->at("bf16");
  EXPECT_EQ(bf16.dtype(), DType::kBFloat16);
  EXPECT_EQ(Values(bf16), (std::vector<float>{1.0f, -2.0f, 0.5f}));
  EXPECT_EQ(std::memcmp(bf16.raw_data(), tensors[2].second.raw_data(), 6), 0);
  EXPECT_TRUE(read->at("scalar").shape().empty());
  EXPECT_EQ(Values(read->at("scalar")), std::vector<float>{42.0f});
  EXPECT_THAT(read->at("empty").shape(), ElementsAre(0, 4));

  absl::StatusOr<SafetensorsFile> file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->metadata().at("format"), "pt");
  EXPECT_THAT(file->names(), ElementsAre("bf16", "empty", "f16", "f32", "scalar"));
}

TEST(SafetensorsTest, WrittenLayoutMatchesTheFormat) {
  const std::string path = TempPath("layout.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, {{"a", Tensor::FromFloats({1, 2}, {2})},
                                      {"b", Tensor::FromFloats({3}, {1})}})
                  .ok());
  const std::string bytes = ReadFileBytes(path);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[i]);
  EXPECT_EQ((8 + n) % 8, 0u) << "data section should be 8-byte aligned";
  const std::string header = bytes.substr(8, n);
  EXPECT_THAT(header, HasSubstr(R"("a":{"data_offsets":[0,8],"dtype":"F32","shape":[2]})"));
  EXPECT_THAT(header, HasSubstr(R"("b":{"data_offsets":[8,12],"dtype":"F32","shape":[1]})"));
  EXPECT_EQ(bytes.substr(8 + n), Floats({1, 2, 3}));
}

TEST(SafetensorsTest, ReadsReferenceWriterOutput) {
  // Bytes as Python's safetensors writes them: space padding, metadata first.
  const std::string header =
      R"({"__metadata__":{"format":"pt"},"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}})";
  const std::string path =
      WriteRaw("reference.safetensors", header + std::string((8 - header.size() % 8) % 8, ' '),
               Floats({1, 2, 3, 4}));
  absl::StatusOr<absl::flat_hash_map<std::string, Tensor>> read = ReadSafetensors(path);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(Values(read->at("w")), (std::vector<float>{1, 2, 3, 4}));
}

TEST(SafetensorsTest, LazyReads) {
  const std::string path = TempPath("lazy.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, {{"x", Tensor::FromFloats({1, 2, 3}, {3})},
                                      {"y", Tensor::FromFloats({4, 5}, {2})}})
                  .ok());
  absl::StatusOr<SafetensorsFile> file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->size(), 2u);
  EXPECT_TRUE(file->contains("y"));
  const SafetensorsEntry* y = file->Find("y");
  ASSERT_NE(y, nullptr);
  EXPECT_EQ(y->dtype_name, "F32");
  EXPECT_THAT(y->shape, ElementsAre(2));
  EXPECT_EQ(y->begin, 12u);
  EXPECT_EQ(y->end, 20u);
  absl::StatusOr<Tensor> t = file->Read("y");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(Values(*t), (std::vector<float>{4, 5}));

  absl::StatusOr<Tensor> missing = file->Read("z");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), AllOf(HasSubstr(path), HasSubstr("\"z\"")));
}

TEST(SafetensorsTest, OverlappingTensorsAreAllowed) {
  const std::string path = WriteRaw(
      "overlap.safetensors",
      R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
      Floats({7, 9}));
  absl::StatusOr<absl::flat_hash_map<std::string, Tensor>> read = ReadSafetensors(path);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(Values(read->at("a")), (std::vector<float>{7, 9}));
  EXPECT_EQ(Values(read->at("b")), (std::vector<float>{9}));
}

TEST(SafetensorsTest, MissingFile) {
  const std::string path = TempPath("does_not_exist.safetensors");
  absl::StatusOr<absl::flat_hash_map<std::string, Tensor>> read = ReadSafetensors(path);
  EXPECT_EQ(read.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(read.status().message(), HasSubstr(path));
}

TEST(SafetensorsTest, TooShort) {
  const std::string path = TempPath("short.safetensors");
  std::ofstream(path, std::ios::binary) << "abc";
  absl::Status s = ReadSafetensors(path).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), AllOf(HasSubstr(path), HasSubstr("too short")));
}

TEST(SafetensorsTest, HeaderLongerThanFile) {
  const std::string path = WriteRaw("long_header.safetensors", "{}", "", 1000);
  absl::Status s = ReadSafetensors(path).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), AllOf(HasSubstr(path), HasSubstr("header length 1000")));
}

TEST(SafetensorsTest, AbsurdHeaderLength) {
  const std::string path = WriteRaw("absurd.safetensors", "{}", "", 1ull << 40);
  absl::Status s = ReadSafetensors(path).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), AllOf(HasSubstr(path), HasSubstr("header length"),
                                 HasSubstr("exceeds the limit")));
}

TEST(SafetensorsTest, MalformedJson) {
  const std::string path = WriteRaw("malformed.safetensors", R"({"a": {"dtype": )", "");
  absl::Status s = ReadSafetensors(path).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), AllOf(HasSubstr(path), HasSubstr("malformed JSON")));
}

TEST(SafetensorsTest, HeaderNotAnObject) {
  const std::string path = WriteRaw("array.safetensors", "[1, 2]", "");
  absl::Status s = ReadSafetensors(path).status();
  EXPECT_THAT(s.message(), AllOf(HasSubstr(path), HasSubstr("object")));
}

TEST(SafetensorsTest, UnsupportedDType) {
  const std::string path = WriteRaw(
      "i64.safetensors",
      R"({"ids":{"dtype":"I64","shape":[2],"data_offsets":[0,16]},"w":{"dtype":"F32","shape":[1],"data_offsets":[16,20]}})",
      std::string(16, '\0') + Floats({1}));
  absl::Status s = ReadSafetensors(path).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), AllOf(HasSubstr(path), HasSubstr("\"ids\""), HasSubstr("I64")));

  // The lazy reader still serves the tensors it can hold.
  absl::StatusOr<SafetensorsFile> file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->Find("ids")->dtype_name, "I64");
  EXPECT_FALSE(file->Find("ids")->dtype.has_value());
  EXPECT_TRUE(file->Read("w").ok());
  EXPECT_THAT(file->Read("ids").status().message(), HasSubstr("I64"));
}

TEST(SafetensorsTest, UnknownDType) {
  const std::string path = WriteRaw(
      "q4.safetensors", R"({"w":{"dtype":"Q4_K","shape":[2],"data_offsets":[0,2]}})", "ab");
  absl::Status s = SafetensorsFile::Open(path).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), AllOf(HasSubstr(path), HasSubstr("\"w\""), HasSubstr("Q4_K")));
}

TEST(SafetensorsTest, BadEntries) {
  struct Case {
    const char* entry;
    const char* expect;
  };
  const std::string data = Floats({1, 2, 3, 4});  // 16 bytes
  for (const Case& c : {
           Case{R"({"dtype":"F32","shape":[4],"data_offsets":[0,20]})", "data_offsets [0, 20]"},
           Case{R"({"dtype":"F32","shape":[4],"data_offsets":[8,24]})", "outside the data section"},
           Case{R"({"dtype":"F32","shape":[3],"data_offsets":[0,16]})", "needs 12"},
           Case{R"({"dtype":"F16","shape":[4],"data_offsets":[0,16]})", "needs 8"},
           Case{R"({"dtype":"F32","shape":[1],"data_offsets":[8,4]})", "begin after end"},
           Case{R"({"dtype":"F32","shape":[-4],"data_offsets":[0,16]})", "shape"},
           Case{R"({"dtype":"F32","shape":[2.5],"data_offsets":[0,16]})", "shape"},
           Case{R"({"dtype":"F32","shape":4,"data_offsets":[0,16]})", "shape"},
           Case{R"({"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,16]})",
                "too large"},
           Case{R"({"dtype":"F32","shape":[4],"data_offsets":[0]})", "data_offsets"},
           Case{R"({"dtype":"F32","shape":[4],"data_offsets":[-8,8]})", "data_offsets"},
           Case{R"({"shape":[4],"data_offsets":[0,16]})", "\"dtype\" is missing"},
           Case{R"({"dtype":32,"shape":[4],"data_offsets":[0,16]})", "dtype"},
           Case{R"({"dtype":"F32","data_offsets":[0,16]})", "\"shape\" is missing"},
           Case{R"({"dtype":"F32","shape":[4]})", "\"data_offsets\" is missing"},
           Case{R"([0, 16])", "object"},
       }) {
    const std::string path =
        WriteRaw("bad_entry.safetensors", absl::StrCat(R"({"layer.weight":)", c.entry, "}"), data);
    absl::Status s = ReadSafetensors(path).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.entry;
    EXPECT_THAT(s.message(),
                AllOf(HasSubstr(path), HasSubstr("\"layer.weight\""), HasSubstr(c.expect)))
        << c.entry;
  }
}

TEST(SafetensorsTest, BadMetadata) {
  const std::string path =
      WriteRaw("bad_meta.safetensors", R"({"__metadata__":{"format":1}})", "");
  absl::Status s = ReadSafetensors(path).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), AllOf(HasSubstr(path), HasSubstr("__metadata__"), HasSubstr("format")));
}

TEST(SafetensorsTest, TolerantOfNulPadding) {
  const std::string path = WriteRaw(
      "nul_pad.safetensors",
      std::string(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})") + std::string(3, '\0'),
      Floats({5}));
  absl::StatusOr<absl::flat_hash_map<std::string, Tensor>> read = ReadSafetensors(path);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(Values(read->at("w")), std::vector<float>{5});
}

TEST(SafetensorsTest, EmptyFileOfTensors) {
  const std::string path = TempPath("none.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, {}).ok());
  absl::StatusOr<absl::flat_hash_map<std::string, Tensor>> read = ReadSafetensors(path);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_TRUE(read->empty());
}

TEST(SafetensorsTest, WriteErrors) {
  const std::string path = TempPath("write_errors.safetensors");
  const Tensor t = Tensor::FromFloats({1}, {1});

  absl::Status s = WriteSafetensors(path, {{"a", t}, {"a", t}});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), AllOf(HasSubstr(path), HasSubstr("duplicate"), HasSubstr("\"a\"")));

  s = WriteSafetensors(path, {{"", t}});
  EXPECT_THAT(s.message(), AllOf(HasSubstr(path), HasSubstr("empty name")));

  s = WriteSafetensors(path, {{"__metadata__", t}});
  EXPECT_THAT(s.message(), AllOf(HasSubstr(path), HasSubstr("reserved")));

  s = WriteSafetensors(path, {{"u", Tensor()}});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), AllOf(HasSubstr(path), HasSubstr("\"u\""), HasSubstr("undefined")));

  const std::string bad_dir = TempPath("no/such/dir/x.safetensors");
  s = WriteSafetensors(bad_dir, {{"a", t}});
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(s.message(), HasSubstr(bad_dir));
}

TEST(SafetensorsTest, OverwritesExistingFile) {
  const std::string path = TempPath("overwrite.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, {{"a", Tensor::FromFloats({1, 2, 3, 4}, {4})}}).ok());
  ASSERT_TRUE(WriteSafetensors(path, {{"b", Tensor::FromFloats({5}, {1})}}).ok());
  absl::StatusOr<absl::flat_hash_map<std::string, Tensor>> read = ReadSafetensors(path);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->size(), 1u);
  EXPECT_EQ(Values(read->at("b")), std::vector<float>{5});
}

TEST(SafetensorsTest, SlicedTensorWritesItsRows) {
  const std::string path = TempPath("slice.safetensors");
  Tensor t = Tensor::FromFloats({1, 2, 3, 4, 5, 6}, {3, 2});
  ASSERT_TRUE(WriteSafetensors(path, {{"rows", t.Slice(1, 3)}}).ok());
  absl::StatusOr<absl::flat_hash_map<std::string, Tensor>> read = ReadSafetensors(path);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_THAT(read->at("rows").shape(), ElementsAre(2, 2));
  EXPECT_EQ(Values(read->at("rows")), (std::vector<float>{3, 4, 5, 6}));
}

}  // namespace
}  // namespace quest::models
