#!/bin/bash
# Make localhost/worldloom/python:3.11-bookworm from Debian packages: debootstrap a minimal bookworm
# with python3.11 (+ venv, CA certificates), tar it, import it with buildah. Needs root.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
image=${BASE_IMAGE:-localhost/worldloom/python:3.11-bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
buildah=(buildah --storage-driver "${STORAGE_DRIVER:-vfs}")
if "${buildah[@]}" inspect --type image "$image" >/dev/null 2>&1; then
    echo "$image exists"; exit 0
fi
work=$(mktemp -d /var/tmp/worldloom-base.XXXXXX)
trap 'rm -rf "$work"' EXIT
debootstrap --variant=minbase --include=python3.11,python3.11-venv,python3-distutils,ca-certificates \
    bookworm "$work/rootfs" "$mirror"
rm -rf "$work/rootfs"/var/cache/apt/archives/*.deb "$work/rootfs"/var/lib/apt/lists/* "$work/rootfs"/usr/share/doc/* "$work/rootfs"/usr/share/man/*
tar -C "$work/rootfs" -cf "$work/rootfs.tar" .
cp "$here/Containerfile" "$work/"
"${buildah[@]}" bud --isolation chroot -f "$work/Containerfile" -t "$image" "$work"
