#!/usr/bin/env bash
# The VNC benchmark (issue 3, "Benchmark"): our encoders and server beside the reference
# servers, all measured in this one run by the same client (display/examples/rfb_measure.rs).
#
#   resources/scripts/bench-vnc.sh
#
# 1. Our encoders (display/examples/encoding_bench.rs) on the test pictures (QEMU's SeaBIOS
#    text screen 720x400, an installer-like 1024x768, a desktop-like 1920x1080): bytes of one
#    full frame and the median CPU time of encoding it, per encoding; small changes too.
# 2. TigerVNC's Xvnc (Xtigervnc) showing each picture full-screen (ImageMagick's
#    `display -window root`), one full update per encoding through rfb_measure.
# 3. QEMU 7.2 with SeaBIOS on its text screen ("No bootable device."), the same per encoding,
#    plus a new client's time to the first full frame beside our server's (vnc_demo, and
#    vnc_bench's in-process figure).
# 4. Static-screen CPU of our server and 1080p full-frame encodes per second (vnc_bench,
#    encoding_bench).
#
# Environment: BENCH_VNC_ITERS (encoder runs per figure, default 15), BENCH_VNC_RUNS
# (rfb_measure runs per reference figure, default 5), BENCH_VNC_SKIP_DEPS=1 (do not run
# install-deps.sh), CARGO_TARGET_DIR.
#
# Everything listens on 127.0.0.1 only; every process started here is stopped by its pid and
# the temporary directory is removed on exit.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"

iters=${BENCH_VNC_ITERS:-15}
runs=${BENCH_VNC_RUNS:-5}

if [[ -z ${BENCH_VNC_SKIP_DEPS:-} ]]; then
  # Not fatal: the tools this script needs are checked just below.
  resources/scripts/install-deps.sh bench || echo "bench-vnc: install-deps.sh failed" >&2
fi
for tool in Xtigervnc display qemu-system-x86_64 ss cmp; do
  command -v "$tool" >/dev/null || { echo "bench-vnc: $tool not found" >&2; exit 1; }
done

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
echo "== building the display examples (release)" >&2
cargo build --release -q -p display --example encoding_bench --example rfb_measure \
  --example vnc_bench --example vnc_demo
bin=$CARGO_TARGET_DIR/release/examples

tmp=$(mktemp -d "${TMPDIR:-/tmp}/bench-vnc.XXXXXX")
pids=()

# Stops one process we started: TERM, then KILL after 5 s.
stop() {
  local pid=$1 i
  kill "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  local keep=() p
  for p in "${pids[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
  pids=("${keep[@]}")
}
cleanup() {
  local p
  for p in "${pids[@]}"; do stop "$p"; done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_free() { ! ss -ltnH "sport = :$1" | grep -q .; }
# A display number N whose X lock, X port 6000+N and VNC port 5900+N are all free.
free_display() {
  local n
  for ((n = 60 + RANDOM % 30; n < 200; n++)); do
    [[ -e /tmp/.X$n-lock || -e /tmp/.X11-unix/X$n ]] && continue
    port_free $((5900 + n)) && port_free $((6000 + n)) && { echo "$n"; return; }
  done
  echo "bench-vnc: no free display" >&2
  return 1
}
wait_port() {
  local port=$1 pid=$2 i
  for ((i = 0; i < 200; i++)); do
    ss -ltnH "sport = :$port" | grep -q . && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)]; else print "-" }'; }

# The encodings of the table: our encoding_bench row name | rfb_measure's arguments.
encodings=(
  "raw|--encoding raw"
  "hextile|--encoding hextile"
  "zrle|--encoding zrle"
  "zrle level|--encoding zrle --compress 9"
  "tight|--encoding tight"
  "tight level|--encoding tight --compress 9"
  "tight jpeg q8|--encoding tight --quality 8"
)

