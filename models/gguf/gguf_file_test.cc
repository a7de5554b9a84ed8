#include "models/gguf/gguf_file.h"

#include <cmath>
#include <cstdlib>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "models/gguf/gguf_test_writer.h"

namespace quest::models {
namespace {

using ::quest::models::testing::EncodeQ4_0Block;
using ::quest::models::testing::EncodeQ4_1Block;
using ::quest::models::testing::EncodeQ8_0Block;
using ::quest::models::testing::GgufTestWriter;
using ::quest::models::testing::GgufValueBytes;
using ::quest::models::testing::TempPath;
using ::quest::models::testing::WriteFileBytes;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::unique_ptr<GgufFile> OpenOrDie(const GgufTestWriter& w) {
  const std::string path = TempPath("gguf");
  EXPECT_TRUE(w.WriteTo(path).ok());
  absl::StatusOr<std::unique_ptr<GgufFile>> f = GgufFile::Open(path);
  EXPECT_TRUE(f.ok()) << f.status();
  return f.ok() ? *std::move(f) : nullptr;
}

absl::Status OpenStatus(absl::string_view bytes, std::string* path_out = nullptr) {
  const std::string path = TempPath("gguf");
  EXPECT_TRUE(WriteFileBytes(path, bytes).ok());
  if (path_out != nullptr) *path_out = path;
  return GgufFile::Open(path).status();
}

std::vector<float> Values(const Tensor& t) {
  return std::vector<float>(t.data<float>(), t.data<float>() + t.numel());
}

// A small valid file: a few keys and two tensors.
GgufTestWriter SmallValidWriter() {
  GgufTestWriter w;
  w.AddString("general.architecture", "llama");
  w.AddUint32("llama.block_count", 2);
  w.AddStringArray("tokenizer.ggml.tokens", {"a", "bb", "ccc"});
  w.AddF32Tensor("a", {4, 2}, {1, 2, 3, 4, 5, 6, 7, 8});
  w.AddF32Tensor("b", {3}, {9, 10, 11});
  return w;
}

TEST(GgufFileTest, ReadsMetadataOfEveryType) {
  GgufTestWriter w;
  using B = GgufValueBytes;
  using T = GgufValueType;
  w.AddRaw("u8", T::kUint8, B::U8(200));
  w.AddRaw("i8", T::kInt8, B::I8(-100));
  w.AddRaw("u16", T::kUint16, B::U16(60000));
  w.AddRaw("i16", T::kInt16, B::I16(-30000));
  w.AddRaw("u32", T::kUint32, B::U32(4000000000u));
  w.AddRaw("i32", T::kInt32, B::I32(-2000000000));
  w.AddRaw("u64", T::kUint64, B::U64(uint64_t{1} << 40));
  w.AddRaw("u64_huge", T::kUint64, B::U64(std::numeric_limits<uint64_t>::max()));
  w.AddRaw("i64", T::kInt64, B::I64(-(int64_t{1} << 50)));
  w.AddRaw("f32", T::kFloat32, B::F32(0.25f));
  w.AddRaw("f64", T::kFloat64, B::F64(1e-300));
  w.AddRaw("bool_t", T::kBool, B::Bool(true));
  w.AddRaw("bool_f", T::kBool, B::Bool(false));
  w.AddRaw("str", T::kString, B::Str("héllo"));
  w.AddRaw("empty_str", T::kString, B::Str(""));
  w.AddRaw("arr_i32", T::kArray, B::Array(T::kInt32, {B::I32(-1), B::I32(2), B::I32(3)}));
  w.AddRaw("arr_u8", T::kArray, B::Array(T::kUint8, {B::U8(7), B::U8(255)}));
  w.AddRaw("arr_f32", T::kArray, B::Array(T::kFloat32, {B::F32(0.5f), B::F32(-2.0f)}));
  w.AddRaw("arr_f64", T::kArray, B::Array(T::kFloat64, {B::F64(3.5)}));
  w.AddRaw("arr_str", T::kArray, B::Array(T::kString, {B::Str("x"), B::Str(""), B::Str("zz")}));
  w.AddRaw("arr_bool", T::kArray, B::Array(T::kBool, {B::Bool(true), B::Bool(false)}));
  w.AddRaw("arr_empty", T::kArray, B::Array(T::kInt64, {}));
  w.AddRaw("arr_nested", T::kArray,
           B::Array(T::kArray, {B::Array(T::kInt16, {B::I16(1), B::I16(-2)}),
                                B::Array(T::kString, {B::Str("deep")})}));
  std::unique_ptr<GgufFile> f = OpenOrDie(w);
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->version(), 3u);
  EXPECT_EQ(f->keys().size(), 23u);
  EXPECT_EQ(f->keys()[0], "u8");

