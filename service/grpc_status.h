#ifndef QUEST_SERVICE_GRPC_STATUS_H_
#define QUEST_SERVICE_GRPC_STATUS_H_

// The one place where engine errors become gRPC statuses. Handlers never
// invent codes: the engine already chose the canonical code (INVALID_ARGUMENT
// for a bad field, OUT_OF_RANGE for context overflow, RESOURCE_EXHAUSTED for
// a full KV pool, ...) and its message names what and where.

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace quest::service {

grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace quest::service

#endif  // QUEST_SERVICE_GRPC_STATUS_H_
