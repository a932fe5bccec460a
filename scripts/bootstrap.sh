#!/usr/bin/env bash
# One-time (idempotent) set-up of a fresh machine: Debian packages the defaults need, a virtualenv in .venv
# with the package installed editable, and the NLTK WordNet data prepared from Debian's copy.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_needed=()
[ -f /usr/share/apertium/modes/eng-spa.mode ] || apt_needed+=(apertium apertium-eng-spa)
[ -f /usr/share/wordnet/data.noun ] || apt_needed+=(wordnet-base wordnet-sense-index)
# serve's page (GET /) is tested in a real headless browser
command -v chromedriver >/dev/null || apt_needed+=(chromium chromium-driver)
if [ ${#apt_needed[@]} -gt 0 ]; then
    echo "bootstrap: installing Debian packages: ${apt_needed[*]}"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${apt_needed[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# Re-install only when the declared dependencies changed: a no-op bootstrap takes a second.
stamp=.venv/.bootstrap-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
    .venv/bin/python -m pip install -q --upgrade pip
    # The CPU wheel of torch 2.13.0 lies on this kind of machine's disk; elsewhere pip fetches it.
    # Set TORCH_SPEC (e.g. "torch" or a CUDA index URL install) to keep a GPU build.
    .venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/python -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
    # dev: the tests and docs; distributed: Ray Data, so the tests run the engine path on a local cluster
    .venv/bin/python -m pip install -q -e ".[dev,distributed]"
    touch "$stamp"
fi
.venv/bin/python -m pipeline.core.resources