  EXPECT_EQ(*f->GetInt("u8"), 200);
  EXPECT_EQ(*f->GetInt("i8"), -100);
  EXPECT_EQ(*f->GetInt("u16"), 60000);
  EXPECT_EQ(*f->GetInt("i16"), -30000);
  EXPECT_EQ(*f->GetInt("u32"), 4000000000LL);
  EXPECT_EQ(*f->GetInt("i32"), -2000000000);
  EXPECT_EQ(*f->GetInt("u64"), int64_t{1} << 40);
  EXPECT_EQ(*f->GetInt("i64"), -(int64_t{1} << 50));
  EXPECT_EQ(f->Find("u64_huge")->uint_value, std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(f->GetInt("u64_huge").status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_DOUBLE_EQ(*f->GetFloat("f32"), 0.25);
  EXPECT_DOUBLE_EQ(*f->GetFloat("f64"), 1e-300);
  EXPECT_DOUBLE_EQ(*f->GetFloat("i32"), -2000000000.0);  // integers widen to float
  EXPECT_TRUE(*f->GetBool("bool_t"));
  EXPECT_FALSE(*f->GetBool("bool_f"));
  EXPECT_EQ(*f->GetString("str"), "héllo");
  EXPECT_EQ(*f->GetString("empty_str"), "");
  EXPECT_THAT(*f->GetIntArray("arr_i32"), ElementsAre(-1, 2, 3));
  EXPECT_THAT(*f->GetIntArray("arr_u8"), ElementsAre(7, 255));
  EXPECT_THAT(*f->GetFloatArray("arr_f32"), ElementsAre(0.5, -2.0));
  EXPECT_THAT(*f->GetFloatArray("arr_f64"), ElementsAre(3.5));
  EXPECT_THAT(*f->GetFloatArray("arr_i32"), ElementsAre(-1.0, 2.0, 3.0));
  EXPECT_THAT(*f->GetStringArray("arr_str"), ElementsAre("x", "", "zz"));
  EXPECT_TRUE(f->GetIntArray("arr_empty")->empty());
  EXPECT_EQ(*f->GetArrayLength("arr_str"), 3);
  const GgufValue* b = f->Find("arr_bool");
  ASSERT_NE(b, nullptr);
  ASSERT_EQ(b->array.size(), 2u);
  EXPECT_TRUE(b->array[0].bool_value);
  EXPECT_FALSE(b->array[1].bool_value);

  const GgufValue* nested = f->Find("arr_nested");
  ASSERT_NE(nested, nullptr);
  EXPECT_EQ(nested->type, GgufValueType::kArray);
  EXPECT_EQ(nested->array_type, GgufValueType::kArray);
  ASSERT_EQ(nested->array.size(), 2u);
  EXPECT_EQ(nested->array[0].array_type, GgufValueType::kInt16);
  ASSERT_EQ(nested->array[0].array.size(), 2u);
  EXPECT_EQ(nested->array[0].array[1].int_value, -2);
  EXPECT_EQ(nested->array[1].array[0].string_value, "deep");

  EXPECT_TRUE(f->Has("str"));
  EXPECT_FALSE(f->Has("nope"));
  EXPECT_EQ(f->Find("nope"), nullptr);
}

TEST(GgufFileTest, TypedGettersReportMissingKeysAndWrongTypes) {
  GgufTestWriter w;
  w.AddString("name", "x");
  w.AddUint32("count", 3);
  w.AddStringArray("list", {"a"});
  std::unique_ptr<GgufFile> f = OpenOrDie(w);
  ASSERT_NE(f, nullptr);

  absl::Status s = f->GetInt("missing").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), HasSubstr("'missing'"));
  EXPECT_THAT(s.message(), HasSubstr(f->path()));

