// A minimal JSON writer (no dependency): objects, arrays, numbers, strings.
// Non-finite numbers are written as null, as JSON has no NaN/Inf.
#pragma once
#include <cmath>
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

namespace finemoe::analysis {

class JsonWriter {
 public:
  JsonWriter& begin_object(const std::string& key = "") { open(key, '{'); return *this; }
  JsonWriter& end_object() { close('}'); return *this; }
  JsonWriter& begin_array(const std::string& key = "") { open(key, '['); return *this; }
  JsonWriter& end_array() { close(']'); return *this; }
  JsonWriter& num(const std::string& key, double v) { item(key); write_num(v); return *this; }
  JsonWriter& num(double v) { item(""); write_num(v); return *this; }
  JsonWriter& str(const std::string& key, const std::string& v) { item(key); write_str(v); return *this; }
  JsonWriter& str(const std::string& v) { item(""); write_str(v); return *this; }
  JsonWriter& boolean(const std::string& key, bool v) { item(key); os_ << (v ? "true" : "false"); return *this; }
  std::string text() const { return os_.str() + "\n"; }

 private:
  void indent() { os_ << '\n' << std::string(2 * first_.size(), ' '); }
  void item(const std::string& key) {
    if (!first_.empty()) {
      if (!first_.back()) os_ << ',';
      first_.back() = false;
      indent();
    }
    if (!key.empty()) {
      write_str(key);
      os_ << ": ";
    }
  }
  void open(const std::string& key, char c) {
    item(key);
    os_ << c;
    first_.push_back(true);
  }
  void close(char c) {
    bool empty = first_.back();
    first_.pop_back();
    if (!empty) indent();
    os_ << c;
  }
  void write_num(double v) {
    if (!std::isfinite(v)) {
      os_ << "null";
      return;
    }
    char buf[40];
    std::snprintf(buf, sizeof buf, "%.10g", v);
    os_ << buf;
  }
  void write_str(const std::string& s) {
    os_ << '"';
    for (char ch : s) {
      switch (ch) {
        case '"': os_ << "\\\""; break;
        case '\\': os_ << "\\\\"; break;
        case '\n': os_ << "\\n"; break;
        case '\t': os_ << "\\t"; break;
        default:
          if (static_cast<unsigned char>(ch) < 0x20) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\u%04x", ch);
            os_ << buf;
          } else {
            os_ << ch;
          }
      }
    }
    os_ << '"';
  }
  std::ostringstream os_;
  std::vector<bool> first_;
};

}  // namespace finemoe::analysis
