#ifndef QUEST_SERVICE_SERVER_H_
#define QUEST_SERVICE_SERVER_H_

// A gRPC server hosting the Generation service over one engine, with the
// standard health service (grpc.health.v1.Health: "" and
// "quest.api.Generation") and server reflection, so `grpcurl list` works.
//
//   auto server = GenerationServer::Start(*engine, {.listen = "127.0.0.1:0"});
//   ... (*server)->port() ...
//   (*server)->Shutdown(absl::Seconds(10));
//
// Shutdown is graceful: health flips to NOT_SERVING and new generation
// requests are UNAVAILABLE; in-flight requests get the grace period to
// finish, then are cancelled (they end with finish_reason CANCELLED, or
// UNAVAILABLE if they had not started); then the server stops.

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "runtime/engine.h"
#include "service/generation_service.h"

namespace quest::service {

struct ServerOptions {
  // host:port; port 0 lets gRPC pick one (see GenerationServer::port()).
  std::string listen = "127.0.0.1:50051";
  // Null: plaintext.
  std::shared_ptr<grpc::ServerCredentials> credentials;
  // Largest request or response message; 0: gRPC's defaults (4 MiB in).
  int max_message_bytes = 0;
  GenerationServiceOptions service;
};

class GenerationServer {
 public:
  // Listens and serves until Shutdown. `engine` must outlive the server.
  static absl::StatusOr<std::unique_ptr<GenerationServer>> Start(Engine& engine, const ServerOptions& options);
  // Shutdown(0) if it was not shut down yet.
  ~GenerationServer();

  // The port listened on (the one gRPC picked when options.listen said 0).
  int port() const { return port_; }
  GenerationService& service() { return *service_; }

  // Graceful shutdown (see the top of this file); returns once the server
  // has stopped. Later calls return at once.
  void Shutdown(absl::Duration grace);

 private:
  GenerationServer(std::unique_ptr<GenerationService> service, std::unique_ptr<grpc::Server> server, int port)
      : service_(std::move(service)), server_(std::move(server)), port_(port) {}

  // Declared first, destroyed last: the server must be gone before the
  // service it calls.
  std::unique_ptr<GenerationService> service_;
  std::unique_ptr<grpc::Server> server_;
  const int port_;
  absl::Mutex shutdown_mu_;
  bool shut_down_ ABSL_GUARDED_BY(shutdown_mu_) = false;
};

}  // namespace quest::service

#endif  // QUEST_SERVICE_SERVER_H_
