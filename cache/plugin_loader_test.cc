#include "cache/plugin_loader.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "cache/cache_policy.h"
#include "cache/plugin_api.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace quest::cache {
namespace {

using ::testing::AllOf;
using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::Not;

std::string Plugin(const std::string& name) {
  return std::string(std::getenv("TEST_SRCDIR")) + "/quest_runtime/cache/testdata/" + name;
}

TEST(PluginLoaderTest, LoadsOnceAndRegistersThePolicy) {
  const std::string path = Plugin("libsliding_window_plugin.so");
  ASSERT_TRUE(LoadCachePolicyPlugin(path).ok()) << LoadCachePolicyPlugin(path);
  EXPECT_THAT(CachePolicyRegistry::Global().Names(), Contains("example_recent_pages"));
  // Again, by the same path and by another path to the same file: no-ops.
  EXPECT_TRUE(LoadCachePolicyPlugin(path).ok());
  const std::string link = std::string(std::getenv("TEST_TMPDIR")) + "/link_to_plugin.so";
  std::filesystem::remove(link);
  std::filesystem::create_symlink(path, link);
  EXPECT_TRUE(LoadCachePolicyPlugin(link).ok());

  // The factory works through the host's types.
  auto factory = CachePolicyRegistry::Global().Find("example_recent_pages");
  ASSERT_TRUE(factory.ok()) << factory.status();
  CacheGeometry geometry{2, 4, 2, 8, 4};
  config::CacheConfig c;
  c.set_policy("example_recent_pages");
  absl::Status missing = (*factory)->Validate(c, geometry);
  EXPECT_EQ(missing.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(missing.message(), HasSubstr("cache.plugin.pages"));
  (*c.mutable_plugin()->mutable_fields())["pages"].set_number_value(0);
  EXPECT_THAT((*factory)->Validate(c, geometry).message(), HasSubstr("cache.plugin.pages must be a positive"));
  (*c.mutable_plugin()->mutable_fields())["pages"].set_number_value(-3);
  EXPECT_EQ((*factory)->Validate(c, geometry).code(), absl::StatusCode::kInvalidArgument);
  (*c.mutable_plugin()->mutable_fields())["pages"].set_string_value("2");
  EXPECT_EQ((*factory)->Validate(c, geometry).code(), absl::StatusCode::kInvalidArgument);
  (*c.mutable_plugin()->mutable_fields())["pages"].set_number_value(2);
  (*c.mutable_plugin()->mutable_fields())["windw"].set_number_value(2);
  EXPECT_THAT((*factory)->Validate(c, geometry).message(), HasSubstr("cache.plugin.windw"));
  c.mutable_plugin()->mutable_fields()->erase("windw");
  ASSERT_TRUE((*factory)->Validate(c, geometry).ok());
  EXPECT_NE((*factory)->Create(c, geometry), nullptr);
}

TEST(PluginLoaderTest, MissingFileIsNotFoundNamingThePath) {
  absl::Status s = LoadCachePolicyPlugin("/nonexistent/libplugin.so");
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), HasSubstr("/nonexistent/libplugin.so"));
  EXPECT_EQ(LoadCachePolicyPlugin("").code(), absl::StatusCode::kInvalidArgument);
}

TEST(PluginLoaderTest, NotASharedLibraryQuotesDlerror) {
  const std::string path = std::string(std::getenv("TEST_TMPDIR")) + "/not_a_library.so";
  { std::ofstream(path) << "hello"; }
  absl::Status s = LoadCachePolicyPlugin(path);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), AllOf(HasSubstr(path), HasSubstr("dlopen failed"), HasSubstr("not_a_library.so:")));
}

TEST(PluginLoaderTest, LibraryWithoutEntryPoint) {
  const std::string path = Plugin("libno_entry_point_plugin.so");
  absl::Status s = LoadCachePolicyPlugin(path);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), AllOf(HasSubstr(path), HasSubstr("quest_cache_plugin_api_version"),
                                 HasSubstr("undefined symbol")));
  // Failed loads are not remembered: the same error again.
  EXPECT_EQ(LoadCachePolicyPlugin(path).code(), absl::StatusCode::kFailedPrecondition);
}

TEST(PluginLoaderTest, WrongApiVersionNamesBothVersions) {
  const std::string path = Plugin("libwrong_version_plugin.so");
  absl::Status s = LoadCachePolicyPlugin(path);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  // The test plugin claims the host's version + 998.
  EXPECT_THAT(s.message(), AllOf(HasSubstr(path), HasSubstr(absl::StrCat("API version ", kCachePluginApiVersion + 998)),
                                 HasSubstr(absl::StrCat("implements version ", kCachePluginApiVersion))));
}

TEST(PluginLoaderTest, DuplicateNameIsAlreadyExistsNamingBoth) {
  const std::string first = Plugin("libsliding_window_plugin.so");
  const std::string second = Plugin("libduplicate_name_plugin.so");
  ASSERT_TRUE(LoadCachePolicyPlugin(first).ok()) << LoadCachePolicyPlugin(first);
  const CachePolicyFactory* before = *CachePolicyRegistry::Global().Find("example_recent_pages");
  absl::Status s = LoadCachePolicyPlugin(second);
  EXPECT_EQ(s.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(s.message(), AllOf(HasSubstr("\"example_recent_pages\""), HasSubstr(second), HasSubstr(first)));
  // The first plugin's policy is untouched.
  auto after = CachePolicyRegistry::Global().Find("example_recent_pages");
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(*after, before);
}

TEST(PluginLoaderTest, StaticInitRegistrationOfATakenNameIsReportedNotFatal) {
  const std::string path = Plugin("libstatic_init_plugin.so");
  const CachePolicyFactory* dense = *CachePolicyRegistry::Global().Find("dense");
  absl::Status s = LoadCachePolicyPlugin(path);
  EXPECT_EQ(s.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(s.message(), HasSubstr("\"dense\" from cache plugin " + path +
                                     " is already registered by a built-in policy"));
  EXPECT_EQ(*CachePolicyRegistry::Global().Find("dense"), dense);
}

TEST(CachePolicyRegistryTest, BuiltinNameTakenIsAlreadyExists) {
  class Dense final : public CachePolicyFactory {
   public:
    absl::string_view name() const override { return "dense"; }
    absl::Status Validate(const config::CacheConfig&, const CacheGeometry&) const override {
      return absl::OkStatus();
    }
    std::unique_ptr<CachePolicy> Create(const config::CacheConfig&, const CacheGeometry&) const override {
      return nullptr;
    }
  };
  absl::Status s = CachePolicyRegistry::Global().Register(std::make_unique<Dense>());
  EXPECT_EQ(s.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(s.message(), HasSubstr("\"dense\""));
  EXPECT_THAT(s.message(), HasSubstr("a built-in policy"));
  EXPECT_THAT(CachePolicyRegistry::Global().Names(), Not(Contains("")));
}

}  // namespace
}  // namespace quest::cache