  s = f->GetInt("name").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("'name' is string, expected an integer"));
  EXPECT_THAT(f->GetString("count").status().message(), HasSubstr("'count' is uint32"));
  EXPECT_THAT(f->GetBool("count").status().message(), HasSubstr("expected a bool"));
  EXPECT_THAT(f->GetFloat("name").status().message(), HasSubstr("expected a number"));
  EXPECT_THAT(f->GetIntArray("list").status().message(),
              HasSubstr("'list' is array of string, expected an array of integers"));
  EXPECT_THAT(f->GetStringArray("count").status().message(), HasSubstr("expected an array"));
  EXPECT_THAT(f->GetFloatArray("list").status().message(), HasSubstr("expected an array"));
}

TEST(GgufFileTest, TensorInfosShapesAndAlignment) {
  GgufTestWriter w = SmallValidWriter();
  std::unique_ptr<GgufFile> f = OpenOrDie(w);
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(f->tensors().size(), 2u);
  const GgufTensorInfo& a = f->tensors()[0];
  EXPECT_EQ(a.name, "a");
  EXPECT_THAT(a.ne, ElementsAre(4, 2));
  EXPECT_THAT(a.shape(), ElementsAre(2, 4));
  EXPECT_EQ(a.type, GgmlType::kF32);
  EXPECT_EQ(a.nbytes, 32u);
  EXPECT_EQ(f->tensors()[1].offset, 32u);
  EXPECT_EQ(f->alignment(), 32u);
  EXPECT_EQ(f->data_offset() % 32, 0u);
  EXPECT_EQ(f->FindTensor("zzz"), nullptr);
  EXPECT_EQ(f->TensorBytes("b")->size(), 12u);

  absl::StatusOr<Tensor> t = f->ReadTensorFloat32("a");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_THAT(t->shape(), ElementsAre(2, 4));
  EXPECT_EQ(t->dtype(), DType::kFloat32);
  EXPECT_THAT(Values(*t), ElementsAre(1, 2, 3, 4, 5, 6, 7, 8));
  EXPECT_EQ(f->ReadTensorFloat32("zzz").status().code(), absl::StatusCode::kNotFound);
}

TEST(GgufFileTest, HonoursGeneralAlignment) {
  GgufTestWriter w;
  w.set_alignment(64);
  w.AddUint32("general.alignment", 64);
  w.AddF32Tensor("x", {3}, {1, 2, 3});
  w.AddF32Tensor("y", {2}, {4, 5});
  std::unique_ptr<GgufFile> f = OpenOrDie(w);
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->alignment(), 64u);
  EXPECT_EQ(f->data_offset() % 64, 0u);
  EXPECT_EQ(f->tensors()[1].offset, 64u);
  EXPECT_THAT(Values(*f->ReadTensorFloat32("y")), ElementsAre(4, 5));

  GgufTestWriter bad;
  bad.AddUint32("general.alignment", 48);
  std::string path;
  absl::Status s = OpenStatus(bad.Build(), &path);
  EXPECT_THAT(s.message(), HasSubstr("'general.alignment' is 48"));
  EXPECT_THAT(s.message(), HasSubstr(path));
}

