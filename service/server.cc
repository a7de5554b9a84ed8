#include "service/server.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"

namespace quest::service {

absl::StatusOr<std::unique_ptr<GenerationServer>> GenerationServer::Start(Engine& engine,
                                                                          const ServerOptions& options) {
  // Both are process-wide settings read when a builder builds a server.
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();

  auto service = std::make_unique<GenerationService>(engine, options.service);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(options.listen,
                           options.credentials ? options.credentials : grpc::InsecureServerCredentials(), &port);
  // Another process on the same port is an error, not a silent share.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.RegisterService(service.get());
  if (options.max_message_bytes > 0) {
    builder.SetMaxReceiveMessageSize(options.max_message_bytes);
    builder.SetMaxSendMessageSize(options.max_message_bytes);
  }
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    if (server != nullptr) server->Shutdown();
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", options.listen, " (address in use, malformed, or TLS files invalid)"));
  }
  server->GetHealthCheckService()->SetServingStatus(api::Generation::service_full_name(), true);
  return std::unique_ptr<GenerationServer>(new GenerationServer(std::move(service), std::move(server), port));
}

GenerationServer::~GenerationServer() { Shutdown(absl::ZeroDuration()); }

void GenerationServer::Shutdown(absl::Duration grace) {
  absl::MutexLock lock(&shutdown_mu_);
  if (shut_down_) return;
  shut_down_ = true;
  // New work is refused from here on, and health says so to whoever
  // balances load over replicas; then what is in flight drains.
  service_->StopAdmitting();
  server_->GetHealthCheckService()->SetServingStatus(false);
  if (!service_->WaitIdle(grace)) {
    service_->CancelInFlight();
    // Each stops at its next engine step.
    service_->WaitIdle();
  }
  // Every generation has ended; what is left is writing their last
  // messages, and health and reflection calls.
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  server_->Wait();
}

}  // namespace quest::service
