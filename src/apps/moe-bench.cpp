// moe-bench: measures training-step speed of a configured model on this CPU and
// prints ONE JSON object (tokens/s, ms/step, phase breakdown, FLOPs, MFU
// against GEMM peaks measured in the same run, memory). --json-out appends the
// same object as one line to a file (JSON lines), so bench/ scripts can
// compare configurations and commits.
#include <omp.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "finemoe/backend.hpp"
#include "finemoe/app.hpp"
#include "finemoe/config.hpp"
#include "finemoe/counting.hpp"
#include "finemoe/data.hpp"
#include "finemoe/error.hpp"
#include "finemoe/device.hpp"
#include "finemoe/kernels.hpp"
#include "finemoe/memory.hpp"
#include "finemoe/model.hpp"
#include "finemoe/moe.hpp"
#include "finemoe/optimizer.hpp"
#include "finemoe/params.hpp"
#include "finemoe/profile.hpp"

namespace fm = finemoe;
namespace be = finemoe::backend;

namespace {

const char* kUsage =
    "moe-bench: training-step throughput, phase breakdown and MFU of a config on this CPU.\n\n"
    "Usage: moe-bench [--config FILE.ini] [--section.key value ...] [--steps N] [--warmup M]\n"
    "                 [--json-out FILE] [--peak-seconds S] [--gemm-only]\n"
    "                 [--fp32-engine auto|openblas|onednn] [--grouped auto|serial|omp_loop|batched]\n"
    "                 [--bf16-weights off|plain|blocked]\n\n"
    "Runs M untimed and N timed training steps (forward, backward, AdamW) of the\n"
    "configured model on train.batch_size sequences of model.seq_len tokens, measures the\n"
    "fp32 and bf16 GEMM peaks (2048^2 and the model's shapes) in the same process, and\n"
    "prints one JSON object on stdout. Precision: train.precision (fp32 | bf16 | auto); fp32 GEMM\n"
    "library: train.fp32_engine or --fp32-engine (auto | openblas | onednn; auto: oneDNN only if a\n"
    "start-up measurement at the model's GEMM shapes finds it > 5% faster, as moe-train does).\n"
    "--fp32-engine, --grouped and --bf16-weights select GEMM engine variants (for comparisons;\n"
    "--bf16-weights: how bf16 GEMMs reuse the weights' bf16 copies, see include/finemoe/backend.hpp).\n"
    "Threads: train.threads (0 = OMP_NUM_THREADS or all cores) for OpenMP and OpenBLAS alike.\n"
    "Device: run.device (cpu | cuda | auto), resolved as moe-train resolves it; the JSON's device,\n"
    "device_requested, device_why and backend fields say what ran (no build has a CUDA backend yet).";

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
// Process CPU time: with one thread it is the step's own compute time, which
// other processes on a shared machine cannot inflate.
double cpu_s() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

// Resident set, current and peak (VmRSS / VmHWM of /proc/self/status), bytes.
int64_t proc_status_kb(const char* key) {
  std::ifstream f("/proc/self/status");
  std::string line;
  const size_t n = std::strlen(key);
  while (std::getline(f, line))
    if (line.compare(0, n, key) == 0) return std::atoll(line.c_str() + n + 1);
  return -1;
}

// Minimal JSON writer: flat object with nested objects, numbers and strings.
class Json {
 public:
  void num(const std::string& k, double v) {
    key(k);
    if (std::isfinite(v)) {
      char b[64];
      std::snprintf(b, sizeof b, "%.6g", v);
      os_ << b;
    } else {
      os_ << "null";
    }
  }
  void str(const std::string& k, const std::string& v) {
    key(k);
    os_ << '"';
    for (char c : v) {
      if (c == '"' || c == '\\') os_ << '\\' << c;
      else if (c == '\n') os_ << "\\n";
      else os_ << c;
    }
    os_ << '"';
  }
  void boolean(const std::string& k, bool v) {
    key(k);
    os_ << (v ? "true" : "false");
  }
  void begin(const std::string& k) {
    key(k);
    os_ << '{';
    first_ = true;
  }
  void end() {
    os_ << '}';
    first_ = false;
  }
  std::string text() const { return "{" + os_.str() + "}"; }

