// Text in, text out over gRPC with the embedded default model
// (SmolLM2-135M-Instruct, GGUF with its tokenizer): Tokenize agrees with the
// prompt the engine prefills, stream deltas add up to the final text, and a
// stop string ends a stream with finish_reason STOP.

#include <cstdlib>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "proto/generation.grpc.pb.h"
#include "runtime/engine.h"
#include "service/server.h"

namespace quest::service {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

class TextServiceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    config::EngineConfig c;
    c.mutable_model()->set_path(std::string(std::getenv("TEST_SRCDIR")) +
                                "/default_model/SmolLM2-135M-Instruct.Q4_1.gguf");
    c.mutable_limits()->set_max_concurrent_requests(1);
    c.mutable_limits()->set_max_context_tokens(1024);
    auto engine = Engine::Create(c);
    ASSERT_TRUE(engine.ok()) << engine.status() << " (run tools/setup.sh to fetch the default model)";
    engine_ = engine->release();
    ServerOptions options;
    options.listen = "127.0.0.1:0";
    auto server = GenerationServer::Start(*engine_, options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = server->release();
  }
  static void TearDownTestSuite() {
    delete server_;
    delete engine_;
  }
  void SetUp() override {
    ASSERT_NE(server_, nullptr);
    stub_ = api::Generation::NewStub(
        grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->port()), grpc::InsecureChannelCredentials()));
  }

  struct Streamed {
    std::string text;  // the deltas, concatenated
    std::vector<int32_t> ids;
    api::GenerateResponse final;
    grpc::Status status;
  };
  Streamed Stream(const api::GenerateRequest& r) {
    grpc::ClientContext context;
    auto reader = stub_->GenerateStream(&context, r);
    Streamed s;
    api::GenerateStreamResponse m;
    while (reader->Read(&m)) {
      if (m.has_token()) {
        s.text += m.token().text();
        s.ids.push_back(m.token().id());
      }
      if (m.has_final()) s.final = m.final();
    }
    s.status = reader->Finish();
    return s;
  }

  static Engine* engine_;
  static GenerationServer* server_;
  std::unique_ptr<api::Generation::Stub> stub_;
};
Engine* TextServiceTest::engine_ = nullptr;
GenerationServer* TextServiceTest::server_ = nullptr;

TEST_F(TextServiceTest, TextPromptStreamsDeltasThatAddUpToTheFinalText) {
  grpc::ClientContext info_context;
  api::GetModelInfoResponse info;
  ASSERT_TRUE(stub_->GetModelInfo(&info_context, api::GetModelInfoRequest(), &info).ok());
  EXPECT_TRUE(info.has_tokenizer());
  EXPECT_THAT(info.chat_template(), HasSubstr("<|im_start|>"));

  api::GenerateRequest r;
  r.set_text(ApplyChatTemplate(engine_->model_info(), "What is the capital of France?"));
  r.mutable_sampling()->set_max_tokens(24);

  grpc::ClientContext tokenize_context;
  api::TokenizeRequest tokenize;
  tokenize.set_text(r.text());
  api::TokenizeResponse tokens;
  ASSERT_TRUE(stub_->Tokenize(&tokenize_context, tokenize, &tokens).ok());

  grpc::ClientContext unary_context;
  api::GenerateResponse unary;
  const grpc::Status s = stub_->Generate(&unary_context, r, &unary);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_THAT(unary.text(), HasSubstr("Paris"));
  EXPECT_EQ(tokens.token_ids_size(), unary.usage().prompt_tokens())
      << "Tokenize gives the ids a text prompt is prefilled with";

  const Streamed streamed = Stream(r);
  ASSERT_TRUE(streamed.status.ok()) << streamed.status.error_message();
  EXPECT_EQ(streamed.text, streamed.final.text()) << "stream deltas add up to the final text";
  EXPECT_EQ(streamed.final.text(), unary.text());
  EXPECT_EQ(streamed.ids, std::vector<int32_t>(unary.token_ids().begin(), unary.token_ids().end()));

  r.mutable_sampling()->add_stop("Paris");
  const Streamed stopped = Stream(r);
  ASSERT_TRUE(stopped.status.ok());
  EXPECT_EQ(stopped.final.finish_reason(), api::STOP);
  EXPECT_THAT(stopped.final.text(), Not(HasSubstr("Paris")));
  EXPECT_EQ(stopped.text, stopped.final.text());
  EXPECT_EQ(engine_->kv_pages().first, 0);
}

}  // namespace
}  // namespace quest::service
