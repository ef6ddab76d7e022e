#!/usr/bin/env bash
# Makes a small image with no registry: Debian's busybox-static and its applet links in a folder, imported into
# the engine at DOCKER_HOST under the given name (default devci/busybox:latest). Prints the image id.
set -euo pipefail
name=${1:-devci/busybox:latest}
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/root"
cp /bin/busybox "$root/bin/busybox"
for applet in $(/bin/busybox --list); do [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"; done
echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
echo 'root:x:0:' >"$root/etc/group"
echo 'devci test image (busybox)' >"$root/etc/devci-image"
chmod 1777 "$root/tmp"
tar -C "$root" -c . | docker import --change 'ENV PATH=/bin' - "$name"
