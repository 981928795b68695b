#!/usr/bin/env bash
# Install everything into .venv (pinned stack + test tools), then run the demo.
#   ./setup.sh             install and run `ecotaxa demo` (the whole loop on real images)
#   ./setup.sh --no-demo   install only
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3

if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# torch/torchvision are pinned in pyproject.toml (2.14.1 / 0.29.1, a matching pair for timm).
.venv/bin/python -m pip install --quiet -e '.[test]'

# Debian's chromium drives the dashboard's browser test (never `playwright install`).
if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing Debian chromium for the browser test ..."
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null
    else
        echo "note: install Debian's chromium (apt-get install chromium) for the browser test" >&2
    fi
fi

if [ "${1:-}" != "--no-demo" ]; then
    .venv/bin/ecotaxa demo
fi
