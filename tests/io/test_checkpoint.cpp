// Checkpoints on one rank: byte-exact round trip of params, moments and
// state; LATEST and retention; corrupt inputs (truncated, wrong format
// version, shape mismatch, missing dataset) give clear errors and leave the
// files untouched; a full disk or unwritable run directory gives an Error
// naming the path and keeps the previous checkpoint.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>

#include <functional>
#include <set>

#include "../backend/scrambled_backend.hpp"
#include "finemoe/checkpoint.hpp"
#include "finemoe/comm_mpi.hpp"
#include "finemoe/error.hpp"
#include "finemoe/h5layout.hpp"
#include "io/h5util.hpp"
#include "ckpt_test_util.hpp"
#include "io_test_util.hpp"

using namespace finemoe;
namespace hl = finemoe::h5layout;

namespace {

Config test_config() {
  Config c;
  c.train.checkpoint_keep = 2;
  return c;
}

// The state the trainer stores at `step`; load_checkpoint checks tokens and
// seed against the stored config.
TrainState state_at(const Config& c, int64_t step) {
  return {step, step * c.train.batch_size * c.model.seq_len, c.train.seed};
}

// Catches the expected error type and returns its message ("" if none);
// asserts nothing was printed to stderr (no HDF5 error stack).
// strict_stderr=false: only HDF5 error stacks are forbidden (Open MPI's I/O
// layer prints its own line for a failed write, which we cannot silence).
template <typename Err, typename F>
std::string error_of(F&& f, bool strict_stderr = true) {
  iotest::StderrCapture cap;
  std::string msg;
  try {
    f();
  } catch (const Err& e) {
    msg = e.what();
  } catch (const std::exception& e) {
    msg = std::string("WRONG TYPE: ") + e.what();
  }
  std::string err = cap.finish();
  if (strict_stderr) {
    EXPECT_TRUE(err.empty()) << "stderr: " << err;
  }
  EXPECT_EQ(err.find("HDF5-DIAG"), std::string::npos) << "stderr: " << err;
  EXPECT_EQ(msg.find("WRONG TYPE"), std::string::npos) << msg;
  return msg;
}

void expect_has(const std::string& msg, const std::string& needle) {
  EXPECT_NE(msg.find(needle), std::string::npos) << "'" << needle << "' not in: " << msg;
}

}  // namespace

TEST(Checkpoint, RoundTripIsByteExact) {
  MpiComm comm(1);
  CheckpointOwnership owned;  // this run's checkpoints (pruning)
  const std::string run = iotest::fresh_dir("ckpt_rt");
  const Config cfg = test_config();
  ParamStore a = iotest::make_store(1, 0);
  iotest::fill(a, 3);
  Config cfg_seed = cfg;
  cfg_seed.train.seed = 0xFEDCBA9876543210ull;  // odd bit pattern: the seed survives exactly
  TrainState st = state_at(cfg_seed, 37);
  st.precision = "bf16";  // not the defaults: the resolved GEMM set-up survives as stored
  st.fp32_engine = "onednn";
  const std::string path = save_checkpoint(run, a, st, cfg_seed, comm, owned);
  EXPECT_EQ(path, run + "/checkpoints/step_0000037.h5");
  EXPECT_EQ(latest_checkpoint(run), path);
  EXPECT_EQ(iotest::read_file(run + "/checkpoints/LATEST"), "step_0000037.h5\n");

  ParamStore b = iotest::make_store(1, 0);
  const TrainState got = load_checkpoint(path, b, cfg_seed, comm);
  EXPECT_EQ(got.step, st.step);
  EXPECT_EQ(got.tokens, st.tokens);
  EXPECT_EQ(got.seed, st.seed);
  EXPECT_EQ(got.precision, "bf16");
  EXPECT_EQ(got.fp32_engine, "onednn");
  EXPECT_EQ(iotest::mismatches(b, 3), 0);
  for (int c = 0; c < kNumParamClasses; ++c) {  // whole class buffers, padding included
    auto cls = ParamClass(c);
    EXPECT_EQ(std::memcmp(a.params(cls).data(), b.params(cls).data(), a.params(cls).size() * 4), 0);
    EXPECT_EQ(std::memcmp(a.moments_m(cls).data(), b.moments_m(cls).data(), a.params(cls).size() * 4), 0);
    EXPECT_EQ(std::memcmp(a.moments_v(cls).data(), b.moments_v(cls).data(), a.params(cls).size() * 4), 0);
  }

  // The file is plain HDF5 at global shapes with the documented names.
  h5::silence();
  h5::Handle f = h5::file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
  ASSERT_TRUE(f.valid());
  h5::Handle ds = h5::dataset(H5Dopen2(f, "/params/blocks.0.moe.w1", H5P_DEFAULT));
  EXPECT_EQ(h5::dims(ds), (std::vector<hsize_t>{8, 16, 8}));
  h5::Handle nested = h5::dataset(H5Dopen2(f, "/adam_v/blocks.1/nested name", H5P_DEFAULT));
  EXPECT_TRUE(nested.valid());
  h5::Handle buf = h5::dataset(H5Dopen2(f, "/buffers/blocks.1/odd buffer", H5P_DEFAULT));
  EXPECT_EQ(h5::dims(buf), (std::vector<hsize_t>{2, 3}));
  h5::Handle state = h5::group(H5Gopen2(f, hl::kCkptState, H5P_DEFAULT));
  std::string hash, ini;
  int64_t version = 0;
  ASSERT_TRUE(h5::read_attr_str(state, hl::kCkptConfigHash, hash));
  ASSERT_TRUE(h5::read_attr_str(state, hl::kCkptConfigIni, ini));
  ASSERT_TRUE(h5::read_attr_i64(state, hl::kCkptFormatVersion, version));
  EXPECT_EQ(hash, cfg_seed.shape_keys_hash());
  EXPECT_EQ(ini, cfg_seed.to_ini());
  EXPECT_EQ(version, hl::kCheckpointFormatVersion);
  EXPECT_EQ(version, 4);
  std::string prec, engine;
  ASSERT_TRUE(h5::read_attr_str(state, hl::kCkptPrecision, prec));
  ASSERT_TRUE(h5::read_attr_str(state, hl::kCkptFp32Engine, engine));
  EXPECT_EQ(prec, "bf16");
  EXPECT_EQ(engine, "onednn");
  EXPECT_EQ(std::system(("h5dump -H '" + path + "' > /dev/null 2>&1").c_str()), 0);
}

