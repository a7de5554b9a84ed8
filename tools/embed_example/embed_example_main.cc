// The smallest program that embeds the Quest engine as a C++ library: no gRPC,
// no flags library, no config file. It loads a model, runs two requests with
// different cache policies side by side on two threads (the engine batches
// them), streams the first one's tokens, and prints what each produced.
//
//   bazel run //tools/embed_example -- /path/to/model.gguf-or-hf-dir
//
// A C++ service links //runtime:engine and does the same.

#include <iostream>
#include <string>
#include <thread>

#include "runtime/engine.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: " << argv[0] << " MODEL (a .gguf file or a Hugging Face checkpoint directory)\n";
    return 2;
  }
  quest::config::EngineConfig config;
  config.mutable_model()->set_path(argv[1]);
  config.mutable_cache()->set_policy("dense");
  absl::StatusOr<std::unique_ptr<quest::Engine>> engine = quest::Engine::Create(config);
  if (!engine.ok()) {
    std::cerr << "embed_example: " << engine.status() << "\n";
    return 1;
  }

  // Text when the model has a tokenizer, token ids otherwise.
  auto make_request = [&](const std::string& id) {
    quest::api::GenerateRequest request;
    request.set_request_id(id);
    if ((*engine)->tokenizer() != nullptr) {
      request.set_text(quest::ApplyChatTemplate((*engine)->model_info(), "Name three colours."));
    } else {
      for (int32_t t : {3, 4, 5, 6, 7}) request.mutable_token_ids()->add_ids(t);
    }
    request.mutable_sampling()->set_max_tokens(16);
    return request;
  };
  quest::api::GenerateRequest dense = make_request("dense-request");
  quest::api::GenerateRequest quest_request = make_request("quest-request");
  quest_request.mutable_cache()->set_policy("quest");
  quest_request.mutable_cache()->mutable_quest()->set_token_budget(64);

  absl::StatusOr<quest::api::GenerateResponse> quest_response;
  std::thread other([&] { quest_response = (*engine)->Generate(quest_request); });
  int streamed = 0;
  absl::StatusOr<quest::api::GenerateResponse> dense_response =
      (*engine)->Generate(dense, [&](const quest::TokenEvent& event) {
        ++streamed;
        std::cout << event.text << std::flush;
      });
  other.join();
  std::cout << "\n";
  for (const auto* r : {&dense_response, &quest_response}) {
    if (!r->ok()) {
      std::cerr << "embed_example: " << r->status() << "\n";
      return 1;
    }
  }
  std::cout << "dense: " << dense_response->usage().generated_tokens() << " tokens ("
            << streamed << " streamed), finish "
            << quest::api::FinishReason_Name(dense_response->finish_reason()) << "\n";
  std::cout << "quest: " << quest_response->usage().generated_tokens() << " tokens, finish "
            << quest::api::FinishReason_Name(quest_response->finish_reason()) << "\n";
  const auto [in_use, total] = (*engine)->kv_pages();
  std::cout << "kv pages in use after both: " << in_use << " of " << total << "\n";
  return in_use == 0 ? 0 : 1;
}
