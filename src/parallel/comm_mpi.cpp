// The MPI launch (Comm's static members) and MpiComm, the host MPI
// implementation of the Comm interface (comm.hpp, comm_mpi.hpp).
#include "finemoe/comm_mpi.hpp"

#include <mpi.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstring>

#include "finemoe/error.hpp"

namespace finemoe {

struct MpiComm::Impl {
  MPI_Comm world = MPI_COMM_NULL, ep = MPI_COMM_NULL, dp = MPI_COMM_NULL;
  MPI_Comm get(Group g) const { return g == Group::world ? world : g == Group::ep ? ep : dp; }
  // Collective scratch, grow-only (vector capacity is kept across calls), so
  // steady-state steps do not allocate. Comm is used from one thread.
  std::vector<int> counts, displs, rcounts, rdispls;
  std::vector<float> gathered, sum;
  std::vector<double> scalars;
  std::vector<MPI_Request> requests;
};

namespace {
std::atomic<int64_t> g_max_count{INT_MAX};

void check(int rc, const char* what) {
  if (rc != MPI_SUCCESS) {
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    throw Error(std::string("MPI ") + what + " failed: " + std::string(msg, len));
  }
}
}  // namespace

void Comm::init(int* argc, char*** argv) {
  int flag = 0;
  MPI_Initialized(&flag);
  if (flag) return;
  int provided = 0;
  MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
}

void Comm::finalize() {
  int init = 0, fin = 0;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  if (init && !fin) MPI_Finalize();
}

bool Comm::initialized() {
  int flag = 0;
  MPI_Initialized(&flag);
  return flag != 0;
}

void Comm::abort_all(int code) {
  if (initialized()) {
    int size = 1;
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (size > 1) MPI_Abort(MPI_COMM_WORLD, code);
    MPI_Finalize();
  }
  std::exit(code);
}

MpiComm::MpiComm(int ep) : impl_(std::make_unique<Impl>()) {
  if (!initialized()) throw Error("Comm: MPI is not initialised (call Comm::init first)");
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  set_grid(rank, size, ep);  // throws ConfigError before any communicator exists
  check(MPI_Comm_dup(MPI_COMM_WORLD, &impl_->world), "Comm_dup");
  check(MPI_Comm_split(impl_->world, dp_rank(), ep_rank(), &impl_->ep), "Comm_split(ep)");
  check(MPI_Comm_split(impl_->world, ep_rank(), dp_rank(), &impl_->dp), "Comm_split(dp)");
}

MpiComm::~MpiComm() {
  if (!initialized()) return;
  int fin = 0;
  MPI_Finalized(&fin);
  if (fin) return;
  for (MPI_Comm* c : {&impl_->ep, &impl_->dp, &impl_->world})
    if (*c != MPI_COMM_NULL) MPI_Comm_free(c);
}

int MpiComm::ranks_on_this_node() const {
  if (size() == 1) return 1;
  MPI_Comm node = MPI_COMM_NULL;
  check(MPI_Comm_split_type(impl_->world, MPI_COMM_TYPE_SHARED, rank(), MPI_INFO_NULL, &node), "Comm_split_type");
  int n = 1;
  MPI_Comm_size(node, &n);
  MPI_Comm_free(&node);
  return n;
}

const void* MpiComm::native(Group g) const {
  return g == Group::world ? &impl_->world : g == Group::ep ? &impl_->ep : &impl_->dp;
}

std::unique_ptr<Comm> make_mpi_comm(int expert_parallel) { return std::make_unique<MpiComm>(expert_parallel); }

void Comm::set_max_count(int64_t n) { g_max_count = n > 0 && n <= INT_MAX ? n : int64_t(INT_MAX); }
int64_t Comm::max_count() { return g_max_count; }

// Deterministic allreduce: split the buffer in P chunks, all-to-all so rank j
// holds every rank's chunk j, sum them in rank order, all-gather the sums.
// Buffers longer than max_count() go piece by piece (counts and
// displacements of one MPI call must fit in int); every element is summed
// in rank order whatever the pieces, so the result is the same bits.
void MpiComm::allreduce_sum(float* buf, int64_t n, Group g) const {
  const int P = group_size(g);
  if (P == 1 || n <= 0) return;
  MPI_Comm c = impl_->get(g);
  const int me = group_rank(g);
  Impl& m = *impl_;
  m.counts.resize(size_t(P));
  m.displs.resize(size_t(P));
  m.rcounts.resize(size_t(P));
  m.rdispls.resize(size_t(P));
  const int64_t piece_max = max_count();
  for (int64_t lo = 0; lo < n; lo += piece_max) {
    const int64_t len = std::min(piece_max, n - lo);
    float* piece = buf + lo;
    const int64_t base = len / P, rem = len % P;
    for (int j = 0, off = 0; j < P; ++j) {
      m.counts[size_t(j)] = int(base + (j < rem ? 1 : 0));
      m.displs[size_t(j)] = off;
      off += m.counts[size_t(j)];
    }
    const int mine = m.counts[size_t(me)];
    m.gathered.resize(size_t(mine) * size_t(P));
    for (int j = 0; j < P; ++j) {
      m.rcounts[size_t(j)] = mine;
      m.rdispls[size_t(j)] = j * mine;  // <= len <= INT_MAX
    }
    check(MPI_Alltoallv(piece, m.counts.data(), m.displs.data(), MPI_FLOAT, m.gathered.data(), m.rcounts.data(),
                        m.rdispls.data(), MPI_FLOAT, c),
          "Alltoallv(allreduce)");
    m.sum.assign(size_t(mine), 0.0f);
    for (int j = 0; j < P; ++j) {
      const float* src = m.gathered.data() + size_t(j) * size_t(mine);
      for (int i = 0; i < mine; ++i) m.sum[size_t(i)] += src[i];
    }
    check(MPI_Allgatherv(m.sum.data(), mine, MPI_FLOAT, piece, m.counts.data(), m.displs.data(), MPI_FLOAT, c),
          "Allgatherv(allreduce)");
  }
}

double MpiComm::allreduce_sum(double x, Group g) const {
  const int P = group_size(g);
  if (P == 1) return x;
  std::vector<double>& all = impl_->scalars;  // grow-only: no allocation per step
  all.resize(size_t(P));
  check(MPI_Allgather(&x, 1, MPI_DOUBLE, all.data(), 1, MPI_DOUBLE, impl_->get(g)), "Allgather");
  double s = 0;
  for (double v : all) s += v;  // rank order: deterministic
  return s;
}

double MpiComm::allreduce_max(double x, Group g) const {
  double out = x;
  if (group_size(g) > 1) check(MPI_Allreduce(&x, &out, 1, MPI_DOUBLE, MPI_MAX, impl_->get(g)), "Allreduce(max)");
  return out;
}

void MpiComm::allreduce_sum(int64_t* buf, int64_t n, Group g) const {
  if (group_size(g) == 1 || n <= 0) return;
  for (int64_t lo = 0; lo < n; lo += max_count())  // integer sums: any order gives the same result
    check(MPI_Allreduce(MPI_IN_PLACE, buf + lo, int(std::min(max_count(), n - lo)), MPI_INT64_T, MPI_SUM,
                        impl_->get(g)),
          "Allreduce(int64)");
}

bool MpiComm::any(bool flag) const {
  int in = flag ? 1 : 0, out = in;
  if (size() > 1) check(MPI_Allreduce(&in, &out, 1, MPI_INT, MPI_MAX, impl_->world), "Allreduce(any)");
  return out != 0;
}

void MpiComm::barrier() const {
  if (size() > 1) check(MPI_Barrier(impl_->world), "Barrier");
}

void MpiComm::broadcast(std::vector<char>& bytes, int root) const {
  if (size() == 1) return;
  int64_t n = int64_t(bytes.size());
  check(MPI_Bcast(&n, 1, MPI_INT64_T, root, impl_->world), "Bcast");
  bytes.resize(size_t(n));
  for (int64_t lo = 0; lo < n; lo += max_count())
    check(MPI_Bcast(bytes.data() + lo, int(std::min(max_count(), n - lo)), MPI_CHAR, root, impl_->world), "Bcast");
}

std::vector<uint64_t> MpiComm::allgather(const std::vector<uint64_t>& mine) const {
  if (size() == 1) return mine;
  std::vector<uint64_t> all(mine.size() * size_t(size()));
  check(MPI_Allgather(mine.data(), int(mine.size()), MPI_UINT64_T, all.data(), int(mine.size()), MPI_UINT64_T,
                      impl_->world),
        "Allgather");
  return all;
}

std::vector<std::string> MpiComm::allgather(const std::string& mine) const {
  if (size() == 1) return {mine};
  const std::vector<uint64_t> lens = allgather(std::vector<uint64_t>{mine.size()});
  std::vector<int> counts(size()), displs(size());
  int64_t total = 0;
  for (int r = 0; r < size(); ++r) {
    if (total + int64_t(lens[r]) > INT_MAX) throw Error("Comm::allgather: strings longer than 2 GiB in all");
    counts[r] = int(lens[r]);
    displs[r] = int(total);
    total += int64_t(lens[r]);
  }
  std::vector<char> all(size_t(std::max<int64_t>(total, 1)));
  check(MPI_Allgatherv(mine.data(), int(mine.size()), MPI_CHAR, all.data(), counts.data(), displs.data(), MPI_CHAR,
                       impl_->world),
        "Allgatherv");
  std::vector<std::string> out(size());
  for (int r = 0; r < size(); ++r) out[r].assign(all.data() + displs[r], size_t(counts[r]));
  return out;
}

void MpiComm::alltoallv(const float* send, const std::vector<int64_t>& send_counts, float* recv,
                     const std::vector<int64_t>& recv_counts, Group g) const {
  const int P = group_size(g);
  if (int64_t(send_counts.size()) < P || int64_t(recv_counts.size()) < P)
    throw Error("Comm::alltoallv: " + std::to_string(P) + " counts needed, got " +
                std::to_string(send_counts.size()) + " and " + std::to_string(recv_counts.size()));
  Impl& m = *impl_;
  int64_t so = 0, ro = 0;
  for (int j = 0; j < P; ++j) {
    so += send_counts[size_t(j)];
    ro += recv_counts[size_t(j)];
  }
  if (P == 1) {
    if (so) std::memcpy(recv, send, size_t(so) * sizeof(float));
    return;
  }
  MPI_Comm c = impl_->get(g);
  if (std::max(so, ro) <= max_count()) {  // one MPI_Alltoallv: every count and displacement fits in int
    m.counts.resize(size_t(P));
    m.displs.resize(size_t(P));
    m.rcounts.resize(size_t(P));
    m.rdispls.resize(size_t(P));
    so = ro = 0;
    for (int j = 0; j < P; ++j) {
      m.counts[size_t(j)] = int(send_counts[size_t(j)]);
      m.displs[size_t(j)] = int(so);
      so += send_counts[size_t(j)];
      m.rcounts[size_t(j)] = int(recv_counts[size_t(j)]);
      m.rdispls[size_t(j)] = int(ro);
      ro += recv_counts[size_t(j)];
    }
    check(MPI_Alltoallv(send, m.counts.data(), m.displs.data(), MPI_FLOAT, recv, m.rcounts.data(),
                        m.rdispls.data(), MPI_FLOAT, c),
          "Alltoallv");
    return;
  }
  // Larger than one call can describe: point-to-point pieces of at most
  // max_count() elements, addressed with 64-bit offsets. Piece k of the
  // block for rank j is tagged k, so pieces match in order.
  m.requests.clear();
  so = ro = 0;
  for (int j = 0; j < P; ++j) {
    const int64_t rn = recv_counts[size_t(j)];
    for (int64_t lo = 0, k = 0; lo < rn; lo += max_count(), ++k) {
      m.requests.emplace_back();
      check(MPI_Irecv(recv + ro + lo, int(std::min(max_count(), rn - lo)), MPI_FLOAT, j, int(k % 32768), c,
                      &m.requests.back()),
            "Irecv(alltoallv)");
    }
    ro += rn;
  }
  for (int j = 0; j < P; ++j) {
    const int64_t sn = send_counts[size_t(j)];
    for (int64_t lo = 0, k = 0; lo < sn; lo += max_count(), ++k) {
      m.requests.emplace_back();
      check(MPI_Isend(send + so + lo, int(std::min(max_count(), sn - lo)), MPI_FLOAT, j, int(k % 32768), c,
                      &m.requests.back()),
            "Isend(alltoallv)");
    }
    so += sn;
  }
  check(MPI_Waitall(int(m.requests.size()), m.requests.data(), MPI_STATUSES_IGNORE), "Waitall(alltoallv)");
}

void MpiComm::alltoall(const std::vector<int64_t>& send, std::vector<int64_t>& recv, Group g) const {
  const int P = group_size(g);
  const int64_t B = int64_t(send.size()) / P;
  if (B < 1 || B * P != int64_t(send.size()) || B > INT_MAX)
    throw Error("Comm::alltoall: " + std::to_string(send.size()) + " values are not P = " + std::to_string(P) +
                " blocks of 1 to INT_MAX values");
  recv.resize(send.size());
  if (P == 1) {
    std::copy(send.begin(), send.end(), recv.begin());
    return;
  }
  check(MPI_Alltoall(send.data(), int(B), MPI_INT64_T, recv.data(), int(B), MPI_INT64_T, impl_->get(g)), "Alltoall");
}

}  // namespace finemoe