TEST(Checkpoint, TrainingKeysMayChangeOnResume) {
  MpiComm comm(1);
  CheckpointOwnership owned;  // this run's checkpoints (pruning)
  const std::string run = iotest::fresh_dir("ckpt_train_keys");
  Config cfg = test_config();
  ParamStore a = iotest::make_store(1, 0);
  iotest::fill(a);
  const std::string path = save_checkpoint(run, a, state_at(cfg, 5), cfg, comm, owned);
  cfg.train.steps = 99999;
  cfg.train.lr = 0.5;
  cfg.train.eval_every = 7;
  ParamStore b = iotest::make_store(1, 0);
  EXPECT_NO_THROW(load_checkpoint(path, b, cfg, comm));
  EXPECT_EQ(iotest::mismatches(b), 0);
}

TEST(Checkpoint, KeepsTheNewestAndLatestNamesTheLastOne) {
  MpiComm comm(1);
  CheckpointOwnership owned;  // this run's checkpoints (pruning)
  const std::string run = iotest::fresh_dir("ckpt_keep");
  const Config cfg = test_config();  // keep 2
  ParamStore a = iotest::make_store(1, 0);
  EXPECT_EQ(latest_checkpoint(run), "");
  for (int64_t s : {10, 20, 30, 40}) {
    iotest::fill(a, s);
    save_checkpoint(run, a, state_at(cfg, s), cfg, comm, owned);
  }
  const std::string d = run + "/checkpoints/";
  EXPECT_FALSE(iotest::file_exists(d + "step_0000010.h5"));
  EXPECT_FALSE(iotest::file_exists(d + "step_0000020.h5"));
  EXPECT_TRUE(iotest::file_exists(d + "step_0000030.h5"));
  EXPECT_TRUE(iotest::file_exists(d + "step_0000040.h5"));
  EXPECT_FALSE(iotest::file_exists(d + ".tmp_step_0000040.h5"));
  EXPECT_EQ(latest_checkpoint(run), d + "step_0000040.h5");
  // Resuming from an older checkpoint and saving: the new one is never deleted.
  Config keep1 = cfg;
  keep1.train.checkpoint_keep = 1;
  iotest::fill(a, 35);
  save_checkpoint(run, a, state_at(keep1, 35), keep1, comm, owned);
  EXPECT_EQ(latest_checkpoint(run), d + "step_0000035.h5");
  EXPECT_TRUE(iotest::file_exists(d + "step_0000035.h5"));
  ParamStore b = iotest::make_store(1, 0);
  EXPECT_EQ(load_checkpoint(latest_checkpoint(run), b, cfg, comm).step, 35);
  EXPECT_EQ(iotest::mismatches(b, 35), 0);
}

