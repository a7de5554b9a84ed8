#ifndef QUEST_MODELS_STATUS_MACROS_H_
#define QUEST_MODELS_STATUS_MACROS_H_

// Status plumbing for the models/ package (internal; prefixed so it cannot
// clash with macros of the same purpose elsewhere).

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define MODELS_STATUS_CONCAT_INNER_(a, b) a##b
#define MODELS_STATUS_CONCAT_(a, b) MODELS_STATUS_CONCAT_INNER_(a, b)

// MODELS_RETURN_IF_ERROR(expr): returns the status of `expr` unless OK.
#define MODELS_RETURN_IF_ERROR(expr)                               \
  do {                                                             \
    ::absl::Status models_status_ = (expr);                        \
    if (!models_status_.ok()) return models_status_;               \
  } while (false)

// MODELS_ASSIGN_OR_RETURN(lhs, expr): `lhs = *expr` or return its status.
// `lhs` may be a declaration ("Foo foo") or an existing lvalue.
#define MODELS_ASSIGN_OR_RETURN(lhs, expr) \
  MODELS_ASSIGN_OR_RETURN_IMPL_(MODELS_STATUS_CONCAT_(models_status_or_, __LINE__), lhs, expr)
#define MODELS_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                  \
  if (!tmp.ok()) return std::move(tmp).status();      \
  lhs = std::move(*tmp)

#endif  // QUEST_MODELS_STATUS_MACROS_H_
