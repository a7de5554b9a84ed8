#include "service/grpc_status.h"

#include <string>

namespace quest::service {

// absl::StatusCode and grpc::StatusCode share the canonical numbering
// (google.rpc.Code), so the mapping is a cast; the tests pin every value.
grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

grpc::Status RequestErrorToGrpcStatus(const absl::Status& status) {
  if (status.code() == absl::StatusCode::kNotFound) {
    return ToGrpcStatus(absl::InvalidArgumentError(status.message()));
  }
  return ToGrpcStatus(status);
}

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

}  // namespace quest::service