TEST(Checkpoint, CorruptInputsGiveClearErrorsAndTouchNothing) {
  MpiComm comm(1);
  CheckpointOwnership owned;  // this run's checkpoints (pruning)
  h5::silence();
  const std::string run = iotest::fresh_dir("ckpt_corrupt");
  const Config cfg = test_config();
  ParamStore a = iotest::make_store(1, 0);
  iotest::fill(a, 1);
  const std::string good = save_checkpoint(run, a, state_at(cfg, 1), cfg, comm, owned);
  const std::string bytes = iotest::read_file(good);

  const std::string trunc = run + "/trunc.h5", version = run + "/version.h5", missing = run + "/missing.h5",
                    text = run + "/text.h5", nobuf = run + "/nobuf.h5";
  iotest::write_file(trunc, bytes.substr(0, bytes.size() / 2));
  iotest::write_file(version, bytes);
  iotest::write_file(missing, bytes);
  iotest::write_file(nobuf, bytes);
  iotest::write_file(text, "not a checkpoint\n");
  {
    h5::Handle f = h5::file(H5Fopen(version.c_str(), H5F_ACC_RDWR, H5P_DEFAULT));
    h5::Handle st = h5::group(H5Gopen2(f, hl::kCkptState, H5P_DEFAULT));
    ASSERT_TRUE(h5::write_attr_i32(st, hl::kCkptFormatVersion, 99));
    h5::Handle g = h5::file(H5Fopen(missing.c_str(), H5F_ACC_RDWR, H5P_DEFAULT));
    ASSERT_GE(H5Ldelete(g, "/adam_v/blocks.0.moe.b1", H5P_DEFAULT), 0);
    h5::Handle n = h5::file(H5Fopen(nobuf.c_str(), H5F_ACC_RDWR, H5P_DEFAULT));
    ASSERT_GE(H5Ldelete(n, "/buffers/blocks.0.moe.router.bias", H5P_DEFAULT), 0);
  }
  std::map<std::string, std::string> before;
  for (const auto& p : {good, trunc, version, missing, text, nobuf}) before[p] = iotest::read_file(p);

  ParamStore b = iotest::make_store(1, 0);
  iotest::fill(b, 2);  // must stay as is on every failed load
  std::string msg = error_of<DataError>([&] { load_checkpoint(trunc, b, cfg, comm); });
  expect_has(msg, trunc);
  expect_has(msg, "truncated or corrupt");
  msg = error_of<DataError>([&] { load_checkpoint(version, b, cfg, comm); });
  expect_has(msg, version);
  expect_has(msg, "format_version 99");
  msg = error_of<DataError>([&] { load_checkpoint(missing, b, cfg, comm); });
  expect_has(msg, missing);
  expect_has(msg, "dataset /adam_v/blocks.0.moe.b1 missing");
  // A format_version 3 checkpoint must hold every buffer the model declares.
  msg = error_of<DataError>([&] { load_checkpoint(nobuf, b, cfg, comm); });
  expect_has(msg, nobuf);
  expect_has(msg, "dataset /buffers/blocks.0.moe.router.bias missing");
  msg = error_of<DataError>([&] { load_checkpoint(text, b, cfg, comm); });
  expect_has(msg, "not an HDF5 file");
  msg = error_of<DataError>([&] { load_checkpoint(run + "/nope.h5", b, cfg, comm); });
  expect_has(msg, run + "/nope.h5");
  expect_has(msg, "file not found");

  Config other = cfg;
  other.model.d_model = 256;
  other.moe.granularity = 4;
  other.model.ffn = Ffn::dense;
  msg = error_of<ConfigError>([&] { load_checkpoint(good, b, other, comm); });
  expect_has(msg, good);
  expect_has(msg, "model.d_model: checkpoint 128, current config 256");
  expect_has(msg, "moe.granularity: checkpoint 1, current config 4");
  expect_has(msg, "model.ffn: checkpoint moe, current config dense");
  EXPECT_EQ(msg.find("model.n_blocks"), std::string::npos) << msg;

  // A store whose tensor has another shape than the file's.
  ParamStore wrong(1, 0);
  wrong.add("wte", {32, 17}, ParamClass::replicated);
  wrong.finalize(cpu_backend());
  msg = error_of<DataError>([&] { load_checkpoint(good, wrong, cfg, comm); });
  expect_has(msg, "dataset /params/wte has shape [32, 16], expected float [32, 17]");
  // ... or a buffer of another shape.
  ParamStore wrong_buf = iotest::make_store(1, 0, 0);
  {
    ParamStore w(1, 0);
    for (const ParamInfo& p : wrong_buf.params()) w.add(p.name, p.global_shape, p.cls);
    w.add_buffer("blocks.0.moe.router.bias", {16});
    w.add_buffer("blocks.1/odd buffer", {2, 3});
    w.finalize(cpu_backend());
    msg = error_of<DataError>([&] { load_checkpoint(good, w, cfg, comm); });
    expect_has(msg, "dataset /buffers/blocks.0.moe.router.bias has another shape");
  }

  EXPECT_EQ(iotest::mismatches(b, 2), 0) << "a failed load modified the store";
  for (const auto& [p, data] : before) EXPECT_EQ(iotest::read_file(p), data) << p << " was modified";
  EXPECT_EQ(latest_checkpoint(run), good);
}

TEST(Checkpoint, UnwritableRunDirIsAnErrorNamingThePath) {
  MpiComm comm(1);
  CheckpointOwnership owned;  // this run's checkpoints (pruning)
  const std::string base = iotest::fresh_dir("ckpt_unwritable");
  iotest::write_file(base + "/afile", "x");
  const std::string run = base + "/afile/run";  // a path component is a regular file (root ignores chmod)
  ParamStore a = iotest::make_store(1, 0);
  std::string msg = error_of<Error>([&] { save_checkpoint(run, a, state_at(test_config(), 1), test_config(), comm, owned); });
  expect_has(msg, base + "/afile/run");
  expect_has(msg, "Not a directory");
}

// A file size limit (ulimit -f, as a Slurm job may have) below the
// checkpoint's size is refused before any file is created: Error naming the
// file and the limit; previous checkpoint and LATEST intact.
TEST(Checkpoint, FileSizeLimitIsRefusedUpFront) {
  MpiComm comm(1);
  CheckpointOwnership owned;  // this run's checkpoints (pruning)
  const std::string run = iotest::fresh_dir("ckpt_fsize");
  const Config cfg = test_config();
  ParamStore a = iotest::make_store(1, 0, 1 << 18);  // ~3 MiB checkpoint
  iotest::fill(a, 1);
  const std::string first = save_checkpoint(run, a, state_at(cfg, 1), cfg, comm, owned);
  const std::string first_bytes = iotest::read_file(first);
  ASSERT_GT(first_bytes.size(), 1u << 20);

  struct rlimit old;
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &old), 0);
  auto old_handler = ::signal(SIGXFSZ, SIG_IGN);
  struct rlimit small = old;
  small.rlim_cur = 64 * 1024;
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &small), 0);
  iotest::fill(a, 2);
  std::string msg = error_of<Error>([&] { save_checkpoint(run, a, state_at(cfg, 2), cfg, comm, owned); });
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &old), 0);
  ::signal(SIGXFSZ, old_handler);

  expect_has(msg, run + "/checkpoints/.tmp_step_0000002.h5");
  expect_has(msg, "file size limit (ulimit -f) is 0.1 MiB");
  EXPECT_FALSE(iotest::file_exists(run + "/checkpoints/.tmp_step_0000002.h5"));
  EXPECT_FALSE(iotest::file_exists(run + "/checkpoints/step_0000002.h5"));
  EXPECT_EQ(latest_checkpoint(run), first);
  EXPECT_EQ(iotest::read_file(first), first_bytes);
}

