# shellcheck shell=bash
# Shared environment setup for scripts/run and scripts/test. Source it from the repo root;
# do not execute it.
#
# Makes sure .venv exists (built with the first of python3.11, python3.12, python3.13,
# python3 that is Python >= 3.11) and that the project is installed in it with the dev
# extra (pip install -e '.[dev]'). The install is redone only when pyproject.toml changed
# since the last successful one: its sha256 is kept in .venv/.tradingd-installed, written
# after pip succeeded. Silent when there is nothing to do; one line on stderr when it
# installs.
#
# Afterwards TRADINGD_BIN names the directory holding the project's python and tradingd.
#
# TRADINGD_SKIP_SETUP=1 skips the setup entirely (the test suite runs these scripts that
# way, with TRADINGD_BIN pointing at the interpreter it runs under); TRADINGD_BIN then
# defaults to .venv/bin.

_tradingd_min_version_check='import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'

_tradingd_say() {
    printf 'tradingd setup: %s\n' "$*" >&2
}

# Prints the first usable Python >= 3.11 on PATH. (A pyenv shim can exist for a version
# that is not selected, so each candidate is run, not just looked up.)
_tradingd_find_python() {
    local candidate
    for candidate in python3.11 python3.12 python3.13 python3; do
        command -v "$candidate" >/dev/null 2>&1 || continue
        if "$candidate" -c "$_tradingd_min_version_check" >/dev/null 2>&1; then
            printf '%s\n' "$candidate"
            return 0
        fi
    done
    return 1
}

_tradingd_pyproject_sha256() {
    local digest
    if command -v sha256sum >/dev/null 2>&1; then
        digest="$(sha256sum pyproject.toml)"
    elif command -v shasum >/dev/null 2>&1; then
        digest="$(shasum -a 256 pyproject.toml)"
    else
        digest="$(.venv/bin/python -c \
            'import hashlib; print(hashlib.sha256(open("pyproject.toml", "rb").read()).hexdigest())')"
    fi
    printf '%s\n' "${digest%% *}"
}

_tradingd_venv_ok() {
    [[ -x .venv/bin/python ]] && .venv/bin/python -c "$_tradingd_min_version_check" >/dev/null 2>&1
}

_tradingd_up_to_date() {
    local marker=.venv/.tradingd-installed
    _tradingd_venv_ok && [[ -f "$marker" ]] \
        && [[ "$(<"$marker")" == "$(_tradingd_pyproject_sha256)" ]]
}

_tradingd_install() {
    local python digest action
    if ! _tradingd_venv_ok; then
        if ! python="$(_tradingd_find_python)"; then
            _tradingd_say "error: no Python >= 3.11 found (tried python3.11, python3.12," \
                "python3.13, python3 on PATH); install Python 3.11 or newer and retry"
            return 1
        fi
        action="creating .venv with $python and installing the project (pip install -e '.[dev]')"
        _tradingd_say "$action"
        if ! "$python" -m venv --clear .venv; then
            _tradingd_say "error: '$python -m venv .venv' failed (on Debian/Ubuntu the venv" \
                "module comes with the python3-venv package)"
            return 1
        fi
    else
        _tradingd_say "installing the project into .venv (pip install -e '.[dev]'):" \
            "pyproject.toml is new or changed since the last install"
    fi
    rm -f .venv/.tradingd-installed
    # Hash before installing: if pyproject.toml changes during the install, the next run
    # installs again rather than trusting a stale marker.
    digest="$(_tradingd_pyproject_sha256)"
    if ! .venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'; then
        _tradingd_say "error: pip install -e '.[dev]' failed (see above)"
        return 1
    fi
    printf '%s\n' "$digest" >.venv/.tradingd-installed.tmp \
        && mv -f .venv/.tradingd-installed.tmp .venv/.tradingd-installed
}

_tradingd_setup() {
    if [[ ! -f pyproject.toml ]]; then
        _tradingd_say "error: no pyproject.toml in $PWD (run the scripts from this repository)"
        return 1
    fi
    _tradingd_up_to_date && return 0
    # Serialise concurrent setups (two terminals, parallel CI steps). The lock is taken on
    # this file itself, so no lock file is left behind; without flock, setups just race.
    if command -v flock >/dev/null 2>&1; then
        exec {_tradingd_lock_fd}<scripts/_setup.sh
        flock "$_tradingd_lock_fd"
    fi
    local status=0
    _tradingd_up_to_date || _tradingd_install || status=$?
    if [[ -n "${_tradingd_lock_fd:-}" ]]; then
        exec {_tradingd_lock_fd}<&-
        unset _tradingd_lock_fd
    fi
    return "$status"
}

if [[ -n "${TRADINGD_SKIP_SETUP:-}" && "${TRADINGD_SKIP_SETUP}" != 0 ]]; then
    TRADINGD_BIN="${TRADINGD_BIN:-.venv/bin}"
else
    TRADINGD_BIN=.venv/bin
    _tradingd_setup || exit 1
fi
