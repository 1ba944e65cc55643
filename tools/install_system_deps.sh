#!/usr/bin/env bash
# The Debian packages the project needs, each installed only when its command is missing (idempotent: a machine
# that has them all runs no apt-get at all):
#   chromium, chromedriver  headless browser check of the rendered book (packages chromium, chromium-driver)
#   lsar, unar              RAR extraction of the real datasets (package unar)
#   npm                     vendoring the book's JavaScript from the npm registry. Node.js images ship npm inside
#                           their own nodejs package, which conflicts with Debian's npm ("held broken packages"), so
#                           Debian's npm is asked for only where neither node nor npm is installed.
# APT_GET overrides the apt-get command (tests run it as `apt-get -s` on a PATH without the tools).
set -euo pipefail
need=()
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
{ command -v lsar >/dev/null && command -v unar >/dev/null; } || need+=(unar)
if ! command -v npm >/dev/null; then
  if command -v node >/dev/null; then
    echo "error: node is installed without npm; install npm from the same Node.js distribution" \
         "(Debian's npm package conflicts with it)" >&2
    exit 1
  fi
  need+=(npm)
fi
[ ${#need[@]} -eq 0 ] && exit 0

sudo=()
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "error: not root and no sudo: install ${need[*]} with apt-get" >&2; exit 1; }
  sudo=(sudo)
fi
apt=${APT_GET:-apt-get}
echo "installing Debian packages: ${need[*]}"
"${sudo[@]}" $apt update -qq || echo "warning: apt-get update failed; trying the package lists at hand" >&2
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive $apt install -y -qq "${need[@]}" >/dev/null