TEST(GgufFileTest, DequantizesF16AndBF16) {
  GgufTestWriter w;
  const std::vector<float> vals = {1.0f, -2.5f, 0.0f, 65504.0f, 6.103515625e-05f, -0.1875f};
  std::string f16, bf16;
  for (float v : vals) {
    const uint16_t h = FloatToHalf(v), b = FloatToBFloat16(v);
    f16.append(reinterpret_cast<const char*>(&h), 2);
    bf16.append(reinterpret_cast<const char*>(&b), 2);
  }
  w.AddTensor("h", {3, 2}, GgmlType::kF16, f16);
  w.AddTensor("b", {6}, GgmlType::kBF16, bf16);
  std::unique_ptr<GgufFile> f = OpenOrDie(w);
  ASSERT_NE(f, nullptr);
  absl::StatusOr<Tensor> h = f->ReadTensorFloat32("h");
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_THAT(h->shape(), ElementsAre(2, 3));
  EXPECT_THAT(Values(*h), ElementsAre(1.0f, -2.5f, 0.0f, 65504.0f, 6.103515625e-05f, -0.1875f));
  absl::StatusOr<Tensor> b = f->ReadTensorFloat32("b");
  ASSERT_TRUE(b.ok()) << b.status();
  // bf16 keeps 8 mantissa bits: 65504 rounds to 65536.
  EXPECT_THAT(Values(*b), ElementsAre(1.0f, -2.5f, 0.0f, 65536.0f, 6.103515625e-05f, -0.1875f));
}

TEST(GgufFileTest, DequantizesQ8_0) {
  std::vector<int8_t> q0(32), q1(32);
  for (int j = 0; j < 32; ++j) {
    q0[j] = static_cast<int8_t>(j - 16);
    q1[j] = static_cast<int8_t>(j % 2 == 0 ? 127 : -128);
  }
  GgufTestWriter w;
  // Two rows of one block each: d = 0.5 and d = -0.25 (exact in fp16).
  w.AddTensor("q", {32, 2}, GgmlType::kQ8_0,
              EncodeQ8_0Block(0.5f, q0) + EncodeQ8_0Block(-0.25f, q1));
  std::unique_ptr<GgufFile> f = OpenOrDie(w);
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->tensors()[0].nbytes, 68u);
  absl::StatusOr<Tensor> t = f->ReadTensorFloat32("q");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_THAT(t->shape(), ElementsAre(2, 32));
  const float* v = t->data<float>();
  EXPECT_EQ(v[0], -8.0f);     // (0 - 16) * 0.5
  EXPECT_EQ(v[16], 0.0f);     // (16 - 16) * 0.5
  EXPECT_EQ(v[31], 7.5f);     // (31 - 16) * 0.5
  EXPECT_EQ(v[32], -31.75f);  // 127 * -0.25
  EXPECT_EQ(v[33], 32.0f);    // -128 * -0.25
  EXPECT_EQ(v[63], 32.0f);
}

TEST(GgufFileTest, DequantizesQ4_0) {
  std::vector<uint8_t> nib(32);
  for (int j = 0; j < 32; ++j) nib[j] = static_cast<uint8_t>(j % 16);
  GgufTestWriter w;
  w.AddTensor("q", {32}, GgmlType::kQ4_0, EncodeQ4_0Block(2.0f, nib));
  std::unique_ptr<GgufFile> f = OpenOrDie(w);
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->tensors()[0].nbytes, 18u);
  // Byte 0 of the quants is 0x00 (elements 0 and 16), byte 1 is 0x11.
  EXPECT_EQ(static_cast<uint8_t>((*f->TensorBytes("q"))[3]), 0x11);
  absl::StatusOr<Tensor> t = f->ReadTensorFloat32("q");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_THAT(t->shape(), ElementsAre(32));
  const float* v = t->data<float>();
  EXPECT_EQ(v[0], -16.0f);   // (0 - 8) * 2
  EXPECT_EQ(v[8], 0.0f);     // (8 - 8) * 2
  EXPECT_EQ(v[15], 14.0f);   // (15 - 8) * 2
  EXPECT_EQ(v[16], -16.0f);  // high nibble of byte 0
  EXPECT_EQ(v[31], 14.0f);
}