// A real full disk: a 2.5 MiB tmpfs holding one 1.5 MiB checkpoint. The next
// save is refused by the free-space check; with the check disabled it fails
// mid-write with ENOSPC. Both times: Error naming the file, no temp file left,
// the previous checkpoint and LATEST intact and loadable, and the process
// goes on (and later exits cleanly through MPI_Finalize). Needs permission to
// mount a tmpfs (root in a VM/CI container); skipped otherwise.
TEST(Checkpoint, DiskFullKeepsThePreviousCheckpoint) {
  MpiComm comm(1);
  CheckpointOwnership owned;  // this run's checkpoints (pruning)
  const std::string run = iotest::fresh_dir("ckpt_full");
  const std::string mount = "mount -t tmpfs -o size=2560k finemoe_io_test '" + run + "' > /dev/null 2>&1";
  if (std::system(mount.c_str()) != 0) GTEST_SKIP() << "cannot mount a tmpfs here (not root?)";
  const Config cfg = test_config();
  ParamStore a = iotest::make_store(1, 0, 1 << 17);  // ~1.5 MiB checkpoint
  iotest::fill(a, 1);
  const std::string first = save_checkpoint(run, a, state_at(cfg, 1), cfg, comm, owned);
  const std::string first_bytes = iotest::read_file(first);

  iotest::fill(a, 2);
  std::string msg = error_of<Error>([&] { save_checkpoint(run, a, state_at(cfg, 2), cfg, comm, owned); });
  expect_has(msg, run + "/checkpoints/.tmp_step_0000002.h5");
  expect_has(msg, "are free on " + run + "/checkpoints (disk full)");

  ::setenv("FINEMOE_TEST_NO_SPACE_CHECK", "1", 1);
  msg = error_of<Error>([&] { save_checkpoint(run, a, state_at(cfg, 3), cfg, comm, owned); }, /*strict_stderr=*/false);
  ::unsetenv("FINEMOE_TEST_NO_SPACE_CHECK");
  expect_has(msg, run + "/checkpoints/.tmp_step_0000003.h5");
  // Chunked datasets get their space when created (parallel HDF5 allocates
  // early), so ENOSPC may surface at creation or at the write.
  EXPECT_TRUE(msg.find("cannot write dataset") != std::string::npos ||
              msg.find("cannot create dataset") != std::string::npos)
      << msg;

  for (int s : {2, 3}) {
    char name[64];
    std::snprintf(name, sizeof name, "/checkpoints/.tmp_step_%07d.h5", s);
    EXPECT_FALSE(iotest::file_exists(run + name)) << name;
    std::snprintf(name, sizeof name, "/checkpoints/step_%07d.h5", s);
    EXPECT_FALSE(iotest::file_exists(run + name)) << name;
  }
  EXPECT_EQ(latest_checkpoint(run), first);
  EXPECT_EQ(iotest::read_file(first), first_bytes);
  ParamStore b = iotest::make_store(1, 0, 1 << 17);
  EXPECT_EQ(load_checkpoint(first, b, cfg, comm).step, 1);
  EXPECT_EQ(iotest::mismatches(b, 1), 0);
  EXPECT_EQ(std::system(("umount '" + run + "'").c_str()), 0);
}

// ---------------------------------------------------------------- integrity --

