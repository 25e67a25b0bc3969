// oneDNN matmul engine of the CPU backend: bf16 inputs with fp32 accumulation
// and output (the paper's mixed precision), and oneDNN fp32 where it is used.
//
// Why this shape:
// - Primitive creation costs 10-100 µs (JIT), so primitives are created once
//   per (precision, trans, M, N, K, leading dims, alpha, beta) key and cached.
// - The model hands us fp32 pointers. For bf16 we convert A and B into a
//   per-thread, 64-byte aligned, grow-only workspace (no allocation in the
//   steady state). The conversion keeps the physical layout (a transposed
//   operand stays transposed and is described to oneDNN by its strides), so no
//   transposed copy is made; it is O(MK + KN) against the O(MNK) product.
// - Scratchpad mode is "user" and streams are per thread, so the same cached
//   primitive may run concurrently from the threads of the grouped GEMM loop.
// - Weights (B operands inside a range registered with register_weights) are
//   converted once per optimizer step instead of in every GEMM: a weight is
//   used by the forward GEMM and the backward dx GEMM (and at large G by
//   hundreds of expert GEMMs), and converting it each time is O(KN) memory
//   traffic per call. Modes (WeightCacheMode): plain keeps one dense bf16 copy
//   per weight, shared by the forward (B) and backward (Bᵀ) GEMMs through
//   strides; blocked stores it in the layout the matmul primitive prefers
//   (format_tag::any), so oneDNN also skips its own per-call repacking of B,
//   at the price of one copy per use (fwd and bwd). The epoch counter bumped by
//   weights_updated() invalidates every copy at once.
#include "backend/cpu/gemm_internal.hpp"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "finemoe/error.hpp"
#include "finemoe/memory.hpp"

#ifdef FINEMOE_HAVE_DNNL
#include <oneapi/dnnl/dnnl.hpp>
#endif