TEST(GgufFileTest, DequantizesQ4_1WithNibbleOrder) {
  // Distinct low and high nibbles so a swapped order would show.
  std::vector<uint8_t> nib(32);
  for (int j = 0; j < 16; ++j) {
    nib[j] = static_cast<uint8_t>(j);            // low nibbles: elements 0..15
    nib[j + 16] = static_cast<uint8_t>(15 - j);  // high nibbles: elements 16..31
  }
  GgufTestWriter w;
  // ne = [64, 2]: two rows of two blocks each.
  std::string data;
  data += EncodeQ4_1Block(0.5f, -1.0f, nib);
  data += EncodeQ4_1Block(1.0f, 0.0f, nib);
  data += EncodeQ4_1Block(0.25f, 3.0f, nib);
  data += EncodeQ4_1Block(-2.0f, 0.125f, nib);
  w.AddTensor("q", {64, 2}, GgmlType::kQ4_1, data);
  std::unique_ptr<GgufFile> f = OpenOrDie(w);
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->tensors()[0].nbytes, 80u);
  // Quant byte 0 holds element 0 (low, 0) and element 16 (high, 15): 0xf0.
  EXPECT_EQ(static_cast<uint8_t>((*f->TensorBytes("q"))[4]), 0xf0);
  absl::StatusOr<Tensor> t = f->ReadTensorFloat32("q");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_THAT(t->shape(), ElementsAre(2, 64));
  const float* v = t->data<float>();
  EXPECT_EQ(v[0], -1.0f);                // 0 * 0.5 - 1
  EXPECT_EQ(v[5], 1.5f);                 // 5 * 0.5 - 1
  EXPECT_EQ(v[15], 6.5f);                // 15 * 0.5 - 1
  EXPECT_EQ(v[16], 6.5f);                // 15 * 0.5 - 1
  EXPECT_EQ(v[31], -1.0f);               // 0 * 0.5 - 1
  EXPECT_EQ(v[32 + 3], 3.0f);            // 3 * 1 + 0
  EXPECT_EQ(v[64 + 4], 4.0f);            // row 1: 4 * 0.25 + 3
  EXPECT_EQ(v[64 + 32 + 1], -1.875f);    // 1 * -2 + 0.125
  EXPECT_EQ(v[64 + 32 + 17], -27.875f);  // 14 * -2 + 0.125
}

TEST(GgufFileTest, LargeTensorsDequantizeTheSameOnManyThreads) {
  // 2^21 elements: over the threshold for the parallel path.
  const int64_t blocks = (int64_t{1} << 21) / 32;
  std::string data;
  data.reserve(blocks * 34);
  std::vector<int8_t> q(32);
  for (int64_t b = 0; b < blocks; ++b) {
    for (int j = 0; j < 32; ++j) q[j] = static_cast<int8_t>((b * 7 + j) % 255 - 127);
    data += EncodeQ8_0Block(static_cast<float>(b % 5 + 1) * 0.125f, q);
  }
  GgufTestWriter w;
  w.AddTensor("big", {1024, static_cast<uint64_t>(blocks * 32 / 1024)}, GgmlType::kQ8_0, data);
  std::unique_ptr<GgufFile> f = OpenOrDie(w);
  ASSERT_NE(f, nullptr);
  absl::StatusOr<Tensor> t = f->ReadTensorFloat32("big");
  ASSERT_TRUE(t.ok()) << t.status();
  const float* v = t->data<float>();
  int64_t mismatches = 0;
  for (int64_t b = 0; b < blocks; ++b) {
    for (int j = 0; j < 32; ++j) {
      const float want =
          static_cast<float>((b * 7 + j) % 255 - 127) * (static_cast<float>(b % 5 + 1) * 0.125f);
      mismatches += v[b * 32 + j] != want;
    }
  }
  EXPECT_EQ(mismatches, 0);
}

