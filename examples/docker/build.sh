#!/usr/bin/env bash
# Builds the Quiver image: one command, from anywhere.
#
#   examples/docker/build.sh            # prints the image name (quiver:latest) at the end
#
# No base image can be pulled on the machines Quiver is built on, so the image is
# `FROM scratch` holding one statically linked `quiver` binary built here with the host's
# glibc target (+crt-static). The binary and the Dockerfile are staged into a small build
# context under the cargo target directory, so the repository itself is never sent to the
# Docker daemon. Running it again rebuilds only what changed (cargo and Docker both cache).
#
# Environment: QUIVER_IMAGE (default quiver:latest), CARGO_TARGET_DIR (default ./target),
# CARGO (default cargo).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
image=${QUIVER_IMAGE:-quiver:latest}
triple=x86_64-unknown-linux-gnu
# A relative CARGO_TARGET_DIR means relative to where the caller stands, as for cargo.
target_dir=$(realpath -m "${CARGO_TARGET_DIR:-$root/target}")

# crt-static with an explicit --target links the glibc statically into `quiver` while build
# scripts and proc macros stay ordinary host programs. getrandom's default Linux backend
# looks the getrandom function up with dlsym, which a static glibc binary cannot do
# reliably (and it would then fall back to /dev/urandom); the syscall backend needs neither.
export RUSTFLAGS="-C target-feature=+crt-static --cfg getrandom_backend=\"linux_getrandom\""
echo "== building the static binary (cargo, target $triple)" >&2
# The `docker` profile is the release profile without debug info: the image has no use for
# it, and generating it is a good part of the build's time.
(cd "$root" && CARGO_TARGET_DIR="$target_dir" "${CARGO:-cargo}" build --profile docker --locked \
  --target "$triple" -p quiver-server --bin quiver)
bin=$target_dir/$triple/docker/quiver

# A dynamically linked binary would start on this machine and fail in the image (there is
# no loader in scratch): refuse it here, with the reason.
if command -v readelf >/dev/null 2>&1; then
  if readelf -l "$bin" | grep -q 'Requesting program interpreter'; then
    echo "$bin is dynamically linked (it names a program interpreter); the image needs a static binary" >&2
    exit 1
  fi
fi

context=$target_dir/docker-context
rm -rf "$context"
mkdir -p "$context/data"
chmod 0750 "$context/data"
# Built without debug info already; stripping what is left of it changes little but costs
# nothing.
# --strip-debug keeps the symbol table, so a panic's backtrace still names functions.
if command -v strip >/dev/null 2>&1; then
  strip --strip-debug -o "$context/quiver" "$bin"
else
  cp "$bin" "$context/quiver"
fi
cp "$here/Dockerfile" "$context/Dockerfile"

echo "== building the image $image" >&2
docker build --quiet --tag "$image" "$context" >&2
docker run --rm "$image" --version >&2
echo "$image"
