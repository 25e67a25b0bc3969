# The module map: the one place that says which module owns each header and
# what each module may use. CMakeLists.txt builds one static library
# finemoe_<module> per library module and links it to exactly the DEPS and USES
# below; tests/layers/check_layers.py (ctest -R layers) checks every #include
# and `#pragma omp` of src/, include/ and analysis/ against this file.
#
#   finemoe_package(NAME INCLUDES pattern... [PRAGMAS word...])
#     an external package: the #include <...> patterns (shell-style) and the
#     `#pragma WORD` lines that need it.
#   finemoe_module(NAME DIR dir [OPTIONAL] [DEPS module...] [USES package...]
#                  [HEADERS header...])
#     DIR      the module's directory. Every file in it belongs to the module,
#              and its headers are private to it (other modules may not include
#              them; tests may).
#     OPTIONAL DIR may not exist yet.
#     DEPS     the modules whose public headers it includes, directly (what is
#              only reached through another header does not count). A module
#              may include the public headers of itself and its DEPS only.
#     USES     the packages whose headers (or pragmas) it uses.
#     HEADERS  the public headers it owns, in include/finemoe/. Every header
#              there is owned by exactly one module.
# DEPS must form no cycle, and every DEPS and USES entry must be used by some
# file of the module, so this map stays the real graph. Plain words only here:
# no quotes, variables or parentheses in arguments (the checker reads this file
# too, without CMake).

finemoe_package(openmp INCLUDES omp.h PRAGMAS omp)
finemoe_package(mpi INCLUDES mpi.h mpi_*.h)
finemoe_package(hdf5 INCLUDES hdf5.h hdf5_hl.h H5*.h)
finemoe_package(blas INCLUDES cblas.h openblas_config.h)
finemoe_package(dnnl INCLUDES oneapi/dnnl/* dnnl.h dnnl.hpp)
finemoe_package(boost INCLUDES boost/*)
finemoe_package(ceres INCLUDES ceres/*)
finemoe_package(cuda INCLUDES cuda.h cuda_*.h cublas*.h nccl.h cub/* thrust/*)
# x86 vector intrinsics: backend kernels only (no link library)
finemoe_package(intrinsics INCLUDES *intrin.h)

# Tensor views, RNG, config, errors, logging, parameter store, and the Backend
# interface (kernels.hpp: the kernels' declarations and DeviceBuffer, no
# implementation). The interface lives here, below every backend, so that the
# parameter store can hold its tensors in a backend's memory; each backend
# module implements it.
finemoe_module(core DIR src/core
  USES boost openmp
  HEADERS app.hpp config.hpp counting.hpp error.hpp kernels.hpp log.hpp memory.hpp memory_check.hpp
          params.hpp reduce.hpp rng.hpp)

# The CPU backend: GEMM engines (OpenBLAS, oneDNN), threads, the phase
# profiler, and its implementation of every kernel of the Backend object
# (kernels.hpp, the seam model, moe and train call through): the llm.c-style
# dense kernels (src/backend/cpu/ops.hpp), the MoE kernels and the
# optimizer's. device.hpp: cpu_backend() and run.device's choice (backend_for).
# src/backend/cpu/*.hpp are its internals, private like every src/<module>/ header.
finemoe_module(backend_cpu DIR src/backend/cpu
  DEPS core
  USES openmp blas dnnl intrinsics
  HEADERS backend.hpp device.hpp profile.hpp)

# Planned CUDA backend (FINEMOE_ENABLE_CUDA builds src/backend/cuda/*.cu, *.cpp
# into finemoe_backend_cuda when the directory has sources; it has none yet).
finemoe_module(backend_cuda DIR src/backend/cuda OPTIONAL
  DEPS core
  USES cuda)

# Router, dispatcher (local), experts, MoE layer.
finemoe_module(moe DIR src/moe
  DEPS core backend_cpu
  HEADERS moe.hpp)

# The transformer's orchestration (blocks, dense FFN or MoE, loss) over the
# Backend's kernels; parameter declaration and initialisation (whose random
# draws are a Backend kernel too). No OpenMP: every loop worth threading is a
# kernel of the backend.
finemoe_module(model DIR src/model
  DEPS core backend_cpu moe
  HEADERS model.hpp)

# The Comm interface and its host MPI implementation (MpiComm), deterministic
# collectives, start-up agreement, all-to-all dispatcher. backend_cpu for
# device.hpp's cpu_backend(), make_dispatcher's default backend.
finemoe_module(parallel DIR src/parallel
  DEPS core backend_cpu moe
  USES mpi
  HEADERS agreement.hpp collective.hpp comm.hpp comm_mpi.hpp dispatcher_mpi.hpp)

# HDF5 metrics and checkpoints, token sources (synthetic corpus, shards),
# batches. metrics.hpp includes moe.hpp for RoutingStats, checkpoint.hpp
# comm.hpp for Comm.
finemoe_module(io DIR src/io
  DEPS core parallel moe
  USES mpi hdf5 openmp
  HEADERS checkpoint.hpp data.hpp h5layout.hpp metrics.hpp shards.hpp synthetic.hpp)

# Training loop, optimizer, evaluation, signals, run lock, sweep expansion.
finemoe_module(train DIR src/train
  DEPS core backend_cpu model parallel io
  HEADERS final_eval.hpp optimizer.hpp run_lock.hpp signals.hpp sweep.hpp trainer.hpp)

# One main per executable; they link the finemoe target (every library module).
finemoe_module(apps DIR src/apps
  DEPS core backend_cpu moe model parallel io train
  USES openmp)

# moe-analyze and finemoe_analysis (analysis/CMakeLists.txt).
finemoe_module(analysis DIR analysis
  DEPS core io
  USES ceres boost)