# Measures one server at $1 for picture key $2 and reference name $3: `runs` full updates
# per encoding, each by a new client. Appends "picture|encoding|server|bytes|ms" rows to
# $tmp/ref.txt (bytes: the median; "a-b" noted when they vary) and checks the Raw frame
# against the picture file $4 (if given).
measure_server() {
  local addr=$1 pic=$2 server=$3 want=${4:-} e name args i out b t
  for e in "${encodings[@]}"; do
    name=${e%%|*}
    args=${e#*|}
    : >"$tmp/b" && : >"$tmp/t"
    for ((i = 0; i < runs; i++)); do
      local save=()
      [[ $name == raw && $i == 0 && -n $want ]] && save=(--save "$tmp/frame.ppm")
      # shellcheck disable=SC2086 # args is a word list on purpose
      if ! out=$("$bin/rfb_measure" "$addr" $args "${save[@]}" 2>&1); then
        echo "  $server $name: $out" >&2
        continue
      fi
      b=$(sed -n 's/^update bytes: //p' <<<"$out")
      t=$(sed -n 's/.*whole update after \([0-9.]*\) ms/\1/p' <<<"$out")
      echo "$b" >>"$tmp/b" && echo "$t" >>"$tmp/t"
      if [[ $name == raw && $i == 0 && -n $want ]]; then
        if cmp -s "$tmp/frame.ppm" "$want"; then
          echo "  $server on $pic: the Raw frame is exactly the picture" >&2
        else
          echo "  $server on $pic: the Raw frame differs from the picture in" \
            "$(cmp -l "$tmp/frame.ppm" "$want" 2>/dev/null | wc -l) bytes" >&2
        fi
      fi
    done
    local lo hi
    lo=$(sort -g "$tmp/b" | head -1)
    hi=$(sort -g "$tmp/b" | tail -1)
    [[ $lo != "$hi" ]] && echo "  $server $pic $name: bytes vary over runs: $lo-$hi" >&2
    echo "$pic|$name|$server|$(median <"$tmp/b")|$(median <"$tmp/t")" >>"$tmp/ref.txt"
  done
}

# "connect to whole update" of `runs`*3 new clients asking for Raw: "median ms (fastest-slowest, n)".
first_frame() {
  local addr=$1 i
  for ((i = 0; i < runs * 3; i++)); do
    "$bin/rfb_measure" "$addr" --encoding raw 2>/dev/null |
      sed -n 's/^connect to whole update \([0-9.]*\) ms/\1/p'
  done | sort -g | awk '{ v[NR] = $1 }
    END { if (NR) printf "%s ms (%s-%s, %d clients)", v[int((NR + 1) / 2)], v[1], v[NR], NR; else print "-" }'
}

: >"$tmp/ref.txt"
started=$(date +%s)

# ---------------------------------------------------------------- 1. our encoders
echo "== 1. our encoders (encoding_bench, $iters runs each, CPU time of one thread)" >&2
"$bin/encoding_bench" --iters "$iters" --tsv >"$tmp/ours.tsv"
"$bin/encoding_bench" --dump "$tmp" 2>/dev/null
grep -q "MISMATCH" "$tmp/ours.tsv" && echo "  WARNING: a decode mismatch in encoding_bench" >&2

# ---------------------------------------------------------------- 2. Xvnc
# The pictures it shows: encoding_bench's key | the dumped file | its size.
for spec in "seabios qemu 720x400|seabios.ppm|720x400" \
  "installer 1024x768|installer.ppm|1024x768" \
  "desktop 1920x1080|desktop.ppm|1920x1080"; do
  IFS='|' read -r pic file geom <<<"$spec"
  n=$(free_display)
  echo "== 2. Xvnc :$n showing $file ($geom)" >&2
  Xtigervnc ":$n" -geometry "$geom" -depth 24 -rfbport $((5900 + n)) -interface 127.0.0.1 \
    -localhost=1 -SecurityTypes None -AlwaysShared -nolisten tcp -nocursor \
    >"$tmp/xvnc-$n.log" 2>&1 &
  xpid=$!
  pids+=("$xpid")
  if ! wait_port $((5900 + n)) "$xpid"; then
    echo "  Xvnc did not start:" >&2 && tail -5 "$tmp/xvnc-$n.log" >&2
    stop "$xpid"
    continue
  fi
  # `display -window root` sets the root window's background to the picture and exits.
  DISPLAY=":$n" timeout 60 display -window root "$tmp/$file" >/dev/null 2>&1 || true
  sleep 0.5
  measure_server "127.0.0.1:$((5900 + n))" "$pic" "Xvnc" "$tmp/$file"
  stop "$xpid"
done

# ---------------------------------------------------------------- 3. QEMU
n=$(free_display)
echo "== 3. QEMU $(qemu-system-x86_64 --version | sed -n '1s/.*version \([^ ]*\).*/\1/p')" \
  "with SeaBIOS, VNC :$n" >&2
qemu-system-x86_64 -M pc -enable-kvm -cpu host,-arch-capabilities -m 128 -net none \
  -display none -vnc "127.0.0.1:$n" -debugcon "file:$tmp/seabios.log" \
  -global isa-debugcon.iobase=0x402 >"$tmp/qemu.log" 2>&1 &
qpid=$!
pids+=("$qpid")
qemu_first="-"
for ((i = 0; i < 300; i++)); do
  grep -q "No bootable device" "$tmp/seabios.log" 2>/dev/null && break
  kill -0 "$qpid" 2>/dev/null || break
  sleep 0.1
done
if grep -q "No bootable device" "$tmp/seabios.log" 2>/dev/null; then
  echo "  SeaBIOS: \"No bootable device.\" after $((i / 10)).$((i % 10)) s" >&2
  # SeaBIOS retries the boot after 60 s; everything below takes a few seconds.
  sleep 0.5
  measure_server "127.0.0.1:$((5900 + n))" "seabios qemu 720x400" "QEMU" "$tmp/seabios.ppm"
  qemu_first=$(first_frame "127.0.0.1:$((5900 + n))")
  if (($(grep -c "No bootable device" "$tmp/seabios.log") > 1)); then
    echo "  WARNING: SeaBIOS retried the boot during the measurements (screen changed)" >&2
  fi
else
  echo "  QEMU did not reach \"No bootable device\":" >&2
  tail -5 "$tmp/qemu.log" >&2
fi
stop "$qpid"

# Our server, the same client, a 720x400 screen (vnc_demo: an animated pattern).
n=$(free_display)
"$bin/vnc_demo" --listen "127.0.0.1:$n" --width 720 --height 400 >"$tmp/demo.log" 2>&1 &
dpid=$!
pids+=("$dpid")
ours_first="-"
if wait_port $((5900 + n)) "$dpid"; then
  ours_first=$(first_frame "127.0.0.1:$((5900 + n))")
else
  echo "  vnc_demo did not start:" >&2 && tail -5 "$tmp/demo.log" >&2
fi
stop "$dpid"

# ---------------------------------------------------------------- 4./5. our server
echo "== 4. our server in-process (vnc_bench)" >&2
"$bin/vnc_bench" >"$tmp/vnc_bench.txt" 2>&1 || echo "  vnc_bench failed" >&2

# ---------------------------------------------------------------- the report
ours() { # picture encoding field(3 bytes, 4 median ms, 6 fps)
  awk -F'\t' -v p="$1" -v e="$2" -v f="$3" '$1 == p && $2 == e { print $f; exit }' "$tmp/ours.tsv"
}
echo
echo "VNC benchmark, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "One full-frame update at 32 bpp. ours: our encoder, bytes of the encoded rectangles and the"
echo "median CPU time of one encode ($iters runs, fresh zlib streams). ref: the whole update as a new"
echo "client received it (median of $runs clients; 'ref ms' is request to last byte, wall clock)."
echo "'level' rows: compression level 9 asked of both; jpeg q8: JPEG quality level 8 (lossy)."
echo "QEMU's 'ref ms' is mostly its refresh timer (30 ms, growing while the screen is idle)."
echo
fmt="%-22s %-14s %10s %-5s %10s %7s %9s %9s\n"
# shellcheck disable=SC2059 # the format is ours
printf "$fmt" picture encoding "ours B" ref "ref B" ratio "ours ms" "ref ms"
for pic in "seabios qemu 720x400" "installer 1024x768" "desktop 1920x1080"; do
  while IFS='|' read -r _ name server rb rt; do
    ob=$(ours "$pic" "$name" 3)
    ot=$(ours "$pic" "$name" 4)
    ratio=-
    [[ -n $ob && $rb =~ ^[0-9]+$ && $rb -gt 0 ]] &&
      ratio=$(awk -v a="$ob" -v b="$rb" 'BEGIN { printf "%.2f", a / b }')
    # shellcheck disable=SC2059
    printf "$fmt" "$pic" "$name" "${ob:--}" "$server" "$rb" "$ratio" "${ot:--}" "$rt"
  done < <(grep -F "$pic|" "$tmp/ref.txt" | sort -t'|' -s -k3,3)
done

# Issue 3's byte target: each lossless encoding no bigger than the best reference.
echo
echo "Lossless full frames over the best reference (target: none):"
awk -F'|' 'NR == FNR { split($0, f, "\t"); ours[f[1] "|" f[2]] = f[3]; next }
  $2 != "tight jpeg q8" && $4 ~ /^[0-9]+$/ {
    k = $1 "|" $2
    if (!(k in best) || $4 + 0 < best[k] + 0) { best[k] = $4; who[k] = $3 }
  }
  END {
    n = 0
    for (k in best) if ((k in ours) && ours[k] + 0 > best[k] + 0) {
      split(k, kk, "|")
      printf "  %s %s: ours %d B > %s %d B\n", kk[1], kk[2], ours[k], who[k], best[k]; n++
    }
    if (!n) print "  none"
  }' "$tmp/ours.tsv" "$tmp/ref.txt"

echo
echo "Small changes (ours: an encoder that already sent the full frame; median CPU time):"
printf "%-42s %-14s %8s %10s\n" change encoding bytes "ours ms"
awk -F'\t' '$1 ~ /: / && $1 !~ /generated/ { printf "%-42s %-14s %8s %10s\n", $1, $2, $3, $4 }' "$tmp/ours.tsv"

echo
echo "1080p full-frame encodes per second, one core (from the median; target 60):"
awk -F'\t' '$1 == "desktop 1920x1080" { printf "  %-14s %6s/s  (median %s ms, fastest %s ms)\n", $2, $6, $4, $5 }' "$tmp/ours.tsv"

echo
echo "A new client's first full frame (Raw, TCP connect to the update's last byte, median):"
echo "  QEMU 7.2, SeaBIOS text 720x400:          ${qemu_first}"
echo "  ours (vnc_demo 720x400, same client):    ${ours_first}   (target < 20 ms)"
sed -n -e 's/^== \(.*\)/  ours in-process (vnc_bench), \1:/p' \
  -e 's/^first full frame (Raw, connect to last pixel) /    first frame /p' "$tmp/vnc_bench.txt"

echo
echo "Static screen, our server with one client waiting (vnc_bench; target ~0):"
awk '/^== / { sub(/^== /, ""); pic = $0 } /^static screen/ { sub(/.*: /, ""); printf "  %-20s %s\n", pic, $0 }' "$tmp/vnc_bench.txt"

echo
echo "bench-vnc: done in $(($(date +%s) - started)) s"
