# Shared by the scripts: install what is missing, find Swift, build or find the binary
# (resolve_bin), choose the OpenBLAS kernel, find the Python of the tools (find_python) and build
# mpirun's arguments (mpirun_args). Source it; it does nothing on its own.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
APT_PACKAGES=(libopenblas-dev libopenmpi-dev openmpi-bin zlib1g-dev pkg-config)

say() { echo "==> $*"; }
die() { echo "error: $*" >&2; exit 1; }

# Swift must be installed already; say how to get it if not.
ensure_swift() {
  if ! command -v swift >/dev/null 2>&1; then
    for d in /opt/swift/usr/bin /usr/share/swift/usr/bin "$HOME/.local/share/swiftly/bin"; do
      [ -x "$d/swift" ] && export PATH="$d:$PATH" && break
    done
  fi
  command -v swift >/dev/null 2>&1 ||
    die "Swift 6 is not installed: get it from https://www.swift.org/install (e.g. swiftly), then run this again"
}

# Debian/Ubuntu packages; apt-get update runs once, only when something is missing.
ensure_packages() {
  local missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null 2>&1 ||
    die "missing system packages (${missing[*]}): install OpenBLAS, Open MPI, zlib and pkg-config with your package manager"
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  say "installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

# Fashion-MNIST from Debian, best effort (only configs/fashion.yaml needs it).
ensure_fashion_mnist() {
  [ -d /usr/share/datasets/fashion-mnist ] && return 0
  command -v apt-get >/dev/null 2>&1 || return 0
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || true
}

# The project's Python tools live in a venv ($VAE_DIST_VENV, default <repo>/.venv), never in the
# system Python: NumPy + safetensors (interop tests), matplotlib (plots, figures), TensorBoard
# (event-file tests), and PyTorch's CPU wheel where a local wheel directory has it
# ($VAE_DIST_WHEELS, default /opt/wheels; a plain `pip install torch` pulls gigabytes of CUDA).
# Best effort: what cannot be installed makes the tests that need it skip, saying why. Exports
# VAE_DIST_PYTHON, which the tests and scripts use.
ensure_python_venv() {
  command -v python3 >/dev/null 2>&1 || return 0
  local venv=${VAE_DIST_VENV:-$ROOT/.venv}
  if [ ! -x "$venv/bin/python" ]; then
    say "creating the Python venv $venv"
    python3 -m venv "$venv" >/dev/null 2>&1 || { echo "warning: python3 -m venv failed; Python tests will be skipped" >&2; return 0; }
  fi
  export VAE_DIST_PYTHON=$venv/bin/python
  local pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
  "$VAE_DIST_PYTHON" -c "import numpy, safetensors" 2>/dev/null ||
    { say "installing numpy and safetensors into $venv"; "${pip[@]}" numpy safetensors || echo "warning: numpy/safetensors not installed" >&2; }
  "$VAE_DIST_PYTHON" -c "import matplotlib" 2>/dev/null ||
    { say "installing matplotlib into $venv"; "${pip[@]}" matplotlib || echo "warning: matplotlib not installed" >&2; }
  "$VAE_DIST_PYTHON" -c "import tensorboard" 2>/dev/null ||
    { say "installing tensorboard into $venv"; "${pip[@]}" tensorboard || echo "warning: tensorboard not installed" >&2; }
  install_torch "$venv" || echo "warning: torch not installed; its tests will be skipped" >&2
  "$VAE_DIST_PYTHON" -c "import sklearn" 2>/dev/null ||
    { say "installing scikit-learn (its digits are the own-data example) into $venv"; "${pip[@]}" scikit-learn || echo "warning: scikit-learn not installed; its tests will be skipped" >&2; }
  "$VAE_DIST_PYTHON" -c "import pytest" 2>/dev/null ||
    { say "installing pytest into $venv"; "${pip[@]}" pytest || echo "warning: pytest not installed; python/tests will not run" >&2; }
  "$VAE_DIST_PYTHON" -c "import vae_dist" 2>/dev/null || "${pip[@]}" -e "$ROOT/python" >/dev/null 2>&1 || true
  export PYTHONPATH="$ROOT/python${PYTHONPATH:+:$PYTHONPATH}"
}

# PyTorch's CPU wheel into the venv VENV from $VAE_DIST_WHEELS (default /opt/wheels) when it is
# missing there and the directory has one. Fails when torch is still missing afterwards.
install_torch() {
  local venv=$1 wheels=${VAE_DIST_WHEELS:-/opt/wheels}
  "$venv/bin/python" -c "import torch" 2>/dev/null && return 0
  ls "$wheels"/torch-*.whl >/dev/null 2>&1 || return 1
  say "installing PyTorch (CPU) from $wheels into $venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --find-links "$wheels" "torch==2.13.0+cpu"
}

# The Python that runs the project's tools (`"$VAE_DIST_PYTHON" -m vae_dist.<tool>`): your
# $VAE_DIST_PYTHON, else the venv scripts/test makes ($VAE_DIST_VENV, default .venv), else
# python3. The tools need only the standard library (plots need matplotlib and say so). Puts
# python/ first on PYTHONPATH, so this checkout's vae_dist runs, installed or not.
find_python() {
  local py=${VAE_DIST_PYTHON:-} venv=${VAE_DIST_VENV:-$ROOT/.venv}
  [ -n "$py" ] || { [ -x "$venv/bin/python" ] && py=$venv/bin/python; } || py=python3
  command -v "$py" >/dev/null 2>&1 ||
    die "no Python to run the tools: '$py' not found (install python3 3.9+, or set VAE_DIST_PYTHON; scripts/test makes a venv in .venv)"
  export VAE_DIST_PYTHON=$py PYTHONPATH="$ROOT/python${PYTHONPATH:+:$PYTHONPATH}"
}

# After find_python: pip-installs PACKAGE when MODULE does not import, into a venv's Python only
# (a system Python is never touched: then it says what to install).
ensure_python_module() {
  local module=$1 package=$2
  "$VAE_DIST_PYTHON" -c "import $module" 2>/dev/null && return 0
  "$VAE_DIST_PYTHON" -c "import sys; sys.exit(sys.prefix == sys.base_prefix)" ||
    die "$VAE_DIST_PYTHON has no $module and is no venv's Python: install $package into a venv and set VAE_DIST_PYTHON (or run scripts/test, which makes .venv)"
  say "installing $package into the venv of $VAE_DIST_PYTHON"
  "$VAE_DIST_PYTHON" -m pip install --quiet --disable-pip-version-check "$package" || die "pip install $package failed"
}

# OPENBLAS_CORETYPE: an explicit setting always wins. When unset and OpenBLAS would fall back
# to a kernel without AVX2/FMA on a CPU that has them, use the fastest kernel the CPU supports.
choose_blas_kernel() {
  local bin=$1
  if [ -n "${OPENBLAS_CORETYPE+set}" ]; then
    say "OpenBLAS kernel: $("$bin" blas --kernel) (OPENBLAS_CORETYPE=$OPENBLAS_CORETYPE set by you)"
    return 0
  fi
  if ! "$bin" blas --check-fallback >/dev/null 2>&1; then
    local best
    best=$("$bin" blas --best)
    if [ -n "$best" ]; then
      export OPENBLAS_CORETYPE=$best
      say "OpenBLAS would fall back to its slow $("env" -u OPENBLAS_CORETYPE "$bin" blas --kernel) kernel here; using OPENBLAS_CORETYPE=$best"
      return 0
    fi
  fi
  say "OpenBLAS kernel: $("$bin" blas --kernel)"
}

# swift build without its per-file progress lines; fails the script when the build fails.
quiet_build() {
  set +e
  (cd "$ROOT" && swift build "$@" 2>&1 | grep --line-buffered -Ev '^\[[0-9]+/[0-9]+\]'; exit "${PIPESTATUS[0]}")
  local rc=$?
  set -e
  [ "$rc" -eq 0 ] || die "swift build $* failed"
}

build_release() {
  say "building (release)"
  quiet_build -c release --product vae-dist
  BIN="$ROOT/.build/release/vae-dist"
  [ -x "$BIN" ] || die "build produced no $BIN"
}

# BIN, the vae-dist binary the script runs: $VAE_DIST_BIN when set (nothing is built), else a
# release build of this checkout (Swift and the system packages installed first when missing).
resolve_bin() {
  if [ -n "${VAE_DIST_BIN:-}" ]; then
    [ -x "$VAE_DIST_BIN" ] || die "VAE_DIST_BIN=$VAE_DIST_BIN is not an executable file"
    BIN=$VAE_DIST_BIN
  else
    ensure_swift
    ensure_packages
    build_release
  fi
}

# The cores this process may run on (nproc without its OMP_NUM_THREADS override).
cpu_cores() { OMP_NUM_THREADS='' OMP_THREAD_LIMIT='' nproc; }

# How many processes scripts/train runs: TRAIN_NP, and why, TRAIN_NP_WHY.
#   train_np REQUEST SOURCE   REQUEST: a positive integer or auto; SOURCE names where it came
#                             from (--np, VAE_DIST_NP) for the error message
# auto: 2 ranks under mpirun when mpirun is installed, this process may use 2 or more cores and
# it is not already an MPI rank (np 2 with cores ÷ 2 threads each trains faster than one process
# with all the threads; docs/performance.md, time to quality); else 1. Any NP > 1 needs mpirun.
train_np() {
  local want=$1 source=$2 cores
  cores=$(cpu_cores)
  if [ "$want" = auto ]; then
    TRAIN_NP=1
    if [ -n "${OMPI_COMM_WORLD_SIZE:-}${PMI_RANK:-}${PMIX_RANK:-}" ]; then TRAIN_NP_WHY="already an MPI rank"
    elif ! command -v mpirun >/dev/null 2>&1; then TRAIN_NP_WHY="mpirun is not installed"
    elif [ "$cores" -lt 2 ]; then TRAIN_NP_WHY="1 core"
    else TRAIN_NP=2; TRAIN_NP_WHY="mpirun installed, $cores cores"; fi
    return 0
  fi
  [[ "$want" =~ ^[1-9][0-9]{0,3}$ ]] || die "$source: expected auto or a number of processes 1…9999, got '$want'"
  TRAIN_NP=$want TRAIN_NP_WHY="$source $want"
  [ "$want" -eq 1 ] || command -v mpirun >/dev/null 2>&1 ||
    die "$source $want needs mpirun: install Open MPI (openmpi-bin on Debian/Ubuntu), or use --np 1"
}

# mpirun's arguments (without `mpirun`) for NP ranks of vae-dist, in the array MPIRUN_ARGS:
#   mpirun_args NP [--hostfile FILE] [--threads T] [--shared]
#     -np NP --mca btl_vader_single_copy_mechanism none   (shared memory without single-copy:
#                      measured fastest here, and it works in containers without ptrace)
#     --allow-run-as-root                 when you are root
#     --hostfile FILE --bind-to none      with --hostfile
#     --oversubscribe --bind-to none      else when NP exceeds the cores
#     --bind-to none                      else with --shared (other jobs share these cores)
#     --bind-to core                      otherwise
#     -x OPENBLAS_NUM_THREADS=T           T: --threads, else $OPENBLAS_NUM_THREADS, else
#                                         cores / NP, at least 1
#     -x OPENBLAS_CORETYPE, -x VAE_DIST_DATA   each when set
#     $MPIRUN_EXTRA                       split at white space
# vae_dist.launch.mpirun_args builds the same list for the Python tools
# (python/tests/test_launch.py checks that the two agree).
mpirun_args() {
  local np=$1 hostfile="" threads="" shared=0 cores v extra=()
  shift
  [[ "$np" =~ ^[1-9][0-9]*$ ]] || die "mpirun_args: NP must be a positive integer, got '$np'"
  while [ $# -gt 0 ]; do
    case "$1" in
      --hostfile) hostfile=$2; shift 2 ;;
      --threads) threads=$2; shift 2 ;;
      --shared) shared=1; shift ;;
      *) die "mpirun_args: unknown option '$1'" ;;
    esac
  done
  cores=$(cpu_cores)
  threads=${threads:-${OPENBLAS_NUM_THREADS:-$((cores / np > 0 ? cores / np : 1))}}
  MPIRUN_ARGS=(-np "$np" --mca btl_vader_single_copy_mechanism none)
  if [ "$(id -u)" -eq 0 ]; then MPIRUN_ARGS+=(--allow-run-as-root); fi
  if [ -n "$hostfile" ]; then MPIRUN_ARGS+=(--hostfile "$hostfile" --bind-to none)
  elif [ "$np" -gt "$cores" ]; then MPIRUN_ARGS+=(--oversubscribe --bind-to none)
  elif [ "$shared" = 1 ]; then MPIRUN_ARGS+=(--bind-to none)
  else MPIRUN_ARGS+=(--bind-to core); fi
  MPIRUN_ARGS+=(-x "OPENBLAS_NUM_THREADS=$threads")
  for v in OPENBLAS_CORETYPE VAE_DIST_DATA; do
    if [ -n "${!v+set}" ]; then MPIRUN_ARGS+=(-x "$v"); fi
  done
  read -r -a extra <<<"${MPIRUN_EXTRA:-}"
  MPIRUN_ARGS+=("${extra[@]+"${extra[@]}"}")
}