// Every tensor carries a Fletcher32 checksum that any HDF5 reader verifies; a
// byte changed in any tensor's stored data is a DataError naming the file and
// the tensor, for every tensor, and the load changes no file.
TEST(CheckpointIntegrity, EveryTensorIsChecksummedAndAChangedByteIsRefused) {
  MpiComm comm(1);
  CheckpointOwnership owned;
  const std::string run = iotest::fresh_dir("ckpt_sum");
  const Config cfg = test_config();
  ParamStore a = iotest::make_store(1, 0);
  iotest::fill(a, 4);
  const std::string good = save_checkpoint(run, a, state_at(cfg, 4), cfg, comm, owned);
  const std::string bytes = iotest::read_file(good);
  const auto extents = ckpttest::data_extents(good, a);
  ASSERT_GE(extents.size(), 3 * a.params().size() + a.buffers().size()) << "every tensor is chunked";
  {
    h5::Handle f = h5::file(H5Fopen(good.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
    for (const auto& e : extents) {
      h5::Handle ds = h5::dataset(H5Dopen2(f, e.dataset.c_str(), H5P_DEFAULT));
      h5::Handle dcpl = h5::plist(H5Dget_create_plist(ds));
      unsigned flags = 0, conf = 0;
      size_t n = 0;
      char name[16];
      EXPECT_GE(H5Pget_filter_by_id2(dcpl, H5Z_FILTER_FLETCHER32, &flags, &n, nullptr, sizeof name, name, &conf), 0)
          << e.dataset << " has no Fletcher32 filter";
    }
  }
  // One flipped byte in the middle of each tensor's first chunk.
  std::set<std::string> done;
  int refused = 0;
  for (const auto& e : extents) {
    if (!done.insert(e.dataset).second) continue;
    const std::string bad = run + "/flip" + std::to_string(refused) + ".h5";
    ckpttest::write_flipped(bad, bytes, e.offset + e.size / 2, 0x10);
    const uint64_t before = ckpttest::file_hash(bad);
    ParamStore b = iotest::make_store(1, 0);
    std::string msg = error_of<DataError>([&] { load_checkpoint(bad, b, cfg, comm); });
    expect_has(msg, bad);
    expect_has(msg, "checksum mismatch in tensor " + e.dataset);
    EXPECT_EQ(ckpttest::file_hash(bad), before);
    // h5dump verifies it too (exit status 1).
    if (refused == 0) {
      EXPECT_NE(std::system(("h5dump -d '" + e.dataset + "' '" + bad + "' > /dev/null 2>&1").c_str()), 0);
    }
    ++refused;
  }
  EXPECT_EQ(refused, int(3 * a.params().size() + a.buffers().size()));
  EXPECT_EQ(std::system(("h5dump '" + good + "' > /dev/null 2>&1").c_str()), 0);
}

// /state values are checked against the range and the stored config: step in
// [0, train.steps], tokens = step x batch x seq_len, seed = train.seed.
// DataError naming the file and the value; store and file untouched.
TEST(CheckpointIntegrity, StateValuesAreValidated) {
  MpiComm comm(1);
  CheckpointOwnership owned;
  h5::silence();
  const std::string run = iotest::fresh_dir("ckpt_state");
  Config cfg = test_config();
  cfg.train.steps = 40;
  ParamStore a = iotest::make_store(1, 0);
  iotest::fill(a, 20);
  const std::string good = save_checkpoint(run, a, state_at(cfg, 20), cfg, comm, owned);
  const std::string bytes = iotest::read_file(good);
  struct Case {
    const char* attr;
    int64_t value;
    std::string needle;
  } cases[] = {
      {hl::kCkptStep, -7, "/state/step = -7 is outside [0, train.steps = 40]"},
      {hl::kCkptStep, 1000000000000000LL, "/state/step = 1000000000000000 is outside [0, train.steps = 40]"},
      {hl::kCkptStep, 41, "/state/step = 41 is outside [0, train.steps = 40]"},
      {hl::kCkptTokens, 12345, "/state/tokens = 12345 but step 20 x train.batch_size 16 x model.seq_len 64 = 20480"},
      {hl::kCkptSeed, 99, "/state/seed = 99 but its config has train.seed 1234"},
  };
  int i = 0;
  for (const auto& c : cases) {
    const std::string path = run + "/edit" + std::to_string(i++) + ".h5";
    iotest::write_file(path, bytes);
    {
      h5::Handle f = h5::file(H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT));
      h5::Handle st = h5::group(H5Gopen2(f, hl::kCkptState, H5P_DEFAULT));
      ASSERT_TRUE(h5::write_attr_i64(st, c.attr, c.value));
    }
    const uint64_t before = ckpttest::file_hash(path);
    ParamStore b = iotest::make_store(1, 0);
    iotest::fill(b, 2);
    std::string msg = error_of<DataError>([&] { load_checkpoint(path, b, cfg, comm); });
    expect_has(msg, path);
    expect_has(msg, c.needle);
    EXPECT_EQ(iotest::mismatches(b, 2), 0) << "a refused load modified the store";
    EXPECT_EQ(ckpttest::file_hash(path), before);
  }
  // step == train.steps is a finished run, not an error.
  Config at20 = cfg;
  at20.train.steps = 20;
  ParamStore b = iotest::make_store(1, 0);
  EXPECT_EQ(load_checkpoint(good, b, at20, comm).step, 20);
}

// /state/precision and /state/fp32_engine (format_version 4): what the run
// resolved train.precision and train.fp32_engine to. Missing or unknown
// values in a version 4 file are refused; a version 3 file (written before
// they existed) means the OpenBLAS engine, the only one moe-train used then,
// and the precision its config requested, unknown ("") when that was auto.
TEST(CheckpointIntegrity, GemmSetupIsValidatedAndOlderVersionsMeanOpenblas) {
  MpiComm comm(1);
  CheckpointOwnership owned;
  h5::silence();
  const std::string run = iotest::fresh_dir("ckpt_gemm");
  ParamStore a = iotest::make_store(1, 0);
  iotest::fill(a, 4);
  auto edited = [&](const std::string& name, const Config& cfg, const std::function<void(hid_t)>& edit) {
    TrainState st = state_at(cfg, 4);
    st.precision = "fp32";
    st.fp32_engine = "onednn";
    const std::string saved = save_checkpoint(run, a, st, cfg, comm, owned);
    const std::string path = run + "/" + name + ".h5";
    iotest::write_file(path, iotest::read_file(saved));
    h5::Handle f = h5::file(H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT));
    h5::Handle g = h5::group(H5Gopen2(f, hl::kCkptState, H5P_DEFAULT));
    edit(g);
    return path;
  };
  const Config cfg = test_config();
  struct Bad {
    const char* name;
    std::function<void(hid_t)> edit;
    std::string needle;
  } bad[] = {
      {"no_precision", [](hid_t g) { ASSERT_GE(H5Adelete(g, hl::kCkptPrecision), 0); },
       "attribute /state/precision or fp32_engine missing, which format_version 4 requires"},
      {"no_engine", [](hid_t g) { ASSERT_GE(H5Adelete(g, hl::kCkptFp32Engine), 0); },
       "attribute /state/precision or fp32_engine missing"},
      {"fp16", [](hid_t g) { ASSERT_TRUE(h5::write_attr_str(g, hl::kCkptPrecision, "fp16")); },
       "/state/precision = 'fp16', expected fp32 or bf16"},
      {"mkl", [](hid_t g) { ASSERT_TRUE(h5::write_attr_str(g, hl::kCkptFp32Engine, "mkl")); },
       "/state/fp32_engine = 'mkl', expected openblas or onednn"},
  };
  for (const auto& c : bad) {
    const std::string path = edited(c.name, cfg, c.edit);
    ParamStore b = iotest::make_store(1, 0);
    iotest::fill(b, 2);
    const std::string msg = error_of<DataError>([&] { load_checkpoint(path, b, cfg, comm); });
    expect_has(msg, path);
    expect_has(msg, c.needle);
    EXPECT_EQ(iotest::mismatches(b, 2), 0) << "a refused load modified the store";
  }
  // Version 3: no attributes; the stored config's train.precision decides.
  auto as_v3 = [](hid_t g) {
    ASSERT_TRUE(h5::write_attr_i32(g, hl::kCkptFormatVersion, 3));
    ASSERT_GE(H5Adelete(g, hl::kCkptPrecision), 0);
    ASSERT_GE(H5Adelete(g, hl::kCkptFp32Engine), 0);
  };
  for (const auto& [requested, resolved] : std::vector<std::pair<std::string, std::string>>{
           {"fp32", "fp32"}, {"bf16", "bf16"}, {"auto", ""}}) {
    Config c = cfg;
    set_config_value(c, "train.precision", requested);
    const std::string path = edited("v3_" + requested, c, as_v3);
    ParamStore b = iotest::make_store(1, 0);
    const TrainState st = load_checkpoint(path, b, cfg, comm);  // train.precision may change on resume
    EXPECT_EQ(st.step, 4);
    EXPECT_EQ(st.precision, resolved) << "stored train.precision " << requested;
    EXPECT_EQ(st.fp32_engine, "openblas") << "stored train.precision " << requested;
    EXPECT_EQ(iotest::mismatches(b, 4), 0);
  }
}

