# Sourced by scripts/up, scripts/test and scripts/dev: a virtual environment with Nakama
# installed from this clone, its bin first on PATH.
#
# The environment is the active one ($VIRTUAL_ENV), else .venv in the clone, made with
# `python3 -m venv` (Debian and Ubuntu refuse `pip install` into the system Python, PEP 668).
# The install (`pip install -e .`, or `-e '.[dev]'` with the test tools) is skipped while
# pyproject.toml is unchanged since the last one: a stamp in the environment holds its hash.

nakama_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# use_venv EXTRAS: EXTRAS is "" (Nakama) or "dev" (Nakama and the test and check tools).
use_venv() {
  local extras=$1 venv
  if [ -n "${VIRTUAL_ENV:-}" ]; then
    venv=$VIRTUAL_ENV
    if [ ! -x "$venv/bin/python" ]; then
      echo "error: VIRTUAL_ENV=$venv has no bin/python; deactivate it or make it again" >&2
      exit 1
    fi
  else
    venv=$nakama_root/.venv
    [ -x "$venv/bin/python" ] || make_venv "$venv"
  fi
  export PATH="$venv/bin:$PATH"
  NAKAMA_VENV=$venv

  local hash stamp spec=$nakama_root
  hash="$(sha256sum "$nakama_root/pyproject.toml" | cut -d' ' -f1) $nakama_root"
  stamp=$venv/.nakama-installed${extras:+-$extras}
  if [ -x "$venv/bin/nakama" ] && { [ "$(cat "$stamp" 2>/dev/null)" = "$hash" ] ||
      { [ -z "$extras" ] && [ "$(cat "$venv/.nakama-installed-dev" 2>/dev/null)" = "$hash" ]; }; }; then
    return 0  # installed from this pyproject.toml already ("dev" includes the plain install)
  fi
  [ -z "$extras" ] || spec="$nakama_root[$extras]"
  echo "installing Nakama${extras:+ with [$extras]} into $venv (pip install -e; a minute on the first run) ..." >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$spec"
  printf '%s\n' "$hash" >"$stamp"
}

make_venv() {
  local venv=$1 out version
  if ! command -v python3 >/dev/null; then
    echo "error: python3 is not installed: apt-get install -y python3 python3-venv" >&2
    exit 1
  fi
  if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    version=$(python3 -c 'import platform; print(platform.python_version())')
    echo "error: Nakama needs Python 3.11 or newer; python3 is $version" >&2
    exit 1
  fi
  echo "making a virtual environment in $venv ..." >&2
  if ! out=$(python3 -m venv "$venv" 2>&1); then
    rm -rf "$venv"  # half made (no pip): the next run starts afresh
    if grep -q -e ensurepip -e 'python3.*-venv' <<<"$out" || ! python3 -c 'import venv' 2>/dev/null; then
      echo "error: python3 cannot make virtual environments without the python3-venv package:" >&2
      echo "       apt-get install -y python3-venv" >&2
    else
      printf '%s\n' "$out" >&2
      echo "error: python3 -m venv $venv failed" >&2
    fi
    exit 1
  fi
}
