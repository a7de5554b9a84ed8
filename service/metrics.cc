#include "service/metrics.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"

namespace quest::service {

void Counter::Increment(double delta) {
  if (!(delta >= 0)) return;  // a counter never goes down
  absl::MutexLock lock(&mu_);
  value_ += delta;
}

double Counter::value() const {
  absl::MutexLock lock(&mu_);
  return value_;
}

void Gauge::Set(double value) {
  absl::MutexLock lock(&mu_);
  value_ = value;
}

double Gauge::value() const {
  absl::MutexLock lock(&mu_);
  return value_;
}

Histogram::Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {
  for (size_t i = 1; i < bounds_.size(); ++i) {
    if (!(bounds_[i - 1] < bounds_[i])) {
      std::fprintf(stderr, "metrics: histogram bounds must increase\n");
      std::abort();
    }
  }
}

void Histogram::Observe(double value) {
  size_t i = 0;
  while (i < bounds_.size() && value > bounds_[i]) ++i;
  absl::MutexLock lock(&mu_);
  ++counts_[i];
  sum_ += value;
  ++count_;
}

Histogram::Snapshot Histogram::snapshot() const {
  Snapshot s;
  s.bounds = bounds_;
  absl::MutexLock lock(&mu_);
  uint64_t running = 0;
  for (uint64_t c : counts_) {
    running += c;
    s.cumulative.push_back(running);
  }
  s.sum = sum_;
  s.count = count_;
  return s;
}

std::string FormatMetricLabels(const MetricLabels& labels) {
  if (labels.empty()) return "";
  std::string out = "{";
  for (size_t i = 0; i < labels.size(); ++i) {
    if (i > 0) out += ",";
    absl::StrAppend(&out, labels[i].first, "=\"",
                    absl::StrReplaceAll(labels[i].second, {{"\\", "\\\\"}, {"\"", "\\\""}, {"\n", "\\n"}}), "\"");
  }
  out += "}";
  return out;
}

std::string FormatMetricValue(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  if (value == std::floor(value) && std::fabs(value) < 1e15) return absl::StrFormat("%.0f", value);
  return absl::StrFormat("%.9g", value);
}

MetricsRegistry::Member& MetricsRegistry::GetMember(const std::string& name, const std::string& help, Type type,
                                                   const MetricLabels& labels) {
  auto [it, inserted] = families_.try_emplace(name);
  Family& family = it->second;
  if (inserted) {
    family.type = type;
    family.help = help;
  }
  if (family.type != type) {
    std::fprintf(stderr, "metrics: %s registered with another type\n", name.c_str());
    std::abort();
  }
  Member& member = family.members[FormatMetricLabels(labels)];
  member.labels = labels;
  return member;
}

Counter& MetricsRegistry::GetCounter(const std::string& name, const std::string& help, const MetricLabels& labels) {
  absl::MutexLock lock(&mu_);
  Member& m = GetMember(name, help, Type::kCounter, labels);
  if (!m.counter) m.counter = std::make_unique<Counter>();
  return *m.counter;
}

Gauge& MetricsRegistry::GetGauge(const std::string& name, const std::string& help, const MetricLabels& labels) {
  absl::MutexLock lock(&mu_);
  Member& m = GetMember(name, help, Type::kGauge, labels);
  if (!m.gauge) m.gauge = std::make_unique<Gauge>();
  return *m.gauge;
}

Histogram& MetricsRegistry::GetHistogram(const std::string& name, const std::string& help,
                                         const std::vector<double>& bounds, const MetricLabels& labels) {
  absl::MutexLock lock(&mu_);
  Member& m = GetMember(name, help, Type::kHistogram, labels);
  if (!m.histogram) m.histogram = std::make_unique<Histogram>(bounds);
  return *m.histogram;
}

std::string MetricsRegistry::Render() const {
  absl::MutexLock lock(&mu_);
  std::string out;
  for (const auto& [name, family] : families_) {
    const char* type = family.type == Type::kCounter ? "counter" : family.type == Type::kGauge ? "gauge" : "histogram";
    absl::StrAppend(&out, "# HELP ", name, " ",
                    absl::StrReplaceAll(family.help, {{"\\", "\\\\"}, {"\n", "\\n"}}), "\n");
    absl::StrAppend(&out, "# TYPE ", name, " ", type, "\n");
    for (const auto& [label_text, member] : family.members) {
      if (member.counter) {
        absl::StrAppend(&out, name, label_text, " ", FormatMetricValue(member.counter->value()), "\n");
      } else if (member.gauge) {
        absl::StrAppend(&out, name, label_text, " ", FormatMetricValue(member.gauge->value()), "\n");
      } else if (member.histogram) {
        const Histogram::Snapshot s = member.histogram->snapshot();
        for (size_t i = 0; i <= s.bounds.size(); ++i) {
          MetricLabels labels = member.labels;
          labels.emplace_back("le", i < s.bounds.size() ? FormatMetricValue(s.bounds[i]) : "+Inf");
          absl::StrAppend(&out, name, "_bucket", FormatMetricLabels(labels), " ",
                          FormatMetricValue(static_cast<double>(s.cumulative[i])), "\n");
        }
        absl::StrAppend(&out, name, "_sum", label_text, " ", FormatMetricValue(s.sum), "\n");
        absl::StrAppend(&out, name, "_count", label_text, " ", FormatMetricValue(static_cast<double>(s.count)),
                        "\n");
      }
    }
  }
  return out;
}

}  // namespace quest::service
