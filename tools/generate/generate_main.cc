// generate: text generation from the command line.
//
//   bazel run //tools/generate -- --prompt "Why is the sky blue?"
//   bazel run //tools/generate -- --config my.textproto --policy dense
//       --prompt "..." --max_tokens 128 --temperature 0.7 --top_p 0.9 --seed 1
//
// Without --config it runs the embedded default (tools/configs/
// default.textproto: SmolLM2-135M-Instruct on the CPU). Tokens stream to
// stdout as they are generated; a one-line summary goes to stderr.

#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_format.h"
#include "runtime/engine.h"
#include "tools/configs/default_config.h"

ABSL_FLAG(std::string, config, "", "Engine config (text proto). Empty: the embedded default.");
ABSL_FLAG(std::string, model, "", "Overrides model.path of the config.");
ABSL_FLAG(std::string, prompt, "", "Prompt text.");
ABSL_FLAG(std::string, chat, "auto",
          "auto|on|off: wrap the prompt in the model's chat template (auto: when it has one).");
ABSL_FLAG(int, max_tokens, 64, "Tokens to generate.");
ABSL_FLAG(double, temperature, 0.0, "0 = greedy.");
ABSL_FLAG(int, top_k, 0, "0 = no top-k cut.");
ABSL_FLAG(double, top_p, 0.0, "0 or 1 = no nucleus cut.");
ABSL_FLAG(uint64_t, seed, 0, "Sampling seed.");
ABSL_FLAG(std::vector<std::string>, stop, {}, "Comma-separated stop strings.");
ABSL_FLAG(std::string, policy, "", "Cache policy for this request (overrides the config's).");

namespace {

int Fail(const absl::Status& status) {
  std::cerr << "generate: " << status << "\n";
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("Generates text with the Quest runtime. See --help.");
  absl::ParseCommandLine(argc, argv);

  absl::StatusOr<quest::config::EngineConfig> config =
      quest::tools::LoadConfigOrDefault(absl::GetFlag(FLAGS_config));
  if (!config.ok()) return Fail(config.status());
  if (!absl::GetFlag(FLAGS_model).empty()) config->mutable_model()->set_path(absl::GetFlag(FLAGS_model));

  absl::StatusOr<std::unique_ptr<quest::Engine>> engine = quest::Engine::Create(*config);
  if (!engine.ok()) return Fail(engine.status());

  quest::api::GenerateRequest request;
  std::string prompt = absl::GetFlag(FLAGS_prompt);
  const std::string chat = absl::GetFlag(FLAGS_chat);
  if (chat == "on" || (chat == "auto" && !(*engine)->model_info().chat_template.empty())) {
    prompt = quest::ApplyChatTemplate((*engine)->model_info(), prompt);
  } else if (chat != "off" && chat != "auto") {
    return Fail(absl::InvalidArgumentError("--chat must be auto, on or off"));
  }
  request.set_text(prompt);
  quest::api::SamplingParams* s = request.mutable_sampling();
  s->set_max_tokens(absl::GetFlag(FLAGS_max_tokens));
  s->set_temperature(static_cast<float>(absl::GetFlag(FLAGS_temperature)));
  s->set_top_k(absl::GetFlag(FLAGS_top_k));
  s->set_top_p(static_cast<float>(absl::GetFlag(FLAGS_top_p)));
  s->set_seed(absl::GetFlag(FLAGS_seed));
  for (const std::string& stop : absl::GetFlag(FLAGS_stop)) s->add_stop(stop);
  if (!absl::GetFlag(FLAGS_policy).empty()) {
    *request.mutable_cache() = config->cache();
    request.mutable_cache()->set_policy(absl::GetFlag(FLAGS_policy));
  }

  absl::StatusOr<quest::api::GenerateResponse> response =
      (*engine)->Generate(request, [](const quest::TokenEvent& e) { std::cout << e.text << std::flush; });
  std::cout << "\n";
  if (!response.ok()) return Fail(response.status());
  const quest::api::Usage& u = response->usage();
  const double decode_s = u.mean_inter_token_ms() / 1000.0;
  std::cerr << absl::StrFormat(
      "[prompt tokens: %d, generated tokens: %d, %.1f tokens/s, time to first token: %.0f ms, "
      "finish: %s]\n",
      u.prompt_tokens(), u.generated_tokens(), decode_s > 0 ? 1.0 / decode_s : 0.0,
      u.time_to_first_token_ms(), quest::api::FinishReason_Name(response->finish_reason()));
  return 0;
}
