#include "finemoe/trainer.hpp"

#include <sys/stat.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "finemoe/backend.hpp"
#include "finemoe/checkpoint.hpp"
#include "finemoe/collective.hpp"
#include "finemoe/comm.hpp"
#include "finemoe/comm_mpi.hpp"
#include "finemoe/counting.hpp"
#include "finemoe/data.hpp"
#include "finemoe/error.hpp"
#include "finemoe/final_eval.hpp"
#include "finemoe/device.hpp"
#include "finemoe/kernels.hpp"
#include "finemoe/log.hpp"
#include "finemoe/metrics.hpp"
#include "finemoe/model.hpp"
#include "finemoe/optimizer.hpp"
#include "finemoe/reduce.hpp"
#include "finemoe/run_lock.hpp"
#include "finemoe/signals.hpp"
#include "finemoe/trainer.hpp"
#if __has_include("finemoe/dispatcher_mpi.hpp")
#include "finemoe/dispatcher_mpi.hpp"
#define FINEMOE_HAVE_MPI_DISPATCHER 1
#endif

namespace fs = std::filesystem;

namespace finemoe {
namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Set-up steps that may fail on one rank alone go through this, so that no
// rank is left waiting in a collective (see collective.hpp).
template <typename F>
void collective(const Comm& comm, F&& fn) {
  run_collectively(comm, std::forward<F>(fn));
}

// Quick measured GEMM peak for MFU (a few ms at start-up), at the run's
// precision, in the backend's memory through its own kernels. Constant inputs:
// the timing does not depend on the values, only on them being normal
// numbers. A backend whose kernels are asynchronous must finish them before
// the clock is read (the CPU backend's are synchronous).
double measure_gemm_peak_flops(Backend& be) {
  const int64_t n = 512;
  DeviceBuffer<float> a(be), b(be), c(be);
  a.resize(n * n);
  b.resize(n * n);
  c.resize(n * n);
  be.fill(a.data(), n * n, 0.01f);
  be.fill(b.data(), n * n, 0.02f);
  be.gemm(false, false, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);  // warm-up
  double best = 1e30;
  for (int rep = 0; rep < 3; ++rep) {
    auto t0 = Clock::now();
    be.gemm(false, false, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
    best = std::min(best, seconds_since(t0));
  }
  return 2.0 * double(n) * n * n / best;
}

std::vector<RoutingStats> global_routing_stats(const std::vector<RoutingStats>& local, const Comm& comm) {
  std::vector<RoutingStats> out = local;
  for (RoutingStats& s : out) {
    comm.allreduce_sum(s.tokens_per_expert.data(), int64_t(s.tokens_per_expert.size()), Group::world);
    const double tokens = comm.allreduce_sum(double(s.tokens), Group::world);
    s.unserved_fraction = comm.allreduce_sum(s.unserved_fraction * double(s.tokens), Group::world) / tokens;
    s.router_entropy = comm.allreduce_sum(s.router_entropy * double(s.tokens), Group::world) / tokens;
    s.mean_experts_per_token = comm.allreduce_sum(s.mean_experts_per_token * double(s.tokens), Group::world) / tokens;
    s.balance_loss = comm.allreduce_sum(s.balance_loss * double(s.tokens), Group::world) / tokens;
    s.z_loss = comm.allreduce_sum(s.z_loss * double(s.tokens), Group::world) / tokens;
    comm.allreduce_sum(s.selected_per_expert.data(), int64_t(s.selected_per_expert.size()), Group::world);
    s.tokens = int64_t(tokens);
  }
  return out;
}

// The GEMM set-up of a run: what train.precision and train.fp32_engine
// resolved to, and why.
struct GemmSetup {
  backend::Precision precision = backend::Precision::fp32;
  backend::Fp32Engine engine = backend::Fp32Engine::openblas;
  std::string precision_why, engine_why;
};

// Explicit requests that this process cannot honour (bf16 without native
// bf16, onednn without oneDNN) fail here, before anything is written; `auto`
// is decided later (decide_gemm_setup), once a resumed checkpoint is known.
void check_gemm_requests(const Config& cfg) {
  std::string why;
  if (cfg.train.precision != PrecisionChoice::automatic) backend::resolve_precision(cfg.train.precision, &why, {});
  if (cfg.train.fp32_engine != Fp32EngineChoice::automatic)
    backend::resolve_fp32_engine(cfg.train.fp32_engine, &why, {});
}

// Rank 0's decision (the caller broadcasts it). `resumed`: the GEMM set-up
// the checkpoint recorded (TrainState::precision / fp32_engine; "" unknown),
// or nullptr for a fresh run. With `auto` a resumed run reuses the
// checkpoint's choice, so that it computes exactly as the uninterrupted run
// would; an explicit request that differs is honoured with a warning.
// Changes neither the precision nor the engine of this process.
GemmSetup decide_gemm_setup(const Config& cfg, const TrainState* resumed,
                            const std::vector<backend::GemmShape>& shapes) {
  GemmSetup g;
  const std::string not_exact = "the resumed run is not bit-exact with an uninterrupted one";
  // ---- precision
  const std::string ck_prec = resumed ? resumed->precision : "";
  const bool auto_prec = cfg.train.precision == PrecisionChoice::automatic;
  std::string avail;
  if (auto_prec && !ck_prec.empty() &&
      (ck_prec == "fp32" || backend::bf16_available(&avail))) {
    g.precision = ck_prec == "bf16" ? backend::Precision::bf16 : backend::Precision::fp32;
    g.precision_why = "auto: " + ck_prec + ", from the checkpoint (the choice of the run it continues)";
  } else {
    g.precision = backend::resolve_precision(cfg.train.precision, &g.precision_why, shapes);
    const std::string now = backend::precision_name(g.precision);
    if (resumed && ck_prec.empty() && auto_prec)
      g.precision_why += " (the checkpoint does not record its resolved precision)";
    else if (resumed && ck_prec != now && auto_prec)
      log::warn("the checkpoint's precision %s is not available here (%s): resolved auto anew to %s, so %s",
                ck_prec.c_str(), avail.c_str(), now.c_str(), not_exact.c_str());
    else if (resumed && ck_prec != now)
      log::warn("train.precision %s differs from the checkpoint's %s: %s", now.c_str(), ck_prec.c_str(),
                not_exact.c_str());
  }
  // ---- fp32 engine
  const std::string ck_eng = resumed ? resumed->fp32_engine : "";
  const bool auto_eng = cfg.train.fp32_engine == Fp32EngineChoice::automatic;
  if (auto_eng && !ck_eng.empty() && (ck_eng == "openblas" || backend::onednn_built())) {
    g.engine = backend::fp32_engine_from_name(ck_eng);
    g.engine_why = "auto: " + ck_eng + ", from the checkpoint (the choice of the run it continues)";
  } else {
    g.engine = backend::resolve_fp32_engine(cfg.train.fp32_engine, &g.engine_why, shapes, g.precision);
    const std::string now = backend::fp32_engine_name(g.engine);
    if (resumed && !ck_eng.empty() && ck_eng != now && auto_eng)
      log::warn("the checkpoint's fp32 engine %s is not in this build: resolved auto anew to %s, so %s",
                ck_eng.c_str(), now.c_str(), not_exact.c_str());
    else if (resumed && !ck_eng.empty() && ck_eng != now)
      log::warn("train.fp32_engine %s differs from the checkpoint's %s: %s", now.c_str(), ck_eng.c_str(),
                not_exact.c_str());
  }
  return g;
}

// "precision\nengine\nprecision_why\nengine_why" (the reasons are one line each).
std::string encode(const GemmSetup& g) {
  return backend::precision_name(g.precision) + "\n" + backend::fp32_engine_name(g.engine) + "\n" +
         g.precision_why + "\n" + g.engine_why;
}
GemmSetup decode(const std::string& text) {
  std::vector<std::string> f;
  size_t a = 0;
  for (size_t b; (b = text.find('\n', a)) != std::string::npos; a = b + 1) f.push_back(text.substr(a, b - a));
  f.push_back(text.substr(a));
  if (f.size() != 4) throw Error("GEMM set-up from rank 0 is malformed: '" + text + "'");
  GemmSetup g;
  g.precision = f[0] == "bf16" ? backend::Precision::bf16 : backend::Precision::fp32;
  g.engine = backend::fp32_engine_from_name(f[1]);
  g.precision_why = f[2];
  g.engine_why = f[3];
  return g;
}

std::string fmt_aux(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.5f", x);
  return buf;
}

void print_routing(int64_t step, const std::vector<RoutingStats>& stats) {
  for (size_t l = 0; l < stats.size(); ++l) {
    const auto& s = stats[l];
    if (s.tokens_per_expert.empty()) continue;
    double mn = 1e300, mx = 0, sum = 0, sq = 0;
    for (int64_t n : s.tokens_per_expert) {
      mn = std::min(mn, double(n));
      mx = std::max(mx, double(n));
      sum += double(n);
      sq += double(n) * double(n);
    }
    const double k = double(s.tokens_per_expert.size()), mean = sum / k;
    const double cv = mean > 0 ? std::sqrt(std::max(0.0, sq / k - mean * mean)) / mean : 0.0;
    log::info("  routing step %lld block %zu: tokens/expert min %.0f mean %.1f max %.0f cv %.3f | "
              "experts/token %.2f | unserved %.4f | router entropy %.3f nats | balance %.4f | z %.3f",
              (long long)step, l, mn, mean, mx, cv, s.mean_experts_per_token, s.unserved_fraction,
              s.router_entropy, s.balance_loss, s.z_loss);
  }
}


// ---- the run, phase by phase -------------------------------------------------
// train() below is a sequence of named phases over one Run. Every rank runs
// the same phases in the same order, and each phase makes its collective
// calls in a fixed order, so that the ranks always meet in the same
// collective.

// Everything one run holds, filled in by the phases. The members are declared
// in the order the phases build them, so that they are destroyed in reverse
// (the bf16 weight registration first, then the metrics file, ..., the
// run-directory lock, the data, the model before its dispatcher and parameter
// store, the communicator last).
struct Run {
  explicit Run(const Config& c)
      : cfg(c), comm_impl(make_mpi_comm(int(cfg.parallel.expert_parallel))), comm(*comm_impl) {}
  Run(const Run&) = delete;
  Run& operator=(const Run&) = delete;

  const Config cfg;  // validated by agree_start_up
  // The communicator (host MPI: its buffers are host memory, as are the CPU
  // backend's); every phase uses it through the Comm interface.
  const std::unique_ptr<Comm> comm_impl;
  const Comm& comm;
  // set_up_backend
  std::string device_why;
  Backend* be = nullptr;
  // build_model
  ParamStore store{comm.ep_size(), comm.ep_rank()};
  std::unique_ptr<Dispatcher> dispatcher;
  std::optional<Transformer> model;
  ModelCounts counts;
  // open_data
  std::unique_ptr<TokenSource> train_src, val_src;
  std::optional<BatchLoader> loader, val_loader;
  int64_t B = 0, T = 0;       // this rank's sequences per step, tokens per sequence
  int64_t global_tokens = 0;  // tokens per step over all ranks
  std::vector<int32_t> tokens, targets;
  double entropy = 0, entropy_err = 0;  // the source's entropy rate (NaN: unknown)
  // resume_or_init
  TrainState state;
  std::string resume_from;  // the checkpoint resumed from; empty for a fresh run
  RunDirLock run_lock;      // held until train() returns (or the process dies)
  CheckpointOwnership owned;
  // agree_gemm_setup
  GemmSetup gemm;
  // open_metrics (rank 0 only) and train()
  std::unique_ptr<MetricsWriter> metrics;
  double peak_flops = 0;  // measured fp32 GEMM peak summed over the ranks, for MFU
  // run_steps: bf16 GEMMs convert each weight once per optimizer step (backend.hpp)
  std::unique_ptr<backend::RegisteredWeights> registered;

  // The router's part of the objective, from the config.
  bool aux_on() const { return cfg.balance_loss_coef() > 0 || (!cfg.dense() && cfg.moe.z_loss > 0); }
  bool selection_bias() const {
    return !cfg.dense() && cfg.routing() == Routing::token_choice && cfg.moe.bias_update_rate > 0;
  }
};

// Log rank, config validation against the world size, thread pools, and the
// explicit GEMM requests checked on every rank.
void agree_start_up(Run& run) {
  log::set_rank(run.comm.rank());
  run.cfg.validate(run.comm.size());
  // train.threads sets every pool (OpenMP's and OpenBLAS's), as moe-bench
  // does: the benchmark must measure the set-up the trainer runs.
  backend::set_num_threads(int(run.cfg.train.threads));

  // GEMM precision and fp32 engine: explicit requests are checked now, on
  // every rank (each must be able to run them); what `auto` means is decided
  // after the resume (agree_gemm_setup), by rank 0 alone.
  collective(run.comm, [&] { check_gemm_requests(run.cfg); });
}

// The device (run.device) and its Backend, the same on every rank.
void set_up_backend(Run& run) {
  // Rank 0 resolves the request and broadcasts the device it chose and why, as
  // for the GEMM set-up, so that the ranks never run different backends;
  // every rank then takes that device's backend (a rank that cannot run it
  // fails the start-up on all ranks). cuda is refused by name in this build.
  const Comm& comm = run.comm;
  std::string decision;
  collective(comm, [&] {
    if (comm.rank() != 0) return;
    std::string why;
    decision = device_name(backend_for(run.cfg.run.device, &why).device()) + "\n" + why;
  });
  comm.broadcast(decision, 0);
  const size_t nl = decision.find('\n');
  if (nl == std::string::npos) throw Error("device choice from rank 0 is malformed: '" + decision + "'");
  run.device_why = decision.substr(nl + 1);
  const DeviceChoice chosen = decision.substr(0, nl) == device_name(Device::cuda) ? DeviceChoice::cuda : DeviceChoice::cpu;
  collective(comm, [&] { run.be = &backend_for(chosen); });
}

// Parameters (declared, allocated, initialised from train.seed), the
// dispatcher and the Transformer with its activations.
void build_model(Run& run) {
  // Allocation can fail on one rank alone (less memory free on its node than
  // the start-up estimate assumed): agree on it, and name the keys.
  const Config& cfg = run.cfg;
  const Comm& comm = run.comm;
  collective(comm, [&] {
    try {
      declare_parameters(cfg, run.store);
      run.store.finalize(*run.be);  // in the backend's memory
      init_parameters(cfg, run.store, cfg.train.seed, *run.be);
#ifdef FINEMOE_HAVE_MPI_DISPATCHER
      run.dispatcher = make_dispatcher(comm, *run.be);  // keeps `comm`; talks to no rank yet
#else
      if (comm.ep_size() > 1)
        throw ConfigError("config key 'parallel.expert_parallel': this build has no MPI dispatcher");
      run.dispatcher = make_local_dispatcher(*run.be);
#endif
    } catch (const std::bad_alloc&) {
      throw Error("out of memory allocating the model (model.d_model " + std::to_string(cfg.model.d_model) +
                  ", model.n_blocks " + std::to_string(cfg.model.n_blocks) + ", moe.experts " +
                  std::to_string(cfg.moe.experts) + ", train.batch_size " + std::to_string(cfg.train.batch_size) +
                  "): make the model or the batch smaller");
    }
  });
  collective(comm, [&] {
    try {
      run.model.emplace(cfg, run.store, *run.dispatcher, *run.be);
    } catch (const std::bad_alloc&) {
      throw Error("out of memory allocating the model's activations (model.d_model " +
                  std::to_string(cfg.model.d_model) + ", model.n_blocks " + std::to_string(cfg.model.n_blocks) +
                  ", train.batch_size " + std::to_string(cfg.train.batch_size) + ", model.seq_len " +
                  std::to_string(cfg.model.seq_len) + "): make the model or the batch smaller");
    }
  });
  run.counts = count_model(cfg.shape());
}

// The training and validation token sources, this rank's batch loaders and
// token buffers.
void open_data(Run& run) {
  const Config& cfg = run.cfg;
  const Comm& comm = run.comm;
  collective(comm, [&] {
    run.train_src = make_train_source(cfg);
    run.val_src = make_val_source(cfg);
  });
  run.loader.emplace(*run.train_src, cfg.train.batch_size, cfg.model.seq_len, comm.rank(), comm.size());
  run.val_loader.emplace(*run.val_src, cfg.train.batch_size, cfg.model.seq_len, comm.rank(), comm.size());
  run.B = run.loader->local_batch();
  run.T = cfg.model.seq_len;
  run.global_tokens = run.loader->tokens_per_step();
  run.tokens.resize(size_t(run.B * run.T));
  run.targets.resize(size_t(run.B * run.T));
  run.entropy = run.train_src->entropy_rate(&run.entropy_err);
}

// A stop requested during the set-up so far (collective): nothing is written
// yet, so the run exits 75 with nothing to lose (the job script requeues).
bool stop_before_writing(const Run& run) {
  if (!run.comm.any(stop_requested())) return false;
  log::info("stop signal received during start-up: exiting with code %d before the first step, nothing written",
            int(kExitPreempted));
  return true;
}

// The run directory (created, locked by rank 0) and the starting state:
// resumed from a checkpoint (run.resume) or the fresh initialisation.
void resume_or_init(Run& run) {
  const Config& cfg = run.cfg;
  const Comm& comm = run.comm;
  run.state.seed = cfg.train.seed;
  collective(comm, [&] {
    if (comm.rank() == 0) {
      std::error_code ec;
      fs::create_directories(fs::path(cfg.run.dir) / "checkpoints", ec);
      if (ec) throw Error("run.dir: cannot create '" + cfg.run.dir + "/checkpoints': " + ec.message());
      run.run_lock = RunDirLock(cfg.run.dir);  // before anything in the directory is read or written
    }
  });
  // Pruning and overwriting are limited to this run's own checkpoints (checkpoint.hpp).
  if (cfg.run.resume == "auto") {
    collective(comm, [&] { run.resume_from = resume_latest(cfg.run.dir, run.store, run.state, cfg, comm); });
  } else if (cfg.run.resume != "never") {
    run.resume_from = cfg.run.resume;
    collective(comm, [&] { run.state = load_checkpoint(run.resume_from, run.store, cfg, comm); });
  } else if (comm.rank() == 0 && !checkpoint_files(cfg.run.dir).empty()) {
    log::warn("run.resume=never: the checkpoints already in %s/checkpoints are kept (never pruned or overwritten)",
              cfg.run.dir.c_str());
  }
  if (!run.resume_from.empty()) {
    std::error_code ec;
    if (fs::equivalent(fs::path(run.resume_from).parent_path(), fs::path(cfg.run.dir) / "checkpoints", ec))
      run.owned.history_up_to = run.state.step;
  }
}

// GEMM precision and fp32 engine, the same on every rank.
void agree_gemm_setup(Run& run) {
  // Rank 0 decides and broadcasts, so that the ranks never mix precisions or
  // engines (each would otherwise time `auto` itself, and two measurements
  // can disagree). `auto` times the candidates at this model's own GEMM
  // shapes, unless a resumed checkpoint recorded the run's choice.
  const Config& cfg = run.cfg;
  const Comm& comm = run.comm;
  std::string decision;
  collective(comm, [&] {
    if (comm.rank() != 0) return;
    const int64_t local_tokens = cfg.train.batch_size / comm.size() * cfg.model.seq_len;
    decision = encode(decide_gemm_setup(cfg, run.resume_from.empty() ? nullptr : &run.state,
                                        backend::model_gemm_shapes(cfg.model.d_model, cfg.d_expert(), local_tokens)));
  });
  comm.broadcast(decision, 0);
  collective(comm, [&] {
    run.gemm = decode(decision);
    backend::set_precision(run.gemm.precision);
    backend::set_fp32_engine(run.gemm.engine);
  });
  // What every rank now runs, read back from its backend: identical, or no
  // rank starts (every rank sees the same list, so all throw together).
  const std::vector<std::string> ranks_setup = comm.allgather(
      backend::precision_name(backend::precision()) + " " + backend::fp32_engine_name(backend::fp32_engine()));
  for (size_t r = 1; r < ranks_setup.size(); ++r)
    if (ranks_setup[r] != ranks_setup[0])
      throw Error("GEMM set-up differs between ranks: rank 0 runs " + ranks_setup[0] + ", rank " +
                  std::to_string(r) + " " + ranks_setup[r]);
  // Checkpoints record what this run computes with.
  run.state.precision = backend::precision_name(run.gemm.precision);
  run.state.fp32_engine = backend::fp32_engine_name(run.gemm.engine);
}

// The start-up summary: version, ranks, device, model, MoE, balancing,
// parameter and FLOP counts, memory, GEMM set-up, data, batch, resume point.
void log_run_summary(const Run& run) {
  const Config& cfg = run.cfg;
  const Comm& comm = run.comm;
  const ModelCounts& counts = run.counts;
  const int64_t T = run.T;
  log::info("finemoe %s (%s) | %d rank(s): EP %d x DP %d | %d thread(s)/rank", FINEMOE_VERSION, FINEMOE_GIT,
            comm.size(), comm.ep_size(), comm.dp_size(), backend::num_threads());
  log::info("device: %s (%s) | backend: %s", device_name(run.be->device()).c_str(), run.device_why.c_str(),
            run.be->describe().c_str());
  log::info("model: d_model %lld, %lld blocks, %lld heads, seq %lld, vocab %lld, ffn %s", (long long)cfg.model.d_model,
            (long long)cfg.model.n_blocks, (long long)cfg.n_heads(), (long long)T, (long long)cfg.model.vocab_size,
            config_name(cfg.model.ffn).c_str());
  if (!cfg.dense())
    log::info("moe: E %lld, G %lld -> %lld experts of width %lld, %s routing (%s)", (long long)cfg.moe.experts,
              (long long)cfg.moe.granularity, (long long)cfg.n_experts(), (long long)cfg.d_expert(),
              config_name(cfg.moe.routing).c_str(),
              cfg.routing() == Routing::expert_choice
                  ? ("group " + std::to_string(cfg.moe.group_size) + ", capacity " + std::to_string(cfg.expert_capacity())).c_str()
                  : ("top-" + std::to_string(cfg.top_k()) + ", capacity factor " + std::to_string(cfg.moe.capacity_factor)).c_str());
  const double balance_coef = cfg.balance_loss_coef();
  if (!cfg.dense())
    log::info("balancing: balance loss %g%s | z-loss %g | selection bias rate %g (aux losses logged apart from the "
              "cross-entropy loss)",
              balance_coef, cfg.moe.balance_loss ? "" : " (auto)", cfg.moe.z_loss, cfg.moe.bias_update_rate);
  log::info("params: N %.4g (law, non-embedding, router excluded) | N_active %.4g | embedding %.4g | router %.4g | "
            "total stored %.4g",
            counts.N, counts.N_active, counts.embedding_params, counts.router_params, counts.total_params);
  log::info("FLOPs/token: %.4g (law: c_f=6, c_r=14) | %.4g incl. attention and head (for MFU)", counts.flops_per_token,
            counts.model_flops_per_token);
  log::info("memory/rank: replicated %.2f MiB, expert shard %.2f MiB (params+grads+AdamW)",
            double(run.store.local_bytes(ParamClass::replicated)) / 1048576.0,
            double(run.store.local_bytes(ParamClass::expert)) / 1048576.0);
  log::info("precision: %s (%s) | engine: %s (fp32 engine %s) | the same on all %d rank(s) | %d threads, "
            "OpenBLAS threading %s",
            backend::precision_name(run.gemm.precision).c_str(), run.gemm.precision_why.c_str(),
            backend::engine_description().c_str(), run.gemm.engine_why.c_str(), comm.size(), backend::num_threads(),
            backend::blas_threading().c_str());
  if (std::isfinite(run.entropy))
    log::info("data: %s | entropy rate %.4f +- %.4f nats/token (irreducible loss)", run.train_src->describe().c_str(),
              run.entropy, run.entropy_err);
  else
    log::info("data: %s", run.train_src->describe().c_str());
  log::info("batch: %lld sequences x %lld tokens = %lld tokens/step; %lld steps = %.4g tokens",
            (long long)cfg.train.batch_size, (long long)T, (long long)run.global_tokens, (long long)cfg.train.steps,
            double(run.global_tokens) * double(cfg.train.steps));
  if (!run.resume_from.empty())
    log::info("resumed from %s at step %lld", run.resume_from.c_str(), (long long)run.state.step);
}

// Rank 0 writes config.ini and opens metrics.h5 (continued after a resume).
void open_metrics(Run& run) {
  const Config& cfg = run.cfg;
  collective(run.comm, [&] {
    if (run.comm.rank() == 0) {
      std::ofstream(fs::path(cfg.run.dir) / "config.ini") << cfg.to_ini();
      run.metrics = std::make_unique<MetricsWriter>((fs::path(cfg.run.dir) / "metrics.h5").string(), cfg,
                                                    run.counts, run.entropy,
                                                    run.resume_from.empty() ? -1 : run.state.step);
    }
  });
}

// A run whose checkpoint already reached train.steps: nothing to do.
bool already_complete(Run& run, TrainResult& result) {
  if (run.state.step < run.cfg.train.steps) return false;
  log::info("run already completed %lld of %lld steps; nothing to do", (long long)run.state.step,
            (long long)run.cfg.train.steps);
  if (run.metrics) run.metrics->set_status("completed");
  result.steps_done = run.state.step;
  return true;
}

// A stop requested during start-up (collective): the state equals the
// checkpoint it was resumed from (or the fresh init), so there is nothing to
// checkpoint.
bool stop_before_first_step(Run& run, TrainResult& result) {
  if (!run.comm.any(stop_requested())) return false;
  log::info("stop signal received during start-up: exiting with code %d before the first step, no checkpoint "
            "needed (requeue to resume from step %lld)",
            int(kExitPreempted), (long long)run.state.step);
  if (run.metrics) run.metrics->set_status("preempted");
  result.exit_code = kExitPreempted;
  result.steps_done = run.state.step;
  return true;
}

// What the step loop carries from one step to the next.
struct StepLoop {
  AdamWParams hp;
  Clock::time_point t_log;  // start of the current progress interval
  int64_t tokens_since_log = 0, steps_since_log = 0;
  int64_t a2a_bytes_mark = 0;  // the dispatcher's totals at the last progress line
  double a2a_seconds_mark = 0;
  int64_t warmup = 0;
};

// One step's global values (every rank holds the same).
struct StepValues {
  double loss = 0;   // cross-entropy
  double aux = 0;    // auxiliary router losses (0 unless aux_on)
  double gnorm = 0;  // gradient norm before clipping
};

// One optimizer step, state.step s -> s + 1: load the batch, forward,
// backward, gradient sum, global loss and norm, NaN check, clipped AdamW,
// selection-bias update. nullopt if it diverged (logged, metrics marked
// failed, state.step still s).
std::optional<StepValues> one_step(Run& run, StepLoop& loop) {
  const Config& cfg = run.cfg;
  const Comm& comm = run.comm;
  Transformer& model = *run.model;
  const int64_t B = run.B, T = run.T, global_tokens = run.global_tokens;
  const int64_t s = run.state.step;
  run.loader->load(s, run.tokens.data(), run.targets.data());
  const double local_loss = model.forward(run.tokens.data(), run.targets.data(), B);
  const double local_aux = model.aux_loss();
  model.backward(double(B * T) / double(global_tokens));  // objective: cross-entropy + aux
  sync_grads(run.store, comm);
  // `loss` stays the pure cross-entropy (the curve the scaling law is about);
  // the auxiliary router losses are reported on their own.
  StepValues v;
  v.loss = comm.allreduce_sum(local_loss * double(B * T), Group::world) / double(global_tokens);
  v.aux = run.aux_on() ? comm.allreduce_sum(local_aux * double(B * T), Group::world) / double(global_tokens) : 0.0;
  v.gnorm = global_grad_norm(run.store, comm, *run.be);
  if (!std::isfinite(v.loss) || !std::isfinite(v.aux) || !std::isfinite(v.gnorm)) {
    std::string bad = first_nonfinite_grad(run.store, *run.be);
    std::string where = std::isfinite(v.loss) ? "gradient of tensor '" + bad + "'" : "training loss";
    if (bad.empty() && std::isfinite(v.loss)) where = "gradient norm";
    if (std::isfinite(v.loss) && !std::isfinite(v.aux)) where = "auxiliary router loss (moe.balance_loss, moe.z_loss)";
    // Step numbers count from 1, as in the progress lines and metrics.h5.
    log::error("diverged at step %lld: NaN/Inf in %s (loss %g, grad norm %g); last good checkpoint kept",
               (long long)(s + 1), where.c_str(), v.loss, v.gnorm);
    if (run.metrics) run.metrics->set_status("failed");
    return std::nullopt;
  }
  AdamWStepOptions opt;
  opt.zero_grads = true;
  if (cfg.train.grad_clip > 0 && v.gnorm > cfg.train.grad_clip) opt.grad_scale = float(cfg.train.grad_clip / v.gnorm);
  loop.hp.lr = lr_at(s, cfg.train.steps, loop.warmup, cfg.train.lr, cfg.train.lr_min);
  adamw_update(run.store, loop.hp, s + 1, opt, *run.be);
  if (run.selection_bias()) {
    // Loads of the whole global batch: integer sums over every rank (exact,
    // so every rank applies the same update and the bias stays identical).
    std::vector<std::vector<int64_t>> loads = model.selection_counts();
    for (auto& l : loads) comm.allreduce_sum(l.data(), int64_t(l.size()), Group::world);
    model.update_selection_bias(loads, cfg.moe.bias_update_rate);
  }
  run.state.step = s + 1;
  return v;
}

// The progress line of the step just done (with all-to-all traffic and
// routing statistics) and its metrics.h5 rows; starts the next interval.
void log_progress(Run& run, StepLoop& loop, const StepValues& v) {
  const Comm& comm = run.comm;
  const int64_t step = run.state.step;
  const double dt = seconds_since(loop.t_log);
  TrainRow row;
  row.step = step;
  row.tokens = step * run.global_tokens;
  row.loss = v.loss;
  row.aux_loss = v.aux;
  row.lr = loop.hp.lr;
  row.grad_norm = v.gnorm;
  row.tokens_per_s = double(loop.tokens_since_log) / dt;
  row.mfu = run.peak_flops > 0 ? row.tokens_per_s * run.counts.model_flops_per_token / run.peak_flops : 0.0;
  log::info("step %6lld/%lld | tokens %.4g | loss %.4f%s | lr %.3e | grad norm %.3f | %.0f tok/s | MFU %.1f%%",
            (long long)row.step, (long long)run.cfg.train.steps, double(row.tokens), v.loss,
            run.aux_on() ? (" | aux " + fmt_aux(v.aux)).c_str() : "", loop.hp.lr, v.gnorm, row.tokens_per_s,
            100.0 * row.mfu);
  if (comm.ep_size() > 1) {
    // Expert-parallel traffic of this rank, for estimating cluster scaling.
    const Dispatcher& dispatcher = *run.dispatcher;
    const double n = double(std::max<int64_t>(1, loop.steps_since_log));
    log::info("  all-to-all (rank 0): %.3f MB/step sent off-rank, %.2f ms/step in collectives",
              double(dispatcher.total_bytes_sent() - loop.a2a_bytes_mark) / n / 1e6,
              1e3 * (dispatcher.total_comm_seconds() - loop.a2a_seconds_mark) / n);
    loop.a2a_bytes_mark = dispatcher.total_bytes_sent();
    loop.a2a_seconds_mark = dispatcher.total_comm_seconds();
  }
  std::vector<RoutingStats> rs = global_routing_stats(run.model->routing_stats(), comm);
  if (!rs.empty()) print_routing(step, rs);
  if (run.metrics) {
    run.metrics->append_train(row);
    if (!rs.empty()) run.metrics->append_routing(step, rs);
  }
  loop.t_log = Clock::now();
  loop.tokens_since_log = 0;
  loop.steps_since_log = 0;
}

// Validation loss over train.eval_tokens (at least one global batch), the
// same on every rank.
double evaluate(Run& run) {
  const int64_t B = run.B, T = run.T, global_tokens = run.global_tokens;
  const int64_t batches = std::max<int64_t>(1, (run.cfg.train.eval_tokens + global_tokens - 1) / global_tokens);
  double sum = 0;
  for (int64_t k = 0; k < batches; ++k) {
    run.val_loader->load(k, run.tokens.data(), run.targets.data());
    sum += run.model->evaluate(run.tokens.data(), run.targets.data(), B) * double(B * T);
  }
  return run.comm.allreduce_sum(sum, Group::world) / double(batches * global_tokens);
}

// evaluate(), its line and its metrics.h5 row. Returns the validation loss.
double evaluate_and_log(Run& run) {
  const double vl = evaluate(run);
  log::info("eval  step %6lld | val loss %.4f%s", (long long)run.state.step, vl,
            std::isfinite(run.entropy) ? (" (entropy floor " + std::to_string(run.entropy) + ")").c_str() : "");
  if (run.metrics) run.metrics->append_eval({run.state.step, run.state.step * run.global_tokens, vl});
  return vl;
}

// A checkpoint of the current state (collective).
void checkpoint(Run& run) {
  run.state.tokens = run.state.step * run.global_tokens;
  std::string path = save_checkpoint(run.cfg.run.dir, run.store, run.state, run.cfg, run.comm, run.owned);
  log::info("checkpoint: %s", path.c_str());
}

// The steps from state.step to train.steps, with progress lines, evaluations,
// checkpoints and the stop-signal check after each. True when all steps ran;
// false when the run diverged or was stopped (result says how).
bool run_steps(Run& run, TrainResult& result) {
  const Config& cfg = run.cfg;
  StepLoop loop;
  loop.hp = AdamWParams{cfg.train.lr, cfg.train.beta1, cfg.train.beta2, cfg.train.eps, cfg.train.weight_decay};
  loop.t_log = Clock::now();
  loop.warmup = cfg.warmup_steps();
  run.store.zero_grads();  // from here on each optimizer update leaves them zero
  // Registered until train() returns (the final evaluation included).
  run.registered.reset(new backend::RegisteredWeights(register_parameters(run.store)));
  while (run.state.step < cfg.train.steps) {
    const std::optional<StepValues> v = one_step(run, loop);
    if (!v) {
      result.exit_code = kExitDiverged;
      result.steps_done = run.state.step;
      return false;
    }
    loop.tokens_since_log += run.global_tokens;
    ++loop.steps_since_log;
    result.final_loss = v->loss;

    const int64_t step = run.state.step;
    const bool last = step == cfg.train.steps;
    if (step % cfg.train.log_every == 0 || last || step == 1) log_progress(run, loop, *v);
    if ((cfg.train.eval_every > 0 && step % cfg.train.eval_every == 0) || last) {
      result.final_eval_loss = evaluate_and_log(run);
      loop.t_log = Clock::now();
    }
    int sig = 0;
    const bool stop = run.comm.any(stop_requested(&sig));
    if (last || stop || (cfg.train.checkpoint_every > 0 && step % cfg.train.checkpoint_every == 0)) {
      checkpoint(run);
      loop.t_log = Clock::now();
    }
    if (stop && !last) {
      log::info("stop signal received: checkpointed at step %lld, exiting with code %d (requeue to resume)",
                (long long)step, int(kExitPreempted));
      if (run.metrics) run.metrics->set_status("preempted");
      result.exit_code = kExitPreempted;
      result.steps_done = step;
      return false;
    }
  }
  return true;
}

// After the last step: the final held-out evaluation (train.final_eval_tokens),
// metrics.h5 marked completed and closed, the closing line.
void finish(Run& run, TrainResult& result) {
  const Config& cfg = run.cfg;
  if (cfg.train.final_eval_tokens > 0) {  // the run's final loss for scaling-law fits
    double token_sd = 0;
    const FinalEval fe = final_evaluate(cfg, *run.model, *run.val_src, run.comm, run.state.step, &token_sd);
    log::info("final eval step %lld | loss %.4f +- %.4f (standard error over %lld held-out tokens; per-token sd %.3f)",
              (long long)fe.step, fe.loss, fe.stderr_loss, (long long)fe.tokens, token_sd);
    if (run.metrics) run.metrics->set_final_eval(fe);
  }
  if (run.metrics) {
    run.metrics->set_status("completed");
    run.metrics->close();  // checked: a failed final flush is exit 1, not a silent loss
  }
  log::info("done: %lld steps, %.4g tokens, final train loss %.4f, val loss %.4f", (long long)run.state.step,
            double(run.state.step * run.global_tokens), result.final_loss, result.final_eval_loss);
  result.steps_done = run.state.step;
}

}  // namespace

TrainResult train(const Config& cfg) {
  Run run(cfg);  // the communicator
  agree_start_up(run);
  set_up_backend(run);
  build_model(run);
  open_data(run);
  if (stop_before_writing(run)) {
    TrainResult stopped;
    stopped.exit_code = kExitPreempted;
    return stopped;
  }
  resume_or_init(run);
  agree_gemm_setup(run);
  log_run_summary(run);
  open_metrics(run);
  run.peak_flops = run.comm.allreduce_sum(measure_gemm_peak_flops(*run.be), Group::world);
  install_stop_signal_handlers();  // moe-train installed them at start; train() may run without it

  TrainResult result;
  result.final_eval_loss = std::numeric_limits<double>::quiet_NaN();
  if (already_complete(run, result) || stop_before_first_step(run, result)) return result;
  if (!run_steps(run, result)) return result;  // diverged or stopped
  finish(run, result);
  return result;
}

}  // namespace finemoe
