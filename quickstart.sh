#!/bin/sh
# allocprof quick start, on Debian 12 (as root, or a user with sudo):
#
#   ./quickstart.sh          install what is missing, build, profile the bundled demo, show `top`
#   ./quickstart.sh test     install what is missing, build, run the whole test suite
#
# The test command's last line is "N passed, N failed"; CI (.ci/run) runs exactly it.
set -eu
cd "$(dirname "$0")"

mode=${1:-demo}
case "$mode" in
demo | test) ;;
*)
	echo "usage: $0 [test]" >&2
	exit 2
	;;
esac

# What building needs, and what the tests use as oracles (heaptrack's counts, go tool pprof,
# jemalloc to trace programs running on it, zstd to craft traces).
build_pkgs="meson ninja-build pkg-config gcc g++ libc6-dev python3 zstd
  libunwind-dev libzstd-dev libjemalloc-dev libdw-dev libelf-dev zlib1g-dev libiberty-dev"
test_pkgs="make heaptrack libjemalloc2 sqlite3 golang-go graphviz binutils clang libclang-rt-14-dev chromium chromium-driver"
pkgs=$build_pkgs
[ "$mode" = test ] && pkgs="$pkgs $test_pkgs"

missing=""
for p in $pkgs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
	echo "== installing:$missing"
	sudo=""
	[ "$(id -u)" -eq 0 ] || sudo=sudo
	$sudo apt-get update -q >/dev/null
	$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing >/dev/null
fi

echo "== building"
if [ ! -f build/build.ninja ]; then
	meson setup build -Dwerror=true >/dev/null
fi
meson compile -C build >/dev/null

if [ "$mode" = demo ]; then
	rm -f demo.trace
	echo "== recording the demo: build/analyzer/allocprof record -o demo.trace -- build/tests/demo"
	build/analyzer/allocprof record -o demo.trace -- build/tests/demo
	echo
	echo "== build/analyzer/allocprof top --sample-index=alloc_space demo.trace"
	build/analyzer/allocprof top --sample-index=alloc_space demo.trace
	echo
	echo "== build/analyzer/allocprof top --sample-index=alloc_objects demo.trace"
	build/analyzer/allocprof top --sample-index=alloc_objects demo.trace
	cat <<'EOF'

Profile your own program (any dynamically linked program, no recompiling):

    build/analyzer/allocprof record -- ./your-program its arguments
    build/analyzer/allocprof top --sample-index=alloc_objects allocprof.your-program.<pid>.trace

The README explains every command, option and environment variable.
EOF
	exit 0
fi

echo "== running the test suite"
log=build/meson-logs/quickstart-test.log
set +e
meson test -C build --print-errorlogs --num-processes 2 2>&1 | tee "$log"
status=$?
set -e
# meson's summary block: "Ok: N", "Fail: N", "Timeout: N", "Unexpected Pass: N".
count() {
	n=$(sed -n "s/^$1:[[:space:]]*\([0-9][0-9]*\).*/\1/p" "$log" | tail -n 1)
	echo "${n:-0}"
}
ok=$(count Ok)
fail=$(($(count Fail) + $(count Timeout) + $(count "Unexpected Pass")))
if [ "$status" -ne 0 ] && [ "$fail" -eq 0 ]; then
	fail=1 # meson failed before running tests (a build error)
fi
echo "$ok passed, $fail failed"
[ "$fail" -eq 0 ]