 private:
  void key(const std::string& k) {
    if (!first_) os_ << ',';
    first_ = false;
    os_ << '"' << k << "\":";
  }
  std::ostringstream os_;
  bool first_ = true;
};

// Bytes that a training step cannot do without: counting.hpp's estimate on one
// rank for the whole batch.
double analytic_min_bytes(const fm::Config& c) {
  return fm::train_memory_bytes(c.shape(), c.n_heads(), double(c.train.batch_size) * double(c.model.seq_len)).total();
}

struct PeakSet {
  double fp32_2048 = 0, bf16_2048 = 0;
  std::vector<std::pair<std::string, std::pair<double, double>>> shapes;  // name -> (fp32, bf16)
  double fp32_model = 0, bf16_model = 0;  // time-weighted over the model shapes
};

PeakSet measure_peaks(const fm::Config& c, double secs, bool bf16_ok) {
  PeakSet p;
  const int64_t tokens = c.train.batch_size * c.model.seq_len;
  be::GemmShape big{false, false, 2048, 2048, 2048, "2048^3"};
  p.fp32_2048 = be::measure_gemm_gflops(be::Precision::fp32, big, secs);
  if (bf16_ok) p.bf16_2048 = be::measure_gemm_gflops(be::Precision::bf16, big, secs);
  auto shapes = be::model_gemm_shapes(c.model.d_model, 4 * c.model.d_model, tokens);
  double flops = 0, t32 = 0, t16 = 0;
  for (auto& s : shapes) {
    const double f = 2.0 * double(s.M) * double(s.N) * double(s.K);
    double a = be::measure_gemm_gflops(be::Precision::fp32, s, secs / 2);
    double b = bf16_ok ? be::measure_gemm_gflops(be::Precision::bf16, s, secs / 2) : 0;
    flops += f;
    t32 += f / a;
    if (bf16_ok) t16 += f / b;
    char name[128];
    std::snprintf(name, sizeof name, "%s %lldx%lldx%lld", s.name.c_str(), (long long)s.M, (long long)s.N,
                  (long long)s.K);
    p.shapes.push_back({name, {a, b}});
  }
  if (!c.dense()) {  // the experts' grouped GEMM: E·G problems of tokens/E rows, d -> d_expert
    const int64_t n = c.n_experts(), m = std::max<int64_t>(1, tokens / c.moe.experts), de = c.d_expert();
    const double f = 2.0 * double(n * m) * double(de) * double(c.model.d_model);
    double a = be::measure_grouped_gflops(be::Precision::fp32, n, m, de, c.model.d_model, false, false, secs / 2);
    double b = bf16_ok ? be::measure_grouped_gflops(be::Precision::bf16, n, m, de, c.model.d_model, false, false,
                                                    secs / 2)
                       : 0;
    flops += f;
    t32 += f / a;
    if (bf16_ok) t16 += f / b;
    char name[128];
    std::snprintf(name, sizeof name, "experts grouped %lld x (%lldx%lldx%lld)", (long long)n, (long long)m,
                  (long long)de, (long long)c.model.d_model);
    p.shapes.push_back({name, {a, b}});
  }
  p.fp32_model = flops / t32;
  p.bf16_model = bf16_ok ? flops / t16 : 0;
  return p;
}


// ---- run(), phase by phase ---------------------------------------------------

// The command line: the validated config and moe-bench's own options.
struct BenchOptions {
  fm::Config cfg;
  int64_t steps = 0, warmup = 0;
  double peak_secs = 0;
  bool gemm_only = false;
  std::string grouped;       // --grouped, as given
  be::GroupedVariant grouped_variant = be::GroupedVariant::automatic;
  std::string bf16_weights;  // --bf16-weights, as given
  be::WeightCacheMode weight_cache = be::WeightCacheMode::plain;
  std::string json_out;      // --json-out ("" none)
};

BenchOptions parse_options(const fm::ParsedArgs& args) {
  BenchOptions o;
  fm::Config& cfg = o.cfg;
  cfg = args.config;
  // --fp32-engine is train.fp32_engine under its older name (it wins when given).
  const std::string eng = args.app.at("fp32-engine");
  if (!eng.empty()) {
    if (eng != "auto" && eng != "openblas" && eng != "onednn")
      throw fm::ConfigError("option '--fp32-engine': expected auto | openblas | onednn, got '" + eng + "'");
    fm::set_config_value(cfg, "train.fp32_engine", eng);
  }
  cfg.validate(1);
  o.steps = std::stoll(args.app.at("steps"));
  o.warmup = std::stoll(args.app.at("warmup"));
  o.peak_secs = std::stod(args.app.at("peak-seconds"));
  o.gemm_only = args.app.count("gemm-only") && args.app.at("gemm-only") == "1";
  if (o.steps < 1) throw fm::ConfigError("option '--steps': must be >= 1, got " + std::to_string(o.steps));
  if (o.warmup < 0) throw fm::ConfigError("option '--warmup': must be >= 0, got " + std::to_string(o.warmup));

  const std::string& grp = o.grouped = args.app.at("grouped");
  if (grp == "auto") o.grouped_variant = be::GroupedVariant::automatic;
  else if (grp == "serial") o.grouped_variant = be::GroupedVariant::serial;
  else if (grp == "omp_loop") o.grouped_variant = be::GroupedVariant::omp_loop;
  else if (grp == "batched") o.grouped_variant = be::GroupedVariant::batched;
  else throw fm::ConfigError("option '--grouped': expected auto | serial | omp_loop | batched, got '" + grp + "'");
  const std::string& wmode = o.bf16_weights = args.app.at("bf16-weights");
  if (wmode == "off") o.weight_cache = be::WeightCacheMode::off;
  else if (wmode == "plain") o.weight_cache = be::WeightCacheMode::plain;
  else if (wmode == "blocked") o.weight_cache = be::WeightCacheMode::blocked;
  else throw fm::ConfigError("option '--bf16-weights': expected off | plain | blocked, got '" + wmode + "'");
  o.json_out = args.app.at("json-out");
  return o;
}

// What this process computes with: threads, GEMM variants, precision, fp32
// engine and device, each with the reason it was chosen.
struct Engines {
  be::Precision precision = be::Precision::fp32;
  std::string precision_why;
  be::Fp32Engine fp32_engine = be::Fp32Engine::openblas;
  std::string fp32_engine_why;
  fm::Backend* backend = nullptr;
  std::string device_why;
  bool bf16_ok = false;  // native bf16 GEMMs available
};

Engines set_up_engines(const BenchOptions& o) {
  const fm::Config& cfg = o.cfg;
  Engines e;
  be::set_num_threads(int(cfg.train.threads));
  be::set_grouped_variant(o.grouped_variant);
  be::set_weight_cache_mode(o.weight_cache);
  const int64_t tokens = cfg.model.seq_len * cfg.train.batch_size;
  const auto shapes = be::model_gemm_shapes(cfg.model.d_model, cfg.d_expert(), std::min<int64_t>(tokens, 2048));
  e.precision = be::resolve_precision(cfg.train.precision, &e.precision_why, shapes);
  be::set_precision(e.precision);
  // As moe-train decides it (one process here: no broadcast, no checkpoint).
  e.fp32_engine = be::resolve_fp32_engine(cfg.train.fp32_engine, &e.fp32_engine_why, shapes);
  be::set_fp32_engine(e.fp32_engine);
  // run.device as moe-train resolves it (one process: no broadcast).
  e.backend = &fm::backend_for(cfg.run.device, &e.device_why);
  e.bf16_ok = be::bf16_available();
  return e;
}

// The JSON's description of the model and of the set-up measured.
void write_setup(Json& j, const BenchOptions& o, const Engines& e, const fm::ModelCounts& counts) {
  const fm::Config& cfg = o.cfg;
  j.str("program", "moe-bench");
  j.str("version", FINEMOE_VERSION);
  j.str("git", FINEMOE_GIT);
  j.begin("model");
  j.str("ffn", fm::config_name(cfg.model.ffn));
  j.num("d_model", double(cfg.model.d_model));
  j.num("n_blocks", double(cfg.model.n_blocks));
  j.num("seq_len", double(cfg.model.seq_len));
  j.num("vocab_size", double(cfg.model.vocab_size));
  if (!cfg.dense()) {
    j.num("E", double(cfg.moe.experts));
    j.num("G", double(cfg.moe.granularity));
    j.str("routing", fm::config_name(cfg.moe.routing));
    j.num("d_expert", double(cfg.d_expert()));
  }
  j.num("batch_size", double(cfg.train.batch_size));
  j.num("tokens_per_step", double(cfg.train.batch_size * cfg.model.seq_len));
  j.num("total_params", counts.total_params);
  j.num("N", counts.N);
  j.num("N_active", counts.N_active);
  j.end();
  j.str("precision", e.precision == be::Precision::bf16 ? "bf16" : "fp32");
  j.str("precision_requested", fm::config_name(cfg.train.precision));
  j.str("precision_why", e.precision_why);
  j.str("fp32_engine", be::fp32_engine_name(e.fp32_engine));
  j.str("fp32_engine_requested", fm::config_name(cfg.train.fp32_engine));
  j.str("fp32_engine_why", e.fp32_engine_why);
  j.str("engine", be::engine_description());
  j.str("device", fm::device_name(e.backend->device()));
  j.str("device_requested", fm::config_name(cfg.run.device));
  j.str("device_why", e.device_why);
  j.str("backend", e.backend->describe());
  j.str("cpu_isa", be::cpu_isa());
  j.num("threads", double(be::num_threads()));
  j.str("blas_threading", be::blas_threading());
  j.str("omp_wait_policy", std::getenv("OMP_WAIT_POLICY") ? std::getenv("OMP_WAIT_POLICY") : "");
  j.str("grouped_variant", o.grouped);
  j.str("bf16_weights", o.bf16_weights);
}

// Times of the timed training steps (after the warm-up ones), seconds.
struct StepTimes {
  double step_s = 0, step_min_s = 1e30, cpu_min_s = 1e30;
  double fwd_s = 0, bwd_s = 0, opt_s = 0;
  double first_loss = NAN, last_loss = NAN;
  std::vector<fm::profile::Entry> prof;  // phase profile of the timed steps
};

// o.warmup untimed and o.steps timed training steps (forward, backward,
// AdamW) of the configured model, as moe-train runs them.
StepTimes time_steps(const BenchOptions& o, fm::Backend& backend) {
  const fm::Config& cfg = o.cfg;
  const int64_t T = cfg.model.seq_len, B = cfg.train.batch_size, tokens = B * T;
  const int64_t warmup = o.warmup, steps = o.steps;
  StepTimes r;
  fm::ParamStore store(1, 0);
  fm::declare_parameters(cfg, store);
  store.finalize(backend);
  fm::init_parameters(cfg, store, cfg.train.seed, backend);
  auto dispatcher = fm::make_local_dispatcher(backend);
  fm::Transformer model(cfg, store, *dispatcher, backend);
  auto source = fm::make_train_source(cfg);
  fm::BatchLoader loader(*source, B, T, 0, 1);
  fm::Buffer<int32_t> tok{size_t(tokens)}, tgt{size_t(tokens)};
  fm::AdamWParams hp;
  hp.lr = cfg.train.lr;
  hp.beta1 = cfg.train.beta1;
  hp.beta2 = cfg.train.beta2;
  hp.eps = cfg.train.eps;
  hp.weight_decay = cfg.train.weight_decay;
  store.zero_grads();  // each update below leaves the gradients zero, as in moe-train
  const be::RegisteredWeights registered = fm::register_parameters(store);
  for (int64_t s = 0; s < warmup + steps; ++s) {
    if (s == warmup) {
      fm::profile::reset();
      fm::profile::set_enabled(true);
    }
    loader.load(s, tok.data(), tgt.data());
    const double c0 = cpu_s(), t0 = now_s();
    const double loss = model.forward(tok.data(), tgt.data(), B);
    const double t1 = now_s();
    model.backward(1.0);
    const double t2 = now_s();
    fm::adamw_update(store, hp, s + 1, fm::AdamWStepOptions{1.0f, true}, backend);
    const double t3 = now_s(), c3 = cpu_s();
    if (!std::isfinite(loss)) throw fm::Error("loss is not finite at bench step " + std::to_string(s));
    if (s == 0) r.first_loss = loss;
    r.last_loss = loss;
    if (s >= warmup) {
      r.fwd_s += t1 - t0;
      r.bwd_s += t2 - t1;
      r.opt_s += t3 - t2;
      r.step_s += t3 - t0;
      r.step_min_s = std::min(r.step_min_s, t3 - t0);
      r.cpu_min_s = std::min(r.cpu_min_s, c3 - c0);
    }
  }
  fm::profile::set_enabled(false);
  r.prof = fm::profile::snapshot();
  return r;
}

// The GEMM peaks, measured in this process (gemm_peak_gflops).
void write_peaks(Json& j, const PeakSet& peaks, bool bf16_ok) {
  j.begin("gemm_peak_gflops");
  j.num("fp32_2048", peaks.fp32_2048);
  j.num("bf16_2048", bf16_ok ? peaks.bf16_2048 : NAN);
  j.num("fp32_model_shapes", peaks.fp32_model);
  j.num("bf16_model_shapes", bf16_ok ? peaks.bf16_model : NAN);
  j.begin("shapes_fp32");
  for (auto& s : peaks.shapes) j.num(s.first, s.second.first);
  j.end();
  if (bf16_ok) {
    j.begin("shapes_bf16");
    for (auto& s : peaks.shapes) j.num(s.first, s.second.second);
    j.end();
  }
  j.end();
}

// --gemm-only: the grouped GEMM variants compared (grouped_gflops) on the
// experts' forward GEMM of E=8 at G = 1, 4, 16 (E·G problems of tokens/E
// rows, d -> 4d/G) and on the attention scores (B·H problems T x T x 64).
// Restores the fp32 engine and grouped variant it changes.
void compare_grouped_variants(Json& j, const fm::Config& cfg, double peak_secs, bool bf16_ok) {
  const int64_t T = cfg.model.seq_len, B = cfg.train.batch_size, tokens = B * T;
  const int64_t d = cfg.model.d_model;
  const int64_t rows = std::max<int64_t>(1, tokens / 8);
  struct Case {
    std::string name;
    int64_t count, M, N, K;
    bool tb;
  };
  std::vector<Case> cases;
  for (int64_t G : {1, 4, 16})
    cases.push_back({"experts E=8 G=" + std::to_string(G), 8 * G, rows, 4 * d / G, d, false});
  cases.push_back({"attention scores", B * cfg.n_heads(), T, T, cfg.model.head_dim, true});
  const auto saved_engine = be::fp32_engine();
  const auto saved_variant = be::grouped_variant();
  j.begin("grouped_gflops");
  for (const auto& c : cases) {
    j.begin(c.name + " " + std::to_string(c.count) + "x(" + std::to_string(c.M) + "x" + std::to_string(c.N) +
            "x" + std::to_string(c.K) + ")");
    for (auto v : {be::GroupedVariant::serial, be::GroupedVariant::omp_loop}) {
      const std::string vn = v == be::GroupedVariant::serial ? "serial" : "omp_loop";
      be::set_grouped_variant(v);
      be::set_fp32_engine(be::Fp32Engine::openblas);
      j.num("fp32_openblas_" + vn,
            be::measure_grouped_gflops(be::Precision::fp32, c.count, c.M, c.N, c.K, false, c.tb, peak_secs / 2));
      be::set_fp32_engine(be::Fp32Engine::onednn);
      j.num("fp32_onednn_" + vn,
            be::measure_grouped_gflops(be::Precision::fp32, c.count, c.M, c.N, c.K, false, c.tb, peak_secs / 2));
      if (bf16_ok)
        j.num("bf16_onednn_" + vn,
              be::measure_grouped_gflops(be::Precision::bf16, c.count, c.M, c.N, c.K, false, c.tb, peak_secs / 2));
    }
    j.end();
  }
  j.end();
  be::set_fp32_engine(saved_engine);
  be::set_grouped_variant(saved_variant);
}

// Resident set before the model was built and its peak after the steps, bytes.
struct Rss {
  int64_t base = 0, peak = 0;
};

// The step timings against the peaks: throughput, MFU, phase breakdown, memory.
void write_step_results(Json& j, const BenchOptions& o, const Engines& e, const fm::ModelCounts& counts,
                        const StepTimes& st, const PeakSet& peaks, const Rss& rss) {
  const fm::Config& cfg = o.cfg;
  const int64_t steps = o.steps, tokens = cfg.train.batch_size * cfg.model.seq_len;
  const double ms = 1e3 * st.step_s / double(steps);
  const double tps = double(tokens) * double(steps) / st.step_s;
  const double gflops = counts.model_flops_per_token * tps * 1e-9;
  const bool b16 = e.precision == be::Precision::bf16;
  const double peak2048 = b16 ? peaks.bf16_2048 : peaks.fp32_2048;
  const double peak_model = b16 ? peaks.bf16_model : peaks.fp32_model;
  j.num("steps", double(steps));
  j.num("warmup", double(o.warmup));
  j.num("tokens_per_s", tps);
  j.num("ms_per_step", ms);
  // Best step: robust to other processes on a shared machine (bench/ ratios use it).
  j.num("ms_per_step_min", 1e3 * st.step_min_s);
  j.num("tokens_per_s_best", double(tokens) / st.step_min_s);
  j.num("cpu_ms_per_step_min", 1e3 * st.cpu_min_s);
  // The time the ratios in bench/ should use: CPU time with one thread
  // (immune to other processes), the best wall-clock step otherwise.
  const bool one = be::num_threads() == 1;
  const double best_s = one ? st.cpu_min_s : st.step_min_s;
  j.str("best_basis", one ? "cpu time, 1 thread" : "wall time");
  j.num("ms_per_step_best", 1e3 * best_s);
  j.num("achieved_gflops_best", counts.model_flops_per_token * double(tokens) / best_s * 1e-9);
  j.num("fraction_of_fp32_2048_best", counts.model_flops_per_token * double(tokens) / best_s * 1e-9 / peaks.fp32_2048);
  j.num("model_flops_per_token", counts.model_flops_per_token);
  j.num("flops_per_token_law", counts.flops_per_token);
  j.num("achieved_gflops", gflops);
  j.num("mfu_vs_2048", gflops / peak2048);
  j.num("mfu_vs_model_shapes", gflops / peak_model);
  j.num("fraction_of_fp32_2048", gflops / peaks.fp32_2048);
  j.num("first_loss", st.first_loss);
  j.num("last_loss", st.last_loss);
  j.begin("phases_ms_per_step");
  j.num("forward", 1e3 * st.fwd_s / double(steps));
  j.num("backward", 1e3 * st.bwd_s / double(steps));
  j.num("optimizer", 1e3 * st.opt_s / double(steps));
  double gemm_total = 0;
  for (auto& p : st.prof) {
    j.num(p.name, 1e3 * p.seconds / double(steps));
    if (p.name == "gemm" || p.name == "grouped_gemm") gemm_total += p.seconds;
  }
  j.num("non_gemm", 1e3 * (st.step_s - gemm_total) / double(steps));
  j.end();
  j.begin("memory");
  const double min_b = analytic_min_bytes(cfg);
  j.num("peak_rss_bytes", double(rss.peak));
  j.num("baseline_rss_bytes", double(rss.base));
  j.num("analytic_min_bytes", min_b);
  j.num("ratio_to_min", double(rss.peak - rss.base) / min_b);
  j.end();
}

// The JSON object on stdout and, with --json-out, appended to that file as one line.
void emit(const std::string& text, const std::string& json_out) {
  std::cout << text << std::endl;
  if (!json_out.empty()) {
    std::ofstream f(json_out, std::ios::app);
    if (!f) throw fm::Error("cannot open --json-out file '" + json_out + "' for appending");
    f << text << "\n";
  }
}

int run(const fm::ParsedArgs& args) {
  const BenchOptions o = parse_options(args);
  const Engines e = set_up_engines(o);
  const fm::ModelCounts counts = fm::count_model(o.cfg.shape());
  Json j;
  write_setup(j, o, e, counts);

  StepTimes st;
  Rss rss;
  rss.base = proc_status_kb("VmRSS:") * 1024;
  if (!o.gemm_only) st = time_steps(o, *e.backend);
  rss.peak = proc_status_kb("VmHWM:") * 1024;

  const PeakSet peaks = measure_peaks(o.cfg, o.peak_secs, e.bf16_ok);  // now, in this process
  write_peaks(j, peaks, e.bf16_ok);
  if (o.gemm_only) compare_grouped_variants(j, o.cfg, o.peak_secs, e.bf16_ok);
  if (!o.gemm_only) write_step_results(j, o, e, counts, st, peaks, rss);
  emit(j.text(), o.json_out);
  return fm::kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  return finemoe::run_app("moe-bench", [&]() -> int {
    const std::vector<fm::AppOption> opts = {
        {"steps", "timed training steps", "5", true},
        {"warmup", "untimed steps before timing (JIT, page faults, caches)", "2", true},
        {"json-out", "append the JSON object as one line to this file", "", true},
        {"peak-seconds", "seconds per GEMM peak measurement", "0.3", true},
        {"gemm-only", "only measure the GEMM peaks (no model steps)", "0", false},
        {"fp32-engine",
         "fp32 GEMM library: auto | openblas | onednn (overrides train.fp32_engine, default auto: the faster at the "
         "model's GEMM shapes, measured at start-up)",
         "", true},
        {"grouped", "grouped GEMM variant: auto | serial | omp_loop | batched", "auto", true},
        {"bf16-weights", "bf16 weight copies: off | plain | blocked", "plain", true},
    };
    fm::ParsedArgs args = fm::parse_args(argc, argv, kUsage, opts);
    if (args.help) {
      std::cout << args.help_text << std::endl;
      return fm::kExitOk;
    }
    if (args.print_config) {
      args.config.validate(1);
      std::cout << args.config.to_ini();
      return fm::kExitOk;
    }
    return run(args);
  });
}
