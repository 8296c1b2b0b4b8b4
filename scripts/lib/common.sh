# Shared by scripts/train, scripts/test, scripts/bench, scripts/train-mpi: install what is
# missing, find Swift, choose the OpenBLAS kernel. Source it; it does nothing on its own.

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

# Python packages for the interop tests, best effort: safetensors + NumPy (checkpoints),
# tensorboard (its EventAccumulator reads our event files), matplotlib (scripts/plot).
ensure_python_packages() {
  command -v python3 >/dev/null 2>&1 || return 0
  local want=("numpy safetensors:import numpy, safetensors.numpy" "tensorboard:import tensorboard"
              "matplotlib:import matplotlib")
  local entry
  for entry in "${want[@]}"; do
    local pkgs=${entry%%:*} check=${entry#*:}
    python3 -c "$check" 2>/dev/null && continue
    say "installing Python packages $pkgs"
    # shellcheck disable=SC2086  # $pkgs is a list of names
    python3 -m pip install --quiet $pkgs 2>/dev/null ||
      python3 -m pip install --quiet --break-system-packages $pkgs ||
      echo "warning: could not pip install $pkgs; the tests that need it will be skipped" >&2
  done
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
  quiet_build -c release
  BIN="$ROOT/.build/release/vae-dist"
  [ -x "$BIN" ] || die "build produced no $BIN"
}