namespace finemoe::backend::detail {

#ifndef FINEMOE_HAVE_DNNL

bool dnnl_built() { return false; }
std::string dnnl_isa_name() { return "none"; }
bool dnnl_native_bf16() { return false; }
bool dnnl_amx() { return false; }
[[noreturn]] void no_dnnl() {
  throw Error("oneDNN GEMM requested but this build has no oneDNN (install libdnnl-dev and rebuild)");
}
void dnnl_gemm(bool, bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*, int64_t,
               float, float*, int64_t, bool) {
  no_dnnl();
}
void dnnl_prepare(bool, bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t, int64_t, float,
                  int64_t, bool) {}
int64_t dnnl_cache_size() { return 0; }
void dnnl_drop_primitives() {}
void dnnl_batched_gemm(bool, bool, bool, int64_t, int64_t, int64_t, int64_t, float, const float*, int64_t, int64_t,
                       const float*, int64_t, int64_t, float, float*, int64_t, int64_t, bool) {
  no_dnnl();
}
void dnnl_set_weight_cache_mode(WeightCacheMode) {}
WeightCacheMode dnnl_weight_cache_mode() { return WeightCacheMode::off; }
void dnnl_register_weights(const float*, int64_t) {}
void dnnl_clear_weights() {}
void dnnl_weights_updated() {}
WeightCacheStats dnnl_weight_cache_stats() { return {}; }

#else

namespace {

using dnnl::memory;

std::string isa_to_string(dnnl::cpu_isa isa) {
  switch (isa) {
    case dnnl::cpu_isa::all: return "all";
    case dnnl::cpu_isa::sse41: return "sse41";
    case dnnl::cpu_isa::avx: return "avx";
    case dnnl::cpu_isa::avx2: return "avx2";
    case dnnl::cpu_isa::avx512_mic: return "avx512_mic";
    case dnnl::cpu_isa::avx512_mic_4ops: return "avx512_mic_4ops";
    case dnnl::cpu_isa::avx512_core: return "avx512_core";
    case dnnl::cpu_isa::avx512_core_vnni: return "avx512_core_vnni";
    case dnnl::cpu_isa::avx512_core_bf16: return "avx512_core_bf16";
    case dnnl::cpu_isa::avx512_core_amx: return "avx512_core_amx";
    case dnnl::cpu_isa::avx2_vnni: return "avx2_vnni";
  }
  return "unknown";
}

dnnl::engine& engine() {
  static dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  return eng;
}
dnnl::stream& thread_stream() {
  thread_local dnnl::stream s(engine());
  return s;
}

// Grow-only aligned scratch (Buffer::resize reallocates on any size change).
template <typename T>
T* grow(Buffer<T>& b, size_t n) {
  if (b.size() < n) b.resize(n);
  return b.data();
}

// (bf16, trans_a, trans_b, M, N, K, lda, ldb, ldc, alpha, beta, b_blocked, relu)
using Key =
    std::tuple<bool, bool, bool, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, float, float, bool, bool>;

// memory objects bound to one primitive for one thread, re-pointed with
// set_data_handle per call: creating dnnl::memory objects and an argument map
// in every GEMM allocated on the heap each time.
struct Bound {
  memory a, b, c, scratch;
  dnnl_exec_arg_t args[4];
  int nargs = 0;
};
struct Entry {
  dnnl::matmul prim;
  memory::desc a_md, b_md, c_md, scratch_md;
  size_t scratch_bytes = 0;
  // One slot per OpenMP thread number (a thread only ever uses its own slot;
  // concurrent calls come from different threads of the grouped GEMM loop).
  int n_slots = 0;
  std::unique_ptr<std::unique_ptr<Bound>[]> slots;  // the pointers are written lazily by their own thread
};

std::mutex g_mu;
std::map<Key, std::shared_ptr<const Entry>> g_cache;
constexpr size_t kMaxCache = 8192;  // token choice makes M vary; bound the cache

// A matmul primitive (cached by the callers) with alpha as output scale, beta
// as a sum post-op and the ReLU as an eltwise post-op; user scratchpad.
std::shared_ptr<Entry> make_entry(const memory::desc& a_md, const memory::desc& b_md, const memory::desc& c_md,
                                  float alpha, float beta, bool relu, const std::string& what) {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  if (alpha != 1.0f) attr.set_output_scales(0, {alpha});
  if (beta != 0.0f || relu) {
    dnnl::post_ops po;
    if (beta != 0.0f) po.append_sum(beta);
    if (relu) po.append_eltwise(1.0f, dnnl::algorithm::eltwise_relu, 0.0f, 0.0f);
    attr.set_post_ops(po);
  }
  auto e = std::make_shared<Entry>();
  try {
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a_md, b_md, c_md), attr, engine());
    e->prim = dnnl::matmul(pd);
    e->scratch_md = pd.scratchpad_desc();
    e->scratch_bytes = e->scratch_md.get_size();
    e->b_md = pd.weights_desc();
  } catch (const dnnl::error& err) {
    throw Error(std::string("oneDNN matmul creation failed (") + err.what() + ") for " + what);
  }
  e->a_md = a_md;
  e->c_md = c_md;
  e->n_slots = std::max(omp_get_max_threads(), omp_get_num_procs());
  e->slots.reset(new std::unique_ptr<Bound>[size_t(e->n_slots)]);
  return e;
}

// (bf16, trans_a, trans_b, count, M, N, K, stride_a, lda, stride_b, ldb, stride_c, ldc, alpha, beta, relu)
using BKey = std::tuple<bool, bool, bool, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                        int64_t, int64_t, float, float, bool>;
std::map<BKey, std::shared_ptr<const Entry>> g_bcache;  // guarded by g_mu

// b_blocked: B is described as format_tag::any and the primitive picks its
// layout (e->b_md); B must then come from the weight cache in that layout.
std::shared_ptr<const Entry> get_entry(bool bf16, bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                                       int64_t lda, int64_t ldb, float beta, int64_t ldc, bool b_blocked, bool relu) {
  if (b_blocked) ldb = 0;
  Key key{bf16, ta, tb, M, N, K, lda, ldb, ldc, alpha, beta, b_blocked, relu};
  std::lock_guard<std::mutex> lock(g_mu);
  auto it = g_cache.find(key);
  if (it != g_cache.end()) return it->second;
  if (g_cache.size() >= kMaxCache) g_cache.clear();  // entries in use stay alive (shared_ptr)

  const auto dt = bf16 ? memory::data_type::bf16 : memory::data_type::f32;
  // Row-major op(A)[M,K]: stored [M,lda] or, transposed, [K,lda] read column-wise.
  memory::desc a_md({M, K}, dt, ta ? memory::dims{1, lda} : memory::dims{lda, 1});
  memory::desc b_md = b_blocked ? memory::desc({K, N}, dt, memory::format_tag::any)
                                : memory::desc({K, N}, dt, tb ? memory::dims{1, ldb} : memory::dims{ldb, 1});
  memory::desc c_md({M, N}, memory::data_type::f32, memory::dims{ldc, 1});
  auto e = make_entry(a_md, b_md, c_md, alpha, beta, relu,
                      "M=" + std::to_string(M) + " N=" + std::to_string(N) + " K=" + std::to_string(K));
  g_cache.emplace(key, e);
  return e;
}

