#include "finemoe/collective.hpp"

#include <string>

#include "finemoe/error.hpp"

namespace finemoe {

void run_collectively(const Comm& comm, const std::function<void()>& fn) {
  std::string msg;
  int code = kExitOk;
  try {
    fn();
  } catch (const Error& e) {
    msg = e.what();
    code = e.exit_code();
  } catch (const std::exception& e) {
    msg = e.what();
    code = kExitFailure;
  }
  if (!comm.any(!msg.empty())) return;
  // Every rank broadcasts "code|message" in rank order; the first non-empty
  // one wins. Set-up only, so simplicity beats speed.
  std::string first;
  int first_code = kExitFailure;
  for (int r = 0; r < comm.size(); ++r) {
    std::string m = (r == comm.rank()) ? std::to_string(code) + "|" + msg : "";
    comm.broadcast(m, r);
    const auto bar = m.find('|');
    const std::string text = m.substr(bar + 1);
    if (!text.empty() && first.empty()) {
      first = text;
      first_code = std::stoi(m.substr(0, bar));
    }
  }
  throw CollectiveError(first, first_code);
}

}  // namespace finemoe
