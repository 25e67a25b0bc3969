#!/usr/bin/env bash
# Installs the Debian 12 packages finemoe needs (only those missing), so that
# a fresh machine can build and test with one command. Run as root (or with
# sudo available). Safe to rerun.
set -euo pipefail

PACKAGES=(
  build-essential cmake git ccache pkg-config
  libopenmpi-dev openmpi-bin
  libhdf5-openmpi-dev hdf5-tools
  libboost-program-options-dev
  libopenblas-dev
  libopenblas-openmp-dev
  # oneDNN's CMake config (dnnl-config.cmake) calls find_package(OpenCL), but
  # libdnnl-dev only *recommends* ocl-icd-opencl-dev, and we install without
  # recommends: name it, or configure fails on a fresh machine.
  libdnnl-dev ocl-icd-opencl-dev
  libceres-dev libeigen3-dev
  libgtest-dev googletest libbenchmark-dev
  gnuplot slurm-wlm
  python3-h5py python3-numpy
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  echo "finemoe setup: installing ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "finemoe setup: all Debian packages present"
fi
