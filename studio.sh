#!/usr/bin/env bash
# One entry point that sets everything up on a fresh machine, then runs what you ask for:
#   ./studio.sh app    -> serve the Gradio app on http://127.0.0.1:7860
#   ./studio.sh test   -> run the test suite
# Set-up (idempotent): a virtualenv in .venv with requirements.txt and this package installed (console script
# `gs-studio`); for tests, Debian's chromium for the browser test when apt is available.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if ! cmp -s requirements.txt .venv/.requirements.installed 2>/dev/null; then
  .venv/bin/pip install --quiet -r requirements.txt
  .venv/bin/pip install --quiet --no-deps --no-build-isolation -e . 2>/dev/null || .venv/bin/pip install --quiet --no-deps -e .
  cp requirements.txt .venv/.requirements.installed
fi
export GRADIO_ANALYTICS_ENABLED=False PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
case "${1:-app}" in
  app)
    shift || true
    exec .venv/bin/python app.py "$@" ;;
  test)
    shift || true
    if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
      (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "chromium not installed: the browser test will be skipped"
    fi
    exec .venv/bin/python -m pytest -q "$@" ;;
  *)
    echo "usage: $0 [app|test] [extra arguments]" >&2; exit 2 ;;
esac
