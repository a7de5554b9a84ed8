#include "service/grpc_status.h"

#include "gtest/gtest.h"

namespace quest::service {
namespace {

TEST(GrpcStatusTest, EveryCanonicalCodeMapsToItsGrpcNamesake) {
  const std::pair<absl::StatusCode, grpc::StatusCode> pairs[] = {
      {absl::StatusCode::kCancelled, grpc::StatusCode::CANCELLED},
      {absl::StatusCode::kUnknown, grpc::StatusCode::UNKNOWN},
      {absl::StatusCode::kInvalidArgument, grpc::StatusCode::INVALID_ARGUMENT},
      {absl::StatusCode::kDeadlineExceeded, grpc::StatusCode::DEADLINE_EXCEEDED},
      {absl::StatusCode::kNotFound, grpc::StatusCode::NOT_FOUND},
      {absl::StatusCode::kAlreadyExists, grpc::StatusCode::ALREADY_EXISTS},
      {absl::StatusCode::kPermissionDenied, grpc::StatusCode::PERMISSION_DENIED},
      {absl::StatusCode::kResourceExhausted, grpc::StatusCode::RESOURCE_EXHAUSTED},
      {absl::StatusCode::kFailedPrecondition, grpc::StatusCode::FAILED_PRECONDITION},
      {absl::StatusCode::kAborted, grpc::StatusCode::ABORTED},
      {absl::StatusCode::kOutOfRange, grpc::StatusCode::OUT_OF_RANGE},
      {absl::StatusCode::kUnimplemented, grpc::StatusCode::UNIMPLEMENTED},
      {absl::StatusCode::kInternal, grpc::StatusCode::INTERNAL},
      {absl::StatusCode::kUnavailable, grpc::StatusCode::UNAVAILABLE},
      {absl::StatusCode::kDataLoss, grpc::StatusCode::DATA_LOSS},
      {absl::StatusCode::kUnauthenticated, grpc::StatusCode::UNAUTHENTICATED},
  };
  for (const auto& [a, g] : pairs) {
    const grpc::Status s = ToGrpcStatus(absl::Status(a, "what and where"));
    EXPECT_EQ(s.error_code(), g) << absl::StatusCodeToString(a);
    EXPECT_EQ(s.error_message(), "what and where");
    EXPECT_EQ(FromGrpcStatus(s).code(), a);
  }
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
}

TEST(GrpcStatusTest, ARequestNamingAnUnknownPolicyIsAnInvalidArgument) {
  const grpc::Status s =
      RequestErrorToGrpcStatus(absl::NotFoundError("unknown cache policy \"x\"; known policies: dense"));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(s.error_message(), "unknown cache policy \"x\"; known policies: dense");
  for (absl::StatusCode code : {absl::StatusCode::kInvalidArgument, absl::StatusCode::kOutOfRange,
                                absl::StatusCode::kResourceExhausted, absl::StatusCode::kUnavailable}) {
    EXPECT_EQ(RequestErrorToGrpcStatus(absl::Status(code, "m")).error_code(),
              static_cast<grpc::StatusCode>(code));
  }
  EXPECT_TRUE(RequestErrorToGrpcStatus(absl::OkStatus()).ok());
}

}  // namespace
}  // namespace quest::service