// fp32 -> bf16, round to nearest even. The build may disable AVX-512 code
// generation (CMakeLists.txt: GCC 12 miscompiles some AVX-512 code on Zen 4),
// so the vector version is compiled for its own target and chosen at run time.
void to_bf16_row_scalar(uint16_t* dst, const float* src, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    uint32_t u;
    std::memcpy(&u, src + i, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) {  // NaN stays NaN
      dst[i] = uint16_t((u >> 16) | 0x40);
    } else {
      u += 0x7fffu + ((u >> 16) & 1u);
      dst[i] = uint16_t(u >> 16);
    }
  }
}

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx512f,avx512bf16,avx512vl"))) void to_bf16_row_avx512(uint16_t* dst, const float* src,
                                                                                 int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m256bh v = _mm512_cvtneps_pbh(_mm512_loadu_ps(src + i));
    __m256i bits;
    std::memcpy(&bits, &v, sizeof bits);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), bits);
  }
  to_bf16_row_scalar(dst + i, src + i, n - i);
}
const bool g_cpu_bf16 = __builtin_cpu_supports("avx512bf16");
#endif

void to_bf16_row(uint16_t* dst, const float* src, int64_t n) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (g_cpu_bf16) return to_bf16_row_avx512(dst, src, n);
#endif
  to_bf16_row_scalar(dst, src, n);
}

// Packs `count` rows x cols fp32 matrices (leading dim ld, `stride` floats
// apart) into dense bf16, one after another (matrix g at dst + g·rows·cols):
// one parallel loop over all rows.
void pack_bf16_strided(uint16_t* dst, const float* src, int64_t count, int64_t rows, int64_t cols, int64_t ld,
                       int64_t stride) {
  const int64_t total = count * rows;
  const bool par = total * cols >= (1 << 15) && !omp_in_parallel();
#pragma omp parallel for schedule(static) if (par)
  for (int64_t r = 0; r < total; ++r)
    to_bf16_row(dst + r * cols, src + (r / rows) * stride + (r % rows) * ld, cols);
}

// One rows x cols matrix.
void pack_bf16(uint16_t* dst, const float* src, int64_t rows, int64_t cols, int64_t ld) {
  pack_bf16_strided(dst, src, 1, rows, cols, ld, 0);
}

// The calling thread's grow-only bf16 operand workspaces (A and B), shared by
// the single and the batched GEMM.
struct OperandWorkspace {
  Buffer<uint16_t> a, b;
};
OperandWorkspace& operand_workspace() {
  thread_local OperandWorkspace ws;
  return ws;
}

// ---- bf16 weight cache ----------------------------------------------------
std::atomic<int> g_wmode{int(WeightCacheMode::plain)};
std::atomic<uint64_t> g_epoch{1};
std::atomic<int64_t> g_conversions{0}, g_hits{0};
std::mutex g_wmu;  // guards everything below
std::vector<std::pair<const float*, const float*>> g_wranges;
struct WeightCopy {
  memory::desc md;  // layout of data: dense bf16 (plain) or the primitive's (blocked)
  Buffer<unsigned char> data;
  uint64_t epoch = 0;
  dnnl::reorder to_blocked;  // plain bf16 -> md (blocked mode only)
};
// (pointer, stored rows, stored cols, ld, trans_b, blocked) -> copies (one per
// layout; blocked mode may see more than one layout for the same use)
using WKey = std::tuple<const float*, int64_t, int64_t, int64_t, bool, bool>;
std::map<WKey, std::vector<std::unique_ptr<WeightCopy>>> g_wcache;
int64_t g_wbytes = 0;

bool in_weights(const float* p, int64_t rows, int64_t cols, int64_t ld) {
  const float* last = p + (rows - 1) * ld + cols;
  for (const auto& r : g_wranges)
    if (p >= r.first && last <= r.second) return true;
  return false;
}

