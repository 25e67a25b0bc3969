// run.resume=auto: which checkpoint a run resumes from (checkpoint.hpp).
//
// LATEST is followed strictly: its checkpoint loads or the run stops with
// exit 3. Only when LATEST itself is unusable (missing, empty, unreadable,
// not a checkpoint name, naming a missing file) are the step_*.h5 files tried,
// newest first, and the first that verifies is used, with log lines saying
// why; a run never starts over while checkpoints exist.
#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "finemoe/checkpoint.hpp"
#include "finemoe/error.hpp"
#include "finemoe/h5layout.hpp"
#include "finemoe/log.hpp"

namespace finemoe {

namespace hl = h5layout;

namespace {
// LATEST's first line if it names a checkpoint file (step_N.h5, no path);
// otherwise "" and `why` says what is wrong with it.
std::string read_latest_name(const std::string& dir, std::string& why) {
  const std::string latest = dir + "/" + hl::kCkptLatestFile;
  struct stat st;
  if (::stat(latest.c_str(), &st) != 0) {
    why = latest + " is missing";
    return "";
  }
  std::ifstream f(latest);
  std::string name;
  if (st.st_size == 0 || !f || !std::getline(f, name)) {
    why = latest + (st.st_size == 0 ? " is empty" : " is unreadable");
    return "";
  }
  while (!name.empty() && (name.back() == '\r' || name.back() == ' ' || name.back() == '\t')) name.pop_back();
  const bool ok = name.size() > 9 && name.compare(0, 5, "step_") == 0 && name.compare(name.size() - 3, 3, ".h5") == 0 &&
                  std::all_of(name.begin() + 5, name.end() - 3, ::isdigit);
  if (name.empty()) why = latest + " is empty";
  else if (!ok) why = latest + " does not hold a checkpoint name";
  return ok ? name : "";
}
}  // namespace

std::string latest_checkpoint(const std::string& run_dir) {
  const std::string dir = run_dir + "/checkpoints";
  std::string why;
  const std::string name = read_latest_name(dir, why);
  return name.empty() ? "" : dir + "/" + name;
}

std::string resume_latest(const std::string& run_dir, ParamStore& store, TrainState& state, const Config& cfg,
                          const Comm& comm) {
  const std::string dir = run_dir + "/checkpoints";
  // Rank 0 looks at the directory; every rank then tries the same list.
  // Line 1: the file LATEST names, or "" with line 2 saying why not; then
  // the step files, newest first.
  std::string plan;
  if (comm.rank() == 0) {
    std::string why;
    const std::string name = read_latest_name(dir, why);
    struct stat st;
    if (!name.empty() && ::stat((dir + "/" + name).c_str(), &st) != 0)
      why = dir + "/" + hl::kCkptLatestFile + " names " + name + ", which does not exist";
    plan = (why.empty() ? dir + "/" + name : "") + "\n" + why + "\n";
    const auto files = checkpoint_files(run_dir);
    for (auto it = files.rbegin(); it != files.rend(); ++it) plan += it->second + "\n";
  }
  comm.broadcast(plan, 0);
  std::vector<std::string> lines;
  {
    std::istringstream is(plan);
    std::string line;
    while (std::getline(is, line)) lines.push_back(line);
  }
  lines.resize(std::max<size_t>(lines.size(), 2));
  if (!lines[0].empty()) {  // strict: LATEST's checkpoint or an error
    state = load_checkpoint(lines[0], store, cfg, comm);
    return lines[0];
  }
  const std::vector<std::string> candidates(lines.begin() + 2, lines.end());
  if (candidates.empty()) return "";
  std::string skipped;
  for (const std::string& path : candidates) {
    try {
      state = load_checkpoint(path, store, cfg, comm);
    } catch (const DataError& e) {
      // The same on every rank (load_checkpoint agrees before throwing).
      if (comm.rank() == 0) log::warn("resume: skipping %s", e.what());
      skipped += "\n  " + std::string(e.what());
      continue;
    }
    log::info("resume: %s, so resuming from the newest checkpoint that verifies: %s (step %lld)%s", lines[1].c_str(),
              path.c_str(), (long long)state.step,
              skipped.empty() ? "" : "; newer ones failed verification (see above)");
    return path;
  }
  throw DataError("resume: " + lines[1] + " and no checkpoint in " + dir + " verifies:" + skipped);
}

}  // namespace finemoe
