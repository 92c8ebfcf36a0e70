#!/bin/bash
# The default `facecloak protect` (level high, verification on) over the same N photos, once per oneDNN primitive
# cache capacity, the runs side by side; each run's RSS sampled every 5 s.
# Usage: run.sh TREE SETS WORK N CAPACITY...
#   TREE: a facecloak checkout (its .venv or the active python); SETS: the folder `facecloak bench speed-protect`'s
#   prepare_sets writes (deepface-1024/ and lfw/); WORK: a scratch folder; N: photos, cycling through the 60
#   deepface-1024 then the 60 LFW photos (as speed-protect-memory-cli-1000); CAPACITY: a number for
#   ONEDNN_PRIMITIVE_CACHE_CAPACITY (1024 is oneDNN's own default), or "unset" for what the CLI sets itself.
# Then: python summarise.py WORK
set -eu
tree=$1; sets=$2; work=$3; n=$4; shift 4
mkdir -p "$work/in"
i=0
while [ $i -lt "$n" ]; do
  for p in "$sets"/deepface-1024/* "$sets"/lfw/*; do
    [ $i -lt "$n" ] || break
    ln -f "$p" "$work/in/$(printf %04d $i)_$(basename "$p")"; i=$((i + 1))
  done
done
cd "$tree"
py=python
[ -x "$tree/.venv/bin/python" ] && py="$tree/.venv/bin/python"
run() {  # run CAPACITY: one CLI run and its RSS samples (seconds, VmRSS MiB, VmHWM MiB, photos written)
  local cap=$1 dir="$work/cap-$1"
  mkdir -p "$dir"
  local env=(OMP_NUM_THREADS=1 PYTHONPATH="$tree")
  [ "$cap" = unset ] || env+=(ONEDNN_PRIMITIVE_CACHE_CAPACITY="$cap")
  env -u ONEDNN_PRIMITIVE_CACHE_CAPACITY "${env[@]}" /usr/bin/time -v "$py" -c \
    "import sys; from facecloak.cli import main; sys.argv[0]='facecloak'; sys.exit(main())" \
    protect "$work/in" -o "$dir/out" --json > "$dir/run.json" 2> "$dir/time.txt" &
  local timer=$!
  sleep 1
  local pid; pid=$(pgrep -P $timer | head -1)
  local t0; t0=$(date +%s)
  while kill -0 "$pid" 2>/dev/null; do
    echo "$(( $(date +%s) - t0 )) $(awk '/VmRSS/{print int($2/1024)}' /proc/$pid/status) \
$(awk '/VmHWM/{print int($2/1024)}' /proc/$pid/status) $(find "$dir/out" -type f | wc -l)" >> "$dir/rss.log"
    sleep 5
  done
  wait $timer
}
date -u > "$work/machine.txt"; uptime >> "$work/machine.txt"; git rev-parse HEAD >> "$work/machine.txt"
for cap in "$@"; do run "$cap" & done
wait
uptime >> "$work/machine.txt"