TEST(GgufFileTest, UnsupportedTensorTypeIsUnimplemented) {
  GgufTestWriter w;
  w.AddTensor("blk.0.ffn_down.weight", {256}, GgmlType::kIQ2_XXS, std::string(66, '\0'));
  std::unique_ptr<GgufFile> f = OpenOrDie(w);
  ASSERT_NE(f, nullptr);
  absl::Status s = f->ReadTensorFloat32("blk.0.ffn_down.weight").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(s.message(), HasSubstr("IQ2_XXS"));
  EXPECT_THAT(s.message(), HasSubstr("'blk.0.ffn_down.weight'"));
  EXPECT_THAT(s.message(), HasSubstr("supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K"));
}

// Q5_0, Q5_1, the K-quants and IQ4_NL/XS against llama.cpp's own decoder:
// gguf-py's gguf.quants.dequantize over random blocks (their fp16 scales
// finite, of either sign), written with its expected values by
// tools/reference/gguf_quant_reference.py into testdata/quant_blocks.gguf.
// The float operations are the same in the same order, so the values are
// equal, not just close.
TEST(GgufFileTest, DequantizesLikeLlamaCppsGgufPy) {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  ASSERT_NE(srcdir, nullptr);
  absl::StatusOr<std::unique_ptr<GgufFile>> f =
      GgufFile::Open(absl::StrCat(srcdir, "/quest_runtime/models/gguf/testdata/quant_blocks.gguf"));
  ASSERT_TRUE(f.ok()) << f.status();
  for (const char* type : {"q5_0", "q5_1", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "iq4_nl", "iq4_xs"}) {
    absl::StatusOr<Tensor> got = (*f)->ReadTensorFloat32(type);
    absl::StatusOr<Tensor> want = (*f)->ReadTensorFloat32(absl::StrCat(type, ".want"));
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_TRUE(want.ok()) << want.status();
    ASSERT_EQ(got->numel(), want->numel()) << type;
    ASSERT_GE(got->numel(), 96) << type;  // 3 blocks
    int mismatches = 0;
    for (int64_t i = 0; i < got->numel(); ++i) {
      const float g = got->data<float>()[i], w = want->data<float>()[i];
      if (g != w && mismatches++ < 5) ADD_FAILURE() << type << "[" << i << "]: " << g << " vs " << w;
    }
    EXPECT_EQ(mismatches, 0) << type;
  }
}

// ---- malformed files ------------------------------------------------------

TEST(GgufFileTest, MissingFileIsNotFound) {
  absl::Status s = GgufFile::Open("/nonexistent/dir/model.gguf").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), HasSubstr("/nonexistent/dir/model.gguf"));
}

TEST(GgufFileTest, BadMagic) {
  GgufTestWriter w = SmallValidWriter();
  w.set_magic("GGML");
  std::string path;
  absl::Status s = OpenStatus(w.Build(), &path);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("bad magic \"GGML\""));
  EXPECT_THAT(s.message(), HasSubstr(path));
  EXPECT_THAT(OpenStatus("").message(), HasSubstr("truncated file"));
  EXPECT_THAT(OpenStatus("\x89PNG\r\n").message(), HasSubstr("bad magic \"\\x89PNG\""));
}

TEST(GgufFileTest, UnsupportedVersions) {
  for (uint32_t version : {1u, 4u, 0x03000000u}) {
    GgufTestWriter w = SmallValidWriter();
    w.set_version(version);
    absl::Status s = OpenStatus(w.Build());
    EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented) << version;
    if (version == 0x03000000u) {
      EXPECT_THAT(s.message(), HasSubstr("big-endian"));
    } else {
      EXPECT_THAT(s.message(), HasSubstr(absl::StrCat("unsupported GGUF version ", version)));
    }
  }
  GgufTestWriter v2 = SmallValidWriter();
  v2.set_version(2);
  EXPECT_TRUE(OpenStatus(v2.Build()).ok());
}

