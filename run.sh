#!/usr/bin/env bash
# The two commands:  ./run.sh        set up, then serve the API (ComfyUI or the stand-in)
#                    ./run.sh test   set up, then run the whole test suite
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}

setup() {
    local extras=$1
    if [ ! -x .venv/bin/python ]; then
        echo "==> creating .venv"
        "$PYTHON" -m venv .venv
    fi
    local stamp=".venv/.installed-${extras:-base}-$(cat pyproject.toml | sha256sum | cut -c1-12)"
    if [ ! -f "$stamp" ]; then
        echo "==> installing the project${extras:+ with [$extras]}"
        .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
        .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".${extras:+[$extras]}"
        touch "$stamp"
    fi
}

ensure_chromium() {
    # Browser tests drive Debian's Chromium (Playwright's own download cannot work here).
    if [ -x /usr/bin/chromium ]; then return; fi
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "==> installing Chromium for the browser tests (apt)"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        echo "==> /usr/bin/chromium missing and apt unavailable: browser tests will be skipped"
    fi
}

case "${1:-}" in
    test)
        shift
        setup test
        ensure_chromium
        if [ $# -eq 0 ]; then
            # The whole check: any finding fails it, before a test runs.
            echo "==> ruff check"; .venv/bin/ruff check .
            echo "==> ruff format --check"; .venv/bin/ruff format --check .
            echo "==> mypy (strict, proxy/)"; .venv/bin/mypy
        fi
        exec .venv/bin/python -m pytest "$@"
        ;;
    ""|up|serve)
        [ $# -gt 0 ] && shift
        # [standin]: the graph editor the stand-in serves when no ComfyUI is found.
        setup standin
        exec .venv/bin/python -m proxy up "$@"
        ;;
    *)
        echo "usage: ./run.sh [test [pytest args]] | ./run.sh [up options]   (see python -m proxy up --help)" >&2
        exit 2
        ;;
esac
