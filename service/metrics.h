#ifndef QUEST_SERVICE_METRICS_H_
#define QUEST_SERVICE_METRICS_H_

// A small metrics registry rendered in the Prometheus text exposition format
// (version 0.0.4): counters, gauges and histograms (fixed buckets), grouped in
// families (one name, one HELP and TYPE line) whose members differ by labels.
// No external library. GenerationService serves it through GetMetrics.
//
// Thread-safety: every method may be called from any thread; the references
// the registry hands out stay valid for its lifetime.

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace quest::service {

// Label name/value pairs, in the order they are rendered.
using MetricLabels = std::vector<std::pair<std::string, std::string>>;

class Counter {
 public:
  void Increment(double delta = 1);  // delta >= 0
  double value() const;

 private:
  mutable absl::Mutex mu_;
  double value_ ABSL_GUARDED_BY(mu_) = 0;
};

class Gauge {
 public:
  void Set(double value);
  double value() const;

 private:
  mutable absl::Mutex mu_;
  double value_ ABSL_GUARDED_BY(mu_) = 0;
};

class Histogram {
 public:
  // `bounds`: the buckets' upper bounds, increasing; +Inf is implied.
  explicit Histogram(std::vector<double> bounds);
  void Observe(double value);

  struct Snapshot {
    std::vector<double> bounds;
    std::vector<uint64_t> cumulative;  // per bound, then +Inf (== count)
    double sum = 0;
    uint64_t count = 0;
  };
  Snapshot snapshot() const;

 private:
  const std::vector<double> bounds_;
  mutable absl::Mutex mu_;
  std::vector<uint64_t> counts_ ABSL_GUARDED_BY(mu_);  // non-cumulative, last = +Inf
  double sum_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t count_ ABSL_GUARDED_BY(mu_) = 0;
};

class MetricsRegistry {
 public:
  // The member of family `name` with these labels, created on first use. A
  // name keeps the type and help it was first registered with; asking for it
  // as another type is a programming error (it aborts).
  Counter& GetCounter(const std::string& name, const std::string& help, const MetricLabels& labels = {});
  Gauge& GetGauge(const std::string& name, const std::string& help, const MetricLabels& labels = {});
  Histogram& GetHistogram(const std::string& name, const std::string& help, const std::vector<double>& bounds,
                          const MetricLabels& labels = {});

  // Every family, sorted by name, members sorted by labels.
  std::string Render() const;

 private:
  enum class Type { kCounter, kGauge, kHistogram };
  struct Member {
    MetricLabels labels;
    std::unique_ptr<Counter> counter;
    std::unique_ptr<Gauge> gauge;
    std::unique_ptr<Histogram> histogram;
  };
  struct Family {
    Type type;
    std::string help;
    std::map<std::string, Member> members;  // by rendered label set
  };
  Member& GetMember(const std::string& name, const std::string& help, Type type, const MetricLabels& labels)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  std::map<std::string, Family> families_ ABSL_GUARDED_BY(mu_);
};

// "{a=\"x\",b=\"y\"}" with the format's escapes; "" for no labels.
std::string FormatMetricLabels(const MetricLabels& labels);
// A sample value: integers without a fraction, +Inf/-Inf/NaN spelled as the
// format wants.
std::string FormatMetricValue(double value);

}  // namespace quest::service

#endif  // QUEST_SERVICE_METRICS_H_
