#!/usr/bin/env bash
# Debian's Chromium for the dashboard's browser tests (Playwright drives it; browser downloads are not
# allowed, so Playwright's own browsers are never fetched). Installs it when missing: as root with
# apt-get, else with sudo; otherwise says what to run. ALMERE_SKIP_BROWSER=1 skips the browser tests.
set -euo pipefail
if [ "${ALMERE_SKIP_BROWSER:-}" = "1" ] || command -v chromium >/dev/null 2>&1; then
  exit 0
fi
install=(apt-get install -y --no-install-recommends chromium)
if [ "$(id -u)" = "0" ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive "${install[@]}" >/dev/null
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive "${install[@]}" >/dev/null
else
  echo "The browser tests need Debian's chromium: run 'sudo ${install[*]}', or set ALMERE_SKIP_BROWSER=1" >&2
  exit 1
fi
command -v chromium >/dev/null
