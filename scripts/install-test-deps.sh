#!/usr/bin/env bash
# System packages the test tiers use (one per line in scripts/test-packages.txt). Installed when missing
# and we are root on Debian/Ubuntu; otherwise the tests that need them skip with a reason (a failure under
# SWARMUPDATE_STRICT=1).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
need=()
while read -r pkg _; do
  [[ -z "$pkg" || "$pkg" == \#* ]] && continue
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done < "$here/test-packages.txt"
if ((${#need[@]})); then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "missing system packages (tests needing them will skip): ${need[*]}" >&2
  fi
fi
