#!/usr/bin/env bash
# Regenerates Sources/Shared/Wire/Generated from Protocols/*.proto with protoc (Debian's
# protobuf-compiler) and protoc-gen-swift built from the swift-protobuf version Package.swift names.
# The generated code is committed; builds never run protoc.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
version=1.39.0
plugin_dir=${PROTOC_GEN_SWIFT_DIR:-$HOME/.cache/tessel/protoc-gen-swift-$version}
command -v protoc >/dev/null || { apt-get update -qq && apt-get install -y -qq protobuf-compiler; }
if [ ! -x "$plugin_dir/protoc-gen-swift" ]; then
  src=$(mktemp -d)
  # The checkout SwiftPM resolved (from its mirror) when it is that version; else GitHub.
  checkout="$here/.build/checkouts/swift-protobuf"
  if [ "$(git -C "$checkout" describe --tags 2>/dev/null)" = "$version" ]; then
    cp -r "$checkout/." "$src"
  else
    git clone -q https://github.com/apple/swift-protobuf "$src"
    git -C "$src" checkout -q "$version"
  fi
  (cd "$src" && swift build -c release --product protoc-gen-swift)
  mkdir -p "$plugin_dir"
  cp "$src/.build/release/protoc-gen-swift" "$plugin_dir/"
fi
out="$here/Sources/Shared/Wire/Generated"
mkdir -p "$out"
protoc --plugin=protoc-gen-swift="$plugin_dir/protoc-gen-swift" \
  --swift_opt=Visibility=Public --swift_out="$out" -I "$here/Protocols" "$here"/Protocols/*.proto
echo "generated into $out"