// A format_version 1 checkpoint (before checksums; tests/io/data/ckpt_v1_step7.h5
// was written by save_checkpoint at commit 116ac05 from make_store(1, 0)
// filled with salt 7, default Config with checkpoint_keep 2, state
// {7, 7 x 16 x 64, 1234}) still loads exactly, with one warning per process.
TEST(CheckpointIntegrity, FormatVersion1LoadsWithOneWarning) {
  MpiComm comm(1);
  const std::string dir = iotest::fresh_dir("ckpt_v1");
  const std::string v1 = dir + "/ckpt_v1_step7.h5";
  iotest::write_file(v1, iotest::read_file(std::string(IO_TEST_DATA_DIR) + "/ckpt_v1_step7.h5"));
  const uint64_t before = ckpttest::file_hash(v1);
  ASSERT_GT(iotest::read_file(v1).size(), 1000u);
  const Config cfg = test_config();
  for (int round = 0; round < 2; ++round) {
    ParamStore b = iotest::make_store(1, 0);
    iotest::fill(b, 99);  // buffers not zero: the load must zero them
    iotest::StderrCapture cap;
    TrainState st;
    std::string what;
    try {
      st = load_checkpoint(v1, b, cfg, comm);
    } catch (const std::exception& e) {
      what = e.what();
    }
    const std::string err = cap.finish();
    ASSERT_EQ(what, "");
    EXPECT_EQ(st.step, 7);
    EXPECT_EQ(st.tokens, 7 * 16 * 64);
    // Before format_version 4: the OpenBLAS engine and its config's fp32.
    EXPECT_EQ(st.fp32_engine, "openblas");
    EXPECT_EQ(st.precision, "fp32");
    EXPECT_EQ(iotest::mismatches(b, 7, /*buffers=*/false), 0);
    // Written before buffers existed (and before the selection bias, whose
    // value then was zero): they restart at zero.
    for (const BufferInfo& buf : b.buffers())
      for (int64_t i = 0; i < buf.count; ++i) ASSERT_EQ(b.buffer(buf.name)[i], 0.0f) << buf.name;
    if (round == 0) {
      expect_has(err, v1);
      expect_has(err, "format_version 1");
      expect_has(err, "cannot be verified");
    } else {
      EXPECT_EQ(err, "") << "the warning is printed once";
    }
  }
  EXPECT_EQ(ckpttest::file_hash(v1), before);
}

