#!/usr/bin/env bash
# System tools the test tiers use. Installed when missing and we are root on Debian/Ubuntu;
# otherwise the tests that need them skip with a reason (a failure under SWARMUPDATE_STRICT=1).
set -euo pipefail
need=()
command -v faketime >/dev/null || need+=(faketime)
if ((${#need[@]})); then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "missing system tools (tests needing them will skip): ${need[*]}" >&2
  fi
fi
