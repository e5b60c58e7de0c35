#!/usr/bin/env bash
# Installs the headless browser that tests/test_page.py drives (Chromium and its WebDriver,
# from the distribution's packages: no browser download of its own) and a font to render
# the page with. Idempotent and quiet: does nothing when both are already on PATH.
#   Debian (bookworm and later): chromium chromium-driver
#   Ubuntu: chromium-browser chromium-chromedriver (on 20.04+ these wrap the snap, which
#     containers lack; use a Debian image there)
set -euo pipefail

if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
  if command -v chromedriver >/dev/null 2>&1; then
    exit 0
  fi
fi

SUDO=''
if [ "$(id -u)" -ne 0 ]; then
  SUDO='sudo'
fi

. /etc/os-release
case "${ID:-}" in
  ubuntu) PACKAGES='chromium-browser chromium-chromedriver fonts-dejavu-core' ;;
  *) PACKAGES='chromium chromium-driver fonts-dejavu-core' ;;
esac

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
# shellcheck disable=SC2086  # PACKAGES is a list of names
$SUDO apt-get install -y -qq --no-install-recommends $PACKAGES >/dev/null
chromedriver --version