TEST(GgufFileTest, EveryTruncationOfTheHeaderIsAnError) {
  GgufTestWriter w = SmallValidWriter();
  const std::string bytes = w.Build();
  std::unique_ptr<GgufFile> full = OpenOrDie(w);
  ASSERT_NE(full, nullptr);
  // Every prefix shorter than the data section's end must fail cleanly.
  for (size_t n = 0; n < bytes.size(); ++n) {
    absl::Status s = OpenStatus(absl::string_view(bytes).substr(0, n));
    ASSERT_FALSE(s.ok()) << "prefix of " << n << " bytes";
    ASSERT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << n << ": " << s;
    if (n < full->data_offset() - 31) {  // inside the header proper
      EXPECT_THAT(s.message(), ::testing::AnyOf(HasSubstr("truncated"), HasSubstr("absurd")))
          << n << ": " << s;
    }
  }
  // A cut in the middle of the tensor infos names the tensor.
  absl::Status s = OpenStatus(absl::string_view(bytes).substr(0, full->data_offset() - 40));
  EXPECT_THAT(s.message(), HasSubstr("truncated file"));
  EXPECT_THAT(s.message(), HasSubstr("tensor"));
}

TEST(GgufFileTest, TruncatedTensorData) {
  GgufTestWriter w = SmallValidWriter();
  std::string bytes = w.Build();
  bytes.resize(bytes.size() - 4);  // tensor 'b' loses its last element
  absl::Status s = OpenStatus(bytes);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("truncated tensor data"));
  EXPECT_THAT(s.message(), HasSubstr("tensor 'b'"));
  EXPECT_THAT(s.message(), HasSubstr("ends 4 bytes past the end of the file"));
}

TEST(GgufFileTest, OffsetOutOfRange) {
  GgufTestWriter w = SmallValidWriter();
  w.OverrideOffset(1, 1 << 20);
  absl::Status s = OpenStatus(w.Build());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("tensor 'b' data offset 1048576 is out of range"));

  GgufTestWriter huge = SmallValidWriter();
  huge.OverrideOffset(0, std::numeric_limits<uint64_t>::max() - 31);  // aligned, overflows
  EXPECT_THAT(OpenStatus(huge.Build()).message(), HasSubstr("tensor 'a' data offset"));

  GgufTestWriter misaligned = SmallValidWriter();
  misaligned.OverrideOffset(1, 36);
  EXPECT_THAT(OpenStatus(misaligned.Build()).message(),
              HasSubstr("tensor 'b' data offset 36 is not a multiple of the alignment 32"));
}

TEST(GgufFileTest, UnknownTensorType) {
  for (uint32_t type : {4u, 31u, 1000u}) {
    GgufTestWriter w = SmallValidWriter();
    w.OverrideType(0, type);
    absl::Status s = OpenStatus(w.Build());
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(s.message(),
                HasSubstr(absl::StrCat("tensor 'a' has unknown ggml tensor type ", type)));
  }
}

TEST(GgufFileTest, BlockSizeMismatch) {
  GgufTestWriter w;
  w.AddTensor("q", {16}, GgmlType::kQ8_0, std::string(34, '\0'));
  EXPECT_THAT(OpenStatus(w.Build()).message(),
              HasSubstr("tensor 'q': ne[0] = 16 is not a multiple of the Q8_0 block size 32"));
}

TEST(GgufFileTest, BadDimensions) {
  GgufTestWriter five;
  five.AddTensor("x", {1, 1, 1, 1, 1}, GgmlType::kF32, std::string(4, '\0'));
  EXPECT_THAT(OpenStatus(five.Build()).message(), HasSubstr("tensor 'x' has 5 dimensions"));
  GgufTestWriter zero;
  zero.AddTensor("x", {}, GgmlType::kF32, "");
  EXPECT_THAT(OpenStatus(zero.Build()).message(), HasSubstr("tensor 'x' has 0 dimensions"));
  GgufTestWriter huge;
  huge.AddTensor("x", {uint64_t{1} << 40, uint64_t{1} << 40}, GgmlType::kF32, "");
  EXPECT_THAT(OpenStatus(huge.Build()).message(), HasSubstr("tensor 'x': absurd dimension ne[1]"));
}

