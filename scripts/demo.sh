#!/usr/bin/env bash
# The DMTCP-style workflow on a bundled example: launch a program, checkpoint
# it mid-run, kill it, restart it from the image, and compare the output with
# an uninterrupted run. Then record another example and debug it backwards.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p rewind-debugger
rewind=$PWD/target/release/rewind
work=$(mktemp -d /tmp/rewind-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT
gcc -O1 -o "$work/loop_heap" tests/targets/loop_heap.c
gcc -O0 -g -o "$work/dbg_demo" tests/targets/dbg_demo.c
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

echo
echo "== rewind record -- ./dbg_demo, then rewind debug: forward to the 4th call of sum_to, back to the 3rd"
"$rewind" record -o trace -- ./dbg_demo > /dev/null
cat > cmds.gdb <<'CMDS'
break sum_to
run
continue 3
print n
reverse-continue
print n
reverse-finish
print total
backtrace
reverse-stepi
stepi
when
CMDS
sed 's/^/(rewind) /' cmds.gdb
echo "--"
"$rewind" debug --trace trace --batch -x cmds.gdb | tee debug.txt
if grep -q '^\$2 = 300$' debug.txt && grep -q '^\$3 = 25150$' debug.txt; then
    echo "== OK: reverse-continue went back to sum_to(300), where total was still 25150"
else
    echo "== UNEXPECTED debug output" >&2
    exit 1
fi
