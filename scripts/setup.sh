#!/usr/bin/env bash
# One-command set-up on a fresh machine: the Fashion-MNIST Debian package (where apt exists)
# and the project with its test tools. Usage: bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v apt-get >/dev/null 2>&1 && [ ! -d /usr/share/datasets/fashion-mnist ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq dataset-fashion-mnist \
    || echo "setup: could not install dataset-fashion-mnist; use --data-dir or download=True" >&2
fi
python -m pip install -q --upgrade pip
python -m pip install -q -e '.[test]'
