// The common frame of every executable's main(): run the body, turn a
// finemoe::Error into "NAME: error: MESSAGE" on stderr and its exit code
// (error.hpp), anything else into exit code 1. One place, so every tool
// reports failures the same way scripts can test.
#pragma once
#include <functional>

namespace finemoe {

int run_app(const char* name, const std::function<int()>& body);

}  // namespace finemoe
