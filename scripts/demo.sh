#!/usr/bin/env bash
# The DMTCP-style workflow on a bundled example: launch a program, checkpoint
# it mid-run, kill it, restart it from the image, and compare the output with
# an uninterrupted run.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p rewind-debugger
rewind=$PWD/target/release/rewind
work=$(mktemp -d /tmp/rewind-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT
gcc -O1 -o "$work/loop_heap" tests/targets/loop_heap.c
cd "$work"

echo "== uninterrupted run"
./loop_heap > uninterrupted.txt
cat uninterrupted.txt

echo "== rewind launch -- ./loop_heap   (checkpoint + kill after 0.7 s)"
"$rewind" launch -- ./loop_heap > before.txt &
sleep 0.7
image=$("$rewind" command --checkpoint --kill)
wait || true
cat before.txt
ls -l "$image"

echo "== rewind restart $image"
"$rewind" restart "$image" > after.txt
cat after.txt

if cat before.txt after.txt | cmp -s - uninterrupted.txt; then
    echo "== OK: output before the checkpoint + after the restart equals the uninterrupted run"
else
    echo "== MISMATCH" >&2
    diff <(cat before.txt after.txt) uninterrupted.txt >&2 || true
    exit 1
fi
