#!/bin/bash
# The default `facecloak protect` (level high, verification on) over a folder of 1000 photos, its RSS sampled every
# 5 s. Usage: run.sh TREE SETS WORK
#   TREE: a facecloak checkout (its .venv or the active python), SETS: the folder `facecloak bench speed-protect`'s
#   prepare_sets writes (deepface-1024/ and lfw/), WORK: a scratch folder (the 1000 hard links, outputs, logs).
set -eu
tree=$1; sets=$2; work=$3
mkdir -p "$work/in"
i=0
while [ $i -lt 1000 ]; do
  for p in "$sets"/deepface-1024/* "$sets"/lfw/*; do
    [ $i -lt 1000 ] || break
    ln -f "$p" "$work/in/$(printf %04d $i)_$(basename "$p")"; i=$((i + 1))
  done
done
cd "$tree"
OMP_NUM_THREADS=1 PYTHONPATH="$tree" /usr/bin/time -v python -c \
  "import sys; from facecloak.cli import main; sys.argv[0]='facecloak'; sys.exit(main())" \
  protect "$work/in" -o "$work/out" --json > "$work/run.json" 2> "$work/time.txt" &
sleep 1
pid=$(pgrep -P $! | head -1)
t0=$(date +%s)
while kill -0 "$pid" 2>/dev/null; do  # seconds, VmRSS MiB, VmHWM MiB, photos written
  echo "$(( $(date +%s) - t0 )) $(awk '/VmRSS/{print int($2/1024)}' /proc/$pid/status) \
$(awk '/VmHWM/{print int($2/1024)}' /proc/$pid/status) $(find "$work/out" -type f | wc -l)" >> "$work/rss.log"
  sleep 5
done
wait
