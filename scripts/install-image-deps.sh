#!/usr/bin/env bash
# Installs what `make image` and `make image-test` use, and only what is
# missing, so running it again is cheap. Debian/Ubuntu, as root.
#   mmdebstrap: the image's root filesystem from Debian packages
#   skopeo, umoci: read the archive as podman/containers-image and an OCI
#     unpacker do (test/image)
set -euo pipefail

declare -A need=([mmdebstrap]=mmdebstrap [skopeo]=skopeo [umoci]=umoci)
missing=()
for cmd in "${!need[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${need[$cmd]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "install-image-deps: missing packages ${missing[*]}; run as root to install them" >&2
  exit 1
fi
mapfile -t pkgs < <(printf '%s\n' "${missing[@]}" | sort -u)
echo "install-image-deps: installing ${pkgs[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