// A store in memory the host cannot read directly (the scrambled test
// backend, a stand-in for device memory): save_checkpoint takes each tensor
// out through the backend's copy_to_host, once per tensor and group, and
// load_checkpoint puts it back through copy_from_host; the values round-trip
// bit for bit (whole class buffers, padding included), the file holds the
// values themselves (a CPU store loads them), staging allocates nothing in
// the backend, and an old file's missing buffers are zeroed by the backend's
// fill_zero. (Its own suite, registered after CheckpointIntegrity, so that
// it runs after FormatVersion1LoadsWithOneWarning: its v1 load would
// otherwise take that test's once-per-process warning.)
TEST(CheckpointMemory, StoreInBackendMemoryGoesThroughExplicitCopies) {
  MpiComm comm(1);
  CheckpointOwnership owned;
  const std::string run = iotest::fresh_dir("ckpt_backend_memory");
  const Config cfg = test_config();
  finemoe::testing::ScrambledBackend be;
  ParamStore ref = iotest::make_store(1, 0);  // CPU memory: the expected values
  iotest::fill(ref, 5);
  ParamStore a = iotest::make_store(1, 0, 0, be);
  EXPECT_EQ(be.counts.allocate, 9);  // params, grads, two moments per class; the buffers
  auto class_buffers = [](ParamStore& s, ParamClass c) {
    return std::vector<DeviceBuffer<float>*>{&s.params(c), &s.moments_m(c), &s.moments_v(c)};
  };
  for (int c = 0; c < kNumParamClasses; ++c) {
    const auto from = class_buffers(ref, ParamClass(c)), to = class_buffers(a, ParamClass(c));
    for (size_t k = 0; k < 3; ++k) be.copy_from_host(to[k]->data(), from[k]->data(), from[k]->size() * 4);
  }
  for (const BufferInfo& b : ref.buffers()) be.copy_from_host(a.buffer(b.name), ref.buffer(b.name), b.count * 4);
  const int64_t n_copies = 3 * int64_t(a.params().size()) + int64_t(a.buffers().size());
  int64_t bytes = 0;
  for (const ParamInfo& p : a.params()) bytes += 3 * p.local_count * 4;
  for (const BufferInfo& b : a.buffers()) bytes += b.count * 4;

  const auto before_save = be.counts;
  const std::string path = save_checkpoint(run, a, state_at(cfg, 5), cfg, comm, owned);
  EXPECT_EQ(be.counts.copy_to_host - before_save.copy_to_host, n_copies);
  EXPECT_EQ(be.counts.copy_to_host_bytes - before_save.copy_to_host_bytes, bytes);
  EXPECT_EQ(be.counts.copy_from_host, before_save.copy_from_host);
  EXPECT_EQ(be.counts.allocate, before_save.allocate);

  ParamStore cpu = iotest::make_store(1, 0);  // the file holds the values, not the scrambled bytes
  load_checkpoint(path, cpu, cfg, comm);
  EXPECT_EQ(iotest::mismatches(cpu, 5), 0);

  ParamStore b = iotest::make_store(1, 0, 0, be);
  const auto before_load = be.counts;
  load_checkpoint(path, b, cfg, comm);
  EXPECT_EQ(be.counts.copy_from_host - before_load.copy_from_host, n_copies);
  EXPECT_EQ(be.counts.copy_from_host_bytes - before_load.copy_from_host_bytes, bytes);
  EXPECT_EQ(be.counts.copy_to_host, before_load.copy_to_host);
  EXPECT_EQ(be.counts.allocate, before_load.allocate);
  for (int c = 0; c < kNumParamClasses; ++c) {
    const auto want = class_buffers(ref, ParamClass(c)), got = class_buffers(b, ParamClass(c));
    for (size_t k = 0; k < 3; ++k) {
      std::vector<float> h(size_t(got[k]->size()));
      be.copy_to_host(h.data(), got[k]->data(), got[k]->size() * 4);
      EXPECT_EQ(std::memcmp(h.data(), want[k]->data(), h.size() * 4), 0) << "class " << c << " group " << k;
      // The premise: read directly, the backend's bytes are not the values.
      EXPECT_NE(std::memcmp(got[k]->data(), want[k]->data(), h.size() * 4), 0) << "class " << c << " group " << k;
    }
  }
  for (const BufferInfo& buf : b.buffers()) {
    std::vector<float> h(size_t(buf.count));
    be.copy_to_host(h.data(), b.buffer(buf.name), buf.count * 4);
    EXPECT_EQ(std::memcmp(h.data(), ref.buffer(buf.name), h.size() * 4), 0) << buf.name;
  }

  // A format_version 1 file has no buffers: they restart at zero, in the
  // backend's memory (fill_zero), the tensors through copy_from_host.
  const std::string v1 = run + "/ckpt_v1_step7.h5";
  iotest::write_file(v1, iotest::read_file(std::string(IO_TEST_DATA_DIR) + "/ckpt_v1_step7.h5"));
  const auto before_v1 = be.counts;
  iotest::StderrCapture cap;  // the v1 warning, if this process has not printed it yet
  load_checkpoint(v1, b, cfg, comm);
  cap.finish();
  EXPECT_EQ(be.counts.fill_zero - before_v1.fill_zero, int64_t(b.buffers().size()));
  EXPECT_EQ(be.counts.copy_from_host - before_v1.copy_from_host, 3 * int64_t(b.params().size()));
  for (const BufferInfo& buf : b.buffers()) {
    std::vector<float> h(size_t(buf.count), -1.0f);
    be.copy_to_host(h.data(), b.buffer(buf.name), buf.count * 4);
    for (float x : h) EXPECT_EQ(x, 0.0f) << buf.name;
  }
  ParamStore v1_ref = iotest::make_store(1, 0);
  iotest::fill(v1_ref, 7);  // the file's values (FormatVersion1LoadsWithOneWarning)
  for (const ParamInfo& p : b.params()) {
    std::vector<float> h(size_t(p.local_count));
    be.copy_to_host(h.data(), b.param(p.name), p.local_count * 4);
    EXPECT_EQ(std::memcmp(h.data(), v1_ref.param(p.name), h.size() * 4), 0) << p.name;
  }
}

