#include "finemoe/app.hpp"

#include <cstdio>
#include <exception>

#include "finemoe/error.hpp"

namespace finemoe {

int run_app(const char* name, const std::function<int()>& body) {
  try {
    return body();
  } catch (const Error& e) {
    std::fprintf(stderr, "%s: error: %s\n", name, e.what());
    return e.exit_code();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: error: %s\n", name, e.what());
    return kExitFailure;
  }
}

}  // namespace finemoe
