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

// The status of a failed request, as its client sees it. Same as
// ToGrpcStatus except NOT_FOUND, which becomes INVALID_ARGUMENT: the only
// thing a request can name that is not found is its own `cache.policy` (the
// model and plugins are loaded at start-up), so it is a bad field of the
// request, not a missing server resource a retry could find. The message,
// which lists the known policies, is kept.
//
//   engine error                               gRPC code
//   InvalidArgument (field named)              INVALID_ARGUMENT
//   NotFound (unknown cache.policy)            INVALID_ARGUMENT
//   OutOfRange (prompt + max_tokens > context) OUT_OF_RANGE
//   ResourceExhausted (KV pool full)           RESOURCE_EXHAUSTED
//   FailedPrecondition (text, no tokenizer)    FAILED_PRECONDITION
//   AlreadyExists (request_id in use)          ALREADY_EXISTS
grpc::Status RequestErrorToGrpcStatus(const absl::Status& status);

}  // namespace quest::service

#endif  // QUEST_SERVICE_GRPC_STATUS_H_
