#!/bin/sh
# Regenerates the seed corpus of the fuzz harnesses from real recordings (run by hand, not by the
# tests; the result is committed). corpus/stream/ holds decompressed streams (fuzz_stream's input),
# corpus/trace/ the same traces as recorded (fuzz_compressed's input). Kept small: a seed is
# only a starting point, and the fuzzer's speed falls with input length.
#
# usage: tests/fuzz/make_corpus.sh BUILD_DIR
set -eu
B=$(cd "$1" && pwd)
D=$(cd "$(dirname "$0")" && pwd)/corpus
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
rec() { name=$1; shift; "$B/analyzer/allocprof" record --quiet -o "$T/$name.trace" "$@" >/dev/null 2>&1 || true; }
rec known -- "$B/tests/known"
rec known-counter --clock counter -- "$B/tests/known"
rec xthread -- "$B/tests/xthread" 200 3
rec sampled --sample-bytes 512 -- "$B/tests/xthread" 300 2
rec sort -- sh -c 'seq 1 300 | sort -r >/dev/null'
rec ls -- ls /
# Seeds named v1-* are format-1 traces from an older allocprof, kept so that the fuzzers also
# explore the reader's format-1 path.
mkdir -p "$D/stream" "$D/trace"
find "$D/stream" "$D/trace" -type f ! -name 'v1-*' -delete
for f in "$T"/*.trace*; do
	n=$(basename "$f")
	cp "$f" "$D/trace/$n"
	zstd -q -dc "$f" > "$D/stream/${n%.trace}.bin" || true
done
du -sh "$D"