TEST(GgufFileTest, AbsurdCountsAndLengths) {
  using B = GgufValueBytes;
  using T = GgufValueType;
  // Header claiming 2^40 tensors.
  std::string bytes = "GGUF" + B::U32(3) + B::U64(uint64_t{1} << 40) + B::U64(0);
  EXPECT_THAT(OpenStatus(bytes).message(), HasSubstr("absurd tensor count 1099511627776"));
  bytes = "GGUF" + B::U32(3) + B::U64(0) + B::U64(uint64_t{1} << 62);
  EXPECT_THAT(OpenStatus(bytes).message(), HasSubstr("absurd metadata key/value count"));

  // A string claiming 2^63 bytes.
  GgufTestWriter str;
  str.AddRaw("general.name", T::kString, B::U64(uint64_t{1} << 63) + "abc");
  absl::Status s = OpenStatus(str.Build());
  EXPECT_THAT(s.message(), HasSubstr("absurd string length"));
  EXPECT_THAT(s.message(), HasSubstr("metadata key 'general.name'"));

  // An array claiming 2^61 int32 elements.
  GgufTestWriter arr;
  arr.AddRaw("tokenizer.ggml.token_type", T::kArray,
             B::U32(static_cast<uint32_t>(T::kInt32)) + B::U64(uint64_t{1} << 61) + B::I32(1));
  s = OpenStatus(arr.Build());
  EXPECT_THAT(s.message(), HasSubstr("absurd array length 2305843009213693952 of int32"));
  EXPECT_THAT(s.message(), HasSubstr("'tokenizer.ggml.token_type'"));
}

TEST(GgufFileTest, MalformedMetadata) {
  using B = GgufValueBytes;
  using T = GgufValueType;
  GgufTestWriter unknown;
  unknown.AddRaw("k", static_cast<T>(13), B::U32(0));
  EXPECT_THAT(OpenStatus(unknown.Build()).message(),
              HasSubstr("metadata key 'k': unknown value type 13"));

  GgufTestWriter unknown_elem;
  unknown_elem.AddRaw("k", T::kArray, B::U32(99) + B::U64(0));
  EXPECT_THAT(OpenStatus(unknown_elem.Build()).message(),
              HasSubstr("metadata key 'k': unknown array element type 99"));

  GgufTestWriter dup;
  dup.AddUint32("k", 1);
  dup.AddUint32("k", 2);
  EXPECT_THAT(OpenStatus(dup.Build()).message(), HasSubstr("duplicate metadata key 'k'"));

  GgufTestWriter dup_tensor;
  dup_tensor.AddF32Tensor("t", {1}, {1});
  dup_tensor.AddF32Tensor("t", {1}, {2});
  EXPECT_THAT(OpenStatus(dup_tensor.Build()).message(), HasSubstr("duplicate tensor 't'"));

  GgufTestWriter bad_bool;
  bad_bool.AddRaw("flag", T::kBool, B::U8(7));
  EXPECT_THAT(OpenStatus(bad_bool.Build()).message(),
              HasSubstr("metadata key 'flag': bool value 7"));

  // Arrays of arrays nested 100 deep.
  std::string v = B::Array(T::kUint8, {});
  for (int i = 0; i < 100; ++i) v = B::Array(T::kArray, {v});
  GgufTestWriter deep;
  deep.AddRaw("deep", T::kArray, v);
  EXPECT_THAT(OpenStatus(deep.Build()).message(), HasSubstr("nested more than 8 deep"));
}

TEST(GgufFileTest, GarbageNeverCrashes) {
  // Flip bytes of a valid file one at a time; every outcome must be a status.
  const std::string bytes = SmallValidWriter().Build();
  for (size_t i = 0; i < bytes.size(); ++i) {
    for (uint8_t x : {0xffu, 0x80u, 0x01u}) {
      std::string b = bytes;
      b[i] = static_cast<char>(b[i] ^ x);
      std::string path;
      absl::Status s = OpenStatus(b, &path);
      if (!s.ok()) {
        EXPECT_THAT(s.message(), HasSubstr(path));
      }
    }
  }
}

}  // namespace
}  // namespace quest::models
