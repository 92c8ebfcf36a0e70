#!/bin/bash
# The default `facecloak protect` (level high, verification on) of each checkout, side by side: the same N photos
# through each (RSS sampled every 5 s), then the one-photo start-up, alternating, R times each.
# Usage: run.sh SETS WORK N R TREE...
#   SETS: the folder `facecloak bench speed-protect`'s prepare_sets writes (deepface-1024/ and lfw/); WORK: a scratch
#   folder; N: photos, cycling through the 60 deepface-1024 then the 60 LFW photos (as speed-protect-onednn-cache);
#   R: start-up repeats; TREE: a facecloak checkout, run with its .venv (or the active python). Each checkout's runs
#   go to WORK/<the checkout's short commit>.
#   OMP_NUM_THREADS: torch threads (default 1, as the speed figures; unset in a plain user run, torch takes every core).
# Then: python summarise.py WORK
set -eu
sets=$1; work=$2; n=$3; repeats=$4; shift 4
mkdir -p "$work/in" "$work/one"
i=0
while [ $i -lt "$n" ]; do
  for p in "$sets"/deepface-1024/* "$sets"/lfw/*; do
    [ $i -lt "$n" ] || break
    ln -f "$p" "$work/in/$(printf %04d $i)_$(basename "$p")"; i=$((i + 1))
  done
done
ln -f "$(ls "$sets"/lfw/* | head -1)" "$work/one/"
python_of() { if [ -x "$1/.venv/bin/python" ]; then echo "$1/.venv/bin/python"; else echo python; fi; }
label_of() { git -C "$1" rev-parse --short HEAD; }
protect() {  # protect TREE IN OUT: the CLI under /usr/bin/time -v, JSON lines to OUT.json, time to OUT.time
  (cd "$1" && env OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" PYTHONPATH="$1" /usr/bin/time -v "$(python_of "$1")" -c \
    "import sys; from facecloak.cli import main; sys.argv[0]='facecloak'; sys.exit(main())" \
    protect "$2" -o "$3" --json > "$3.json" 2> "$3.time")
}
folder() {  # folder TREE: the N photos, RSS sampled (seconds, VmRSS MiB, VmHWM MiB, photos written)
  local dir; dir="$work/$(label_of "$1")"
  mkdir -p "$dir"
  protect "$1" "$work/in" "$dir/out" &
  local timer=$!
  sleep 1
  local pid p; pid=""
  for p in $(pgrep -f -- "$dir/out"); do case "$(cat /proc/$p/comm)" in python*) pid=$p;; esac; done
  local t0; t0=$(date +%s)
  while kill -0 "$pid" 2>/dev/null; do
    echo "$(( $(date +%s) - t0 )) $(awk '/VmRSS/{print int($2/1024)}' /proc/$pid/status) \
$(awk '/VmHWM/{print int($2/1024)}' /proc/$pid/status) $(find "$dir/out" -type f 2>/dev/null | wc -l)" >> "$dir/rss.log"
    sleep 5
  done
  wait $timer
  (cd "$dir/out" && sha256sum -- *) > "$dir/out.sha256"  # the outputs' digests, to compare checkouts
}
date -u > "$work/machine.txt"; nproc >> "$work/machine.txt"; uptime >> "$work/machine.txt"
for tree in "$@"; do label_of "$tree" >> "$work/machine.txt"; done
for tree in "$@"; do folder "$tree" & done
wait
uptime >> "$work/machine.txt"
for r in $(seq "$repeats"); do
  for tree in "$@"; do
    dir="$work/$(label_of "$tree")/startup-$r"
    rm -rf "$dir"; mkdir -p "$(dirname "$dir")"
    protect "$tree" "$work/one" "$dir"
  done
done
uptime >> "$work/machine.txt"