// run.resume=auto (resume_latest): LATEST is followed strictly; only when it is
// missing, empty, garbage or names a missing file does the newest verifying
// step file take over; a corrupt candidate is skipped, none verifying is a
// DataError listing them; no file is changed in any case.
TEST(CheckpointResume, LatestIsStrictAndBrokenLatestFallsBackToNewestVerifying) {
  MpiComm comm(1);
  CheckpointOwnership owned;
  const std::string run = iotest::fresh_dir("ckpt_resume");
  Config cfg = test_config();
  cfg.train.checkpoint_keep = 3;
  const std::string d = run + "/checkpoints/";
  ParamStore a = iotest::make_store(1, 0);
  {
    ParamStore b = iotest::make_store(1, 0);
    TrainState st;
    EXPECT_EQ(resume_latest(run, b, st, cfg, comm), "") << "no checkpoint: start fresh";
  }
  for (int64_t s : {10, 20, 30}) {
    iotest::fill(a, s);
    save_checkpoint(run, a, state_at(cfg, s), cfg, comm, owned);
  }
  const std::string s30 = iotest::read_file(d + "step_0000030.h5");
  const auto ext30 = ckpttest::data_extents(d + "step_0000030.h5", a);
  ASSERT_FALSE(ext30.empty());
  auto resume = [&](std::string* err_text = nullptr) {
    ParamStore b = iotest::make_store(1, 0);
    TrainState st;
    const auto before = ckpttest::dir_hashes(d);
    iotest::StderrCapture cap;
    std::string path, err;
    try {
      path = resume_latest(run, b, st, cfg, comm);
      EXPECT_EQ(iotest::mismatches(b, st.step), 0) << path;
    } catch (const DataError& e) {
      err = e.what();
    }
    const std::string printed = cap.finish();
    EXPECT_EQ(printed.find("HDF5-DIAG"), std::string::npos) << printed;
    EXPECT_EQ(ckpttest::dir_hashes(d), before) << "resume changed a file";
    if (err_text) *err_text = err;
    return path;
  };
  EXPECT_EQ(resume(), d + "step_0000030.h5");
  for (const std::string& latest : {std::string(""), std::string("garbage\n"), std::string("step_0000099.h5\n")}) {
    iotest::write_file(d + "LATEST", latest);
    EXPECT_EQ(resume(), d + "step_0000030.h5") << "LATEST '" << latest << "'";
  }
  ::unlink((d + "LATEST").c_str());
  EXPECT_EQ(resume(), d + "step_0000030.h5") << "LATEST missing";

  // step 30 corrupt: LATEST naming it is refused (strict), no fallback ...
  ckpttest::write_flipped(d + "step_0000030.h5", s30, ext30[0].offset + 1, 0x01);
  iotest::write_file(d + "LATEST", "step_0000030.h5\n");
  std::string err;
  EXPECT_EQ(resume(&err), "");
  expect_has(err, d + "step_0000030.h5");
  expect_has(err, "checksum mismatch in tensor " + ext30[0].dataset);
  // ... while a broken LATEST falls back past it to step 20.
  iotest::write_file(d + "LATEST", "");
  EXPECT_EQ(resume(), d + "step_0000020.h5");
  // Nothing verifies: DataError saying why for each.
  for (int64_t s : {10, 20}) {
    char name[32];
    std::snprintf(name, sizeof name, "step_%07lld.h5", (long long)s);
    iotest::write_file(d + name, "not HDF5");
  }
  EXPECT_EQ(resume(&err), "");
  expect_has(err, "LATEST is empty and no checkpoint in " + run + "/checkpoints verifies");
  expect_has(err, "step_0000030.h5: checksum mismatch");
  expect_has(err, "step_0000010.h5: not an HDF5 file");
}

// Pruning and overwriting touch only the run's own checkpoints.
TEST(CheckpointRetention, OtherRunsAndSkippedCheckpointsAreNeverDeletedOrOverwritten) {
  MpiComm comm(1);
  const std::string run = iotest::fresh_dir("ckpt_own");
  const std::string d = run + "/checkpoints/";
  Config cfg = test_config();
  ParamStore a = iotest::make_store(1, 0);
  {
    CheckpointOwnership first;  // an earlier run: 10, 20, 30 (keep 3)
    Config keep3 = cfg;
    keep3.train.checkpoint_keep = 3;
    for (int64_t s : {10, 20, 30}) {
      iotest::fill(a, s);
      save_checkpoint(run, a, state_at(keep3, s), keep3, comm, first);
    }
  }
  const auto earlier = ckpttest::dir_hashes(d);
  // A fresh run (run.resume=never) with keep 1: prunes only its own.
  {
    CheckpointOwnership fresh;
    Config keep1 = cfg;
    keep1.train.checkpoint_keep = 1;
    for (int64_t s : {1, 2}) {
      iotest::fill(a, 100 + s);
      save_checkpoint(run, a, state_at(keep1, s), keep1, comm, fresh);
    }
    EXPECT_FALSE(iotest::file_exists(d + "step_0000001.h5"));
    EXPECT_TRUE(iotest::file_exists(d + "step_0000002.h5"));
    for (const char* n : {"step_0000010.h5", "step_0000020.h5", "step_0000030.h5"})
      EXPECT_EQ(ckpttest::file_hash(d + n), earlier.at(n)) << n << " of the earlier run was changed";
    ::unlink((d + "step_0000002.h5").c_str());
  }
  // A run that resumed from step 20 (30 failed verification, say) and now
  // writes its own step 30 (keep 2): the earlier 30 is kept aside, byte for
  // byte; its own history (10) is pruned as usual.
  CheckpointOwnership resumed;
  resumed.history_up_to = 20;
  iotest::fill(a, 30 + 1000);
  iotest::StderrCapture cap;
  save_checkpoint(run, a, state_at(cfg, 30), cfg, comm, resumed);
  const std::string warning = cap.finish();
  expect_has(warning, d + "step_0000030.h5 was not written by this run");
  EXPECT_EQ(ckpttest::file_hash(d + "step_0000030.h5.kept"), earlier.at("step_0000030.h5"));
  EXPECT_TRUE(iotest::file_exists(d + "step_0000020.h5"));
  EXPECT_FALSE(iotest::file_exists(d + "step_0000010.h5"));
  ParamStore b = iotest::make_store(1, 0);
  EXPECT_EQ(load_checkpoint(d + "step_0000030.h5", b, cfg, comm).step, 30);
  EXPECT_EQ(iotest::mismatches(b, 30 + 1000), 0);
}

int main(int argc, char** argv) {
  Comm::init(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  int rc = RUN_ALL_TESTS();
  Comm::finalize();
  return rc;
}