// A dense bf16 copy of a stored rows x cols B operand, described as op(B)[K,N]
// (the blocked layouts describe op(B)): B itself, or with trans_b Bᵀ, by its
// strides.
memory::desc dense_as_op_b(int64_t rows, int64_t cols, bool tb) {
  return tb ? memory::desc({cols, rows}, memory::data_type::bf16, memory::dims{1, cols})
            : memory::desc({rows, cols}, memory::data_type::bf16, memory::dims{cols, 1});
}

// The bf16 copy of the stored rows x cols (leading dim ld) fp32 matrix at p,
// in layout `want` (blocked mode) or dense (want == nullptr), converted now if
// missing or older than the current epoch and `may_convert`. nullptr: p is not
// a registered weight, or it would need converting and may not (inside a
// parallel region: conversions happen serially, in dnnl_prepare).
const void* cached_weight(const float* p, int64_t rows, int64_t cols, int64_t ld, bool tb, const memory::desc* want,
                          bool may_convert) {
  std::lock_guard<std::mutex> lock(g_wmu);
  if (g_wranges.empty() || !in_weights(p, rows, cols, ld)) return nullptr;
  auto& variants = g_wcache[WKey{p, rows, cols, ld, want ? tb : false, want != nullptr}];
  WeightCopy* c = nullptr;
  for (auto& v : variants)
    if (!want || v->md == *want) c = v.get();
  const uint64_t epoch = g_epoch.load();
  if (c && c->epoch == epoch) {
    g_hits.fetch_add(1, std::memory_order_relaxed);
    return c->data.data();
  }
  if (!may_convert) return nullptr;
  if (!c) {
    auto fresh = std::make_unique<WeightCopy>();
    fresh->md = want ? *want : memory::desc({rows, cols}, memory::data_type::bf16, memory::dims{cols, 1});
    fresh->data.resize(fresh->md.get_size());
    if (want)
      fresh->to_blocked =
          dnnl::reorder(dnnl::reorder::primitive_desc(engine(), dense_as_op_b(rows, cols, tb), engine(), *want));
    g_wbytes += int64_t(fresh->data.size());
    variants.push_back(std::move(fresh));
    c = variants.back().get();
  }
  if (!want) {
    pack_bf16(reinterpret_cast<uint16_t*>(c->data.data()), p, rows, cols, ld);
  } else {
    static Buffer<uint16_t> tmp;  // only touched under g_wmu
    if (tmp.size() < size_t(rows * cols)) tmp.resize(size_t(rows * cols));
    pack_bf16(tmp.data(), p, rows, cols, ld);
    memory sm(dense_as_op_b(rows, cols, tb), engine(), tmp.data()), dm(c->md, engine(), c->data.data());
    auto& s = thread_stream();
    c->to_blocked.execute(s, sm, dm);
    s.wait();
  }
  c->epoch = epoch;
  g_conversions.fetch_add(1, std::memory_order_relaxed);
  return c->data.data();
}

// Runs a cached primitive on these buffers with the calling thread's stream
// and scratchpad.
void execute(const Entry& e, void* a_ptr, void* b_ptr, float* C) {
  thread_local Buffer<unsigned char> ws_scratch;
  void* scratch = e.scratch_bytes ? grow(ws_scratch, e.scratch_bytes) : nullptr;
  auto& s = thread_stream();
  const int tid = omp_get_thread_num();
  if (tid < e.n_slots) {  // steady state: no heap allocation on our side
    auto& slot = e.slots[size_t(tid)];
    if (!slot) {
      auto& eng = engine();
      slot = std::make_unique<Bound>();
      Bound& bd = *slot;
      bd.a = memory(e.a_md, eng, nullptr);
      bd.b = memory(e.b_md, eng, nullptr);
      bd.c = memory(e.c_md, eng, nullptr);
      bd.args[0] = {DNNL_ARG_SRC, bd.a.get()};
      bd.args[1] = {DNNL_ARG_WEIGHTS, bd.b.get()};
      bd.args[2] = {DNNL_ARG_DST, bd.c.get()};
      bd.nargs = 3;
      if (e.scratch_bytes) {
        bd.scratch = memory(e.scratch_md, eng, nullptr);
        bd.args[bd.nargs++] = {DNNL_ARG_SCRATCHPAD, bd.scratch.get()};
      }
    }
    Bound& bd = *slot;
    bd.a.set_data_handle(a_ptr);
    bd.b.set_data_handle(b_ptr);
    bd.c.set_data_handle(C);
    if (scratch) bd.scratch.set_data_handle(scratch);
    dnnl::error::wrap_c_api(dnnl_primitive_execute(e.prim.get(), s.get(), bd.nargs, bd.args),
                            "oneDNN matmul execution failed");
  } else {  // more threads than when the primitive was created: plain path
    auto& eng = engine();
    memory am(e.a_md, eng, a_ptr), bm(e.b_md, eng, b_ptr), cm(e.c_md, eng, C);
    std::unordered_map<int, memory> args{{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm}, {DNNL_ARG_DST, cm}};
    if (scratch) args.emplace(DNNL_ARG_SCRATCHPAD, memory(e.scratch_md, eng, scratch));
    e.prim.execute(s, args);
  }
  s.wait();
}

}  // namespace

