// serve: the Generation gRPC service (proto/generation.proto) over one
// engine, with gRPC health checking and server reflection.
//
//   bazel run //tools/serve -- --listen 127.0.0.1:50051
//   bazel run //tools/serve -- --config my.textproto --tls_cert cert.pem --tls_key key.pem
//   grpcurl -plaintext 127.0.0.1:50051 list
//
// Without --config it serves the embedded default (tools/configs/
// default.textproto). SIGTERM or SIGINT shut it down gracefully: health
// flips to NOT_SERVING, new requests are UNAVAILABLE, in-flight requests get
// --shutdown_grace to finish and are then cancelled, then it exits 0.

#include <pthread.h>

#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "grpcpp/security/server_credentials.h"
#include "runtime/engine.h"
#include "service/server.h"
#include "tools/configs/default_config.h"

ABSL_FLAG(std::string, config, "", "Engine config (text proto). Empty: the embedded default.");
ABSL_FLAG(std::string, listen, "127.0.0.1:50051", "host:port to listen on; port 0 picks a free one.");
ABSL_FLAG(std::string, tls_cert, "", "PEM certificate chain file: serve TLS (needs --tls_key).");
ABSL_FLAG(std::string, tls_key, "", "PEM private key file of --tls_cert.");
ABSL_FLAG(int, max_message_bytes, 4 << 20, "Largest request or response message, in bytes.");
ABSL_FLAG(int, max_queued_requests, -1,
          "Requests admitted beyond limits.max_concurrent_requests, waiting for the engine; beyond both, "
          "RESOURCE_EXHAUSTED. -1: as many as limits.max_concurrent_requests.");
ABSL_FLAG(absl::Duration, shutdown_grace, absl::Seconds(10),
          "On SIGTERM/SIGINT, how long in-flight requests may run before they are cancelled.");
ABSL_FLAG(std::string, port_file, "", "If set, the port listened on is written here once serving.");

namespace {

int Fail(const absl::Status& status) {
  std::cerr << "serve: " << status << "\n";
  return 1;
}

absl::StatusOr<std::string> ReadFile(const std::string& flag, const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("--", flag, ": ", path, " cannot be read"));
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> Credentials() {
  const std::string cert = absl::GetFlag(FLAGS_tls_cert), key = absl::GetFlag(FLAGS_tls_key);
  if (cert.empty() && key.empty()) return grpc::InsecureServerCredentials();
  if (cert.empty() || key.empty()) {
    return absl::InvalidArgumentError("--tls_cert and --tls_key go together");
  }
  absl::StatusOr<std::string> cert_pem = ReadFile("tls_cert", cert);
  if (!cert_pem.ok()) return cert_pem.status();
  absl::StatusOr<std::string> key_pem = ReadFile("tls_key", key);
  if (!key_pem.ok()) return key_pem.status();
  grpc::SslServerCredentialsOptions ssl;
  ssl.pem_key_cert_pairs.push_back({*key_pem, *cert_pem});
  return grpc::SslServerCredentials(ssl);
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("Serves the Quest runtime over gRPC. See --help.");
  absl::ParseCommandLine(argc, argv);

  // Blocked in every thread (all are started after this), so the signals
  // wait for sigwait below instead of interrupting anything.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  absl::StatusOr<quest::config::EngineConfig> config =
      quest::tools::LoadConfigOrDefault(absl::GetFlag(FLAGS_config));
  if (!config.ok()) return Fail(config.status());
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials = Credentials();
  if (!credentials.ok()) return Fail(credentials.status());
  absl::StatusOr<std::unique_ptr<quest::Engine>> engine = quest::Engine::Create(*config);
  if (!engine.ok()) return Fail(engine.status());

  quest::service::ServerOptions options;
  options.listen = absl::GetFlag(FLAGS_listen);
  options.credentials = *credentials;
  options.max_message_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  options.service.max_queued_requests = absl::GetFlag(FLAGS_max_queued_requests);
  absl::StatusOr<std::unique_ptr<quest::service::GenerationServer>> server =
      quest::service::GenerationServer::Start(**engine, options);
  if (!server.ok()) return Fail(server.status());

  const quest::ModelInfo& info = (*engine)->model_info();
  std::cerr << "serve: " << info.architecture << " from " << info.source << " on " << info.backend
            << ", listening on port " << (*server)->port() << (absl::GetFlag(FLAGS_tls_cert).empty() ? " (plaintext)" : " (TLS)") << "\n";
  if (const std::string port_file = absl::GetFlag(FLAGS_port_file); !port_file.empty()) {
    // Renamed into place, so a reader never sees it half written.
    const std::string partial = port_file + ".partial";
    std::ofstream(partial) << (*server)->port() << "\n";
    std::filesystem::rename(partial, port_file);
  }

  int signal = 0;
  sigwait(&signals, &signal);
  std::cerr << "serve: " << strsignal(signal) << ": shutting down (grace "
            << absl::FormatDuration(absl::GetFlag(FLAGS_shutdown_grace)) << ")\n";
  (*server)->Shutdown(absl::GetFlag(FLAGS_shutdown_grace));
  std::cerr << "serve: stopped\n";
  return 0;
}