bool dnnl_built() { return true; }
std::string dnnl_isa_name() { return isa_to_string(dnnl::get_effective_cpu_isa()); }
bool dnnl_native_bf16() {
  auto isa = dnnl::get_effective_cpu_isa();
  return isa == dnnl::cpu_isa::avx512_core_bf16 || isa == dnnl::cpu_isa::avx512_core_amx;
}
bool dnnl_amx() { return dnnl::get_effective_cpu_isa() == dnnl::cpu_isa::avx512_core_amx; }

namespace {
// Which cached B (if any) a bf16 GEMM uses; fills *e with the primitive.
const void* weight_operand(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, int64_t lda_packed,
                           const float* B, int64_t ldb, float beta, int64_t ldc, bool relu, bool may_convert,
                           std::shared_ptr<const Entry>* e) {
  const auto mode = WeightCacheMode(g_wmode.load());
  if (mode == WeightCacheMode::off || B == nullptr) return nullptr;
  const int64_t br = tb ? N : K, bc = tb ? K : N;
  if (mode == WeightCacheMode::blocked) {
    {
      std::lock_guard<std::mutex> lock(g_wmu);
      if (g_wranges.empty() || !in_weights(B, br, bc, ldb)) return nullptr;
    }
    auto blocked = get_entry(true, ta, tb, M, N, K, alpha, lda_packed, 0, beta, ldc, true, relu);
    const void* w = cached_weight(B, br, bc, ldb, tb, &blocked->b_md, may_convert);
    if (w) *e = std::move(blocked);
    return w;
  }
  const void* w = cached_weight(B, br, bc, ldb, tb, nullptr, may_convert);
  if (w) *e = get_entry(true, ta, tb, M, N, K, alpha, lda_packed, bc, beta, ldc, false, relu);
  return w;
}
}  // namespace

void dnnl_prepare(bool bf16, bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* B,
                  int64_t lda, int64_t ldb, float beta, int64_t ldc, bool relu) {
  if (M == 0 || N == 0) return;
  if (bf16) {  // packed operands: leading dim = stored row length
    const int64_t lda_packed = ta ? M : K;
    std::shared_ptr<const Entry> e;
    if (weight_operand(ta, tb, M, N, K, alpha, lda_packed, B, ldb, beta, ldc, relu, true, &e)) return;
    lda = lda_packed;
    ldb = tb ? K : N;
  }
  get_entry(bf16, ta, tb, M, N, K, alpha, lda, ldb, beta, ldc, false, relu);
}

void dnnl_gemm(bool bf16, bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
               int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc, bool relu) {
  if (M == 0 || N == 0) return;
  OperandWorkspace& ws = operand_workspace();
  void* a_ptr = const_cast<float*>(A);
  void* b_ptr = const_cast<float*>(B);
  std::shared_ptr<const Entry> e;
  if (bf16) {
    const int64_t ar = ta ? K : M, ac = ta ? M : K, br = tb ? N : K, bc = tb ? K : N;
    uint16_t* pa = grow(ws.a, size_t(ar * ac));
    pack_bf16(pa, A, ar, ac, lda);
    a_ptr = pa;
    lda = ac;
    if (const void* w =
            weight_operand(ta, tb, M, N, K, alpha, lda, B, ldb, beta, ldc, relu, !omp_in_parallel(), &e)) {
      b_ptr = const_cast<void*>(w);
    } else {
      uint16_t* pb = grow(ws.b, size_t(br * bc));
      pack_bf16(pb, B, br, bc, ldb);
      b_ptr = pb;
      ldb = bc;
    }
  }
  if (!e) e = get_entry(bf16, ta, tb, M, N, K, alpha, lda, ldb, beta, ldc, false, relu);
  execute(*e, a_ptr, b_ptr, C);
}

void dnnl_batched_gemm(bool bf16, bool ta, bool tb, int64_t count, int64_t M, int64_t N, int64_t K, float alpha,
                       const float* A, int64_t stride_a, int64_t lda, const float* B, int64_t stride_b, int64_t ldb,
                       float beta, float* C, int64_t stride_c, int64_t ldc, bool relu) {
  if (count == 0 || M == 0 || N == 0) return;
  OperandWorkspace& ws = operand_workspace();
  const int64_t ar = ta ? K : M, ac = ta ? M : K, br = tb ? N : K, bc = tb ? K : N;
  void* a_ptr = const_cast<float*>(A);
  void* b_ptr = const_cast<float*>(B);
  if (bf16) {  // dense bf16 copies: problem g at g·rows·cols, leading dim = cols
    uint16_t* pa = grow(ws.a, size_t(count * ar * ac));
    pack_bf16_strided(pa, A, count, ar, ac, lda, stride_a);
    a_ptr = pa;
    lda = ac;
    stride_a = ar * ac;
    // The stacked weights of all problems as one cached matrix, when they are
    // one contiguous block (the experts' W1 / W2 tensors).
    const void* w = nullptr;
    if (WeightCacheMode(g_wmode.load()) == WeightCacheMode::plain && stride_b == br * ldb)
      w = cached_weight(B, count * br, bc, ldb, tb, nullptr, true);
    if (w) {
      b_ptr = const_cast<void*>(w);
    } else {
      uint16_t* pb = grow(ws.b, size_t(count * br * bc));
      pack_bf16_strided(pb, B, count, br, bc, ldb, stride_b);
      b_ptr = pb;
    }
    ldb = bc;
    stride_b = br * bc;
  }
  BKey key{bf16, ta, tb, count, M, N, K, stride_a, lda, stride_b, ldb, stride_c, ldc, alpha, beta, relu};
  std::shared_ptr<const Entry> e;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    auto it = g_bcache.find(key);
    if (it != g_bcache.end()) e = it->second;
  }
  if (!e) {
    const auto dt = bf16 ? memory::data_type::bf16 : memory::data_type::f32;
    memory::desc a_md({count, M, K}, dt, ta ? memory::dims{stride_a, 1, lda} : memory::dims{stride_a, lda, 1});
    memory::desc b_md({count, K, N}, dt, tb ? memory::dims{stride_b, 1, ldb} : memory::dims{stride_b, ldb, 1});
    memory::desc c_md({count, M, N}, memory::data_type::f32, memory::dims{stride_c, ldc, 1});
    e = make_entry(a_md, b_md, c_md, alpha, beta, relu, "batched M=" + std::to_string(M) + " N=" +
                                                            std::to_string(N) + " K=" + std::to_string(K));
    std::lock_guard<std::mutex> lock(g_mu);
    if (g_bcache.size() >= kMaxCache) g_bcache.clear();
    g_bcache.emplace(key, e);
  }
  execute(*e, a_ptr, b_ptr, C);
}

void dnnl_set_weight_cache_mode(WeightCacheMode m) {
  std::lock_guard<std::mutex> lock(g_wmu);
  g_wmode = int(m);
  g_wcache.clear();
  g_wbytes = 0;
}
WeightCacheMode dnnl_weight_cache_mode() { return WeightCacheMode(g_wmode.load()); }
void dnnl_register_weights(const float* base, int64_t count) {
  std::lock_guard<std::mutex> lock(g_wmu);
  if (count > 0) g_wranges.emplace_back(base, base + count);
  g_epoch.fetch_add(1);
}
void dnnl_clear_weights() {
  std::lock_guard<std::mutex> lock(g_wmu);
  g_wranges.clear();
  g_wcache.clear();
  g_wbytes = 0;
  g_epoch.fetch_add(1);
}
void dnnl_weights_updated() { g_epoch.fetch_add(1); }
WeightCacheStats dnnl_weight_cache_stats() {
  std::lock_guard<std::mutex> lock(g_wmu);
  WeightCacheStats st;
  st.conversions = g_conversions.load();
  st.hits = g_hits.load();
  st.bytes = g_wbytes;
  return st;
}

int64_t dnnl_cache_size() {
  std::lock_guard<std::mutex> lock(g_mu);
  return int64_t(g_cache.size());
}

void dnnl_drop_primitives() {
  std::lock_guard<std::mutex> lock(g_mu);
  g_cache.clear();
  g_bcache.clear();
}

#endif

}  // namespace finemoe::backend::detail
