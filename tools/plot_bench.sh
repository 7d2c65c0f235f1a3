#!/usr/bin/env bash
# Plots bench_kernels --json output with gnuplot (Debian: gnuplot-nox).
#
#   tools/plot_bench.sh bench.jsonl OUTDIR
#
# Writes, per (dtype, shape, rank): OUTDIR/time_<dtype>_<din>x<dout>_r<rank>.png, time vs rows
# for each layout (dispatched, best static, oracle, max(HBM floor, launch floor)), log-log; and
# OUTDIR/speedup.png, the dispatched schedule's speedup over the best static one, per case.
set -euo pipefail
in=${1:?usage: plot_bench.sh bench.jsonl OUTDIR}
out=${2:?usage: plot_bench.sh bench.jsonl OUTDIR}
command -v gnuplot >/dev/null || { echo "plot_bench.sh: gnuplot is not installed (apt-get install gnuplot-nox)" >&2; exit 1; }
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# flat JSON objects -> TSV: dtype layout rows rank d_in d_out dyn static oracle hbm launch
awk '
function val(k,   m) {
  if (match($0, "\"" k "\":\"[^\"]*\"")) { m = substr($0, RSTART, RLENGTH); sub("^\"" k "\":\"", "", m); sub("\"$", "", m); return m }
  if (match($0, "\"" k "\":[-0-9.eEnaif]+")) { m = substr($0, RSTART, RLENGTH); sub("^\"" k "\":", "", m); return m }
  return "nan"
}
{ print val("dtype"), val("layout"), val("rows"), val("rank"), val("d_in"), val("d_out"), val("dyn_warm_us"),
        val("static_warm_us"), val("oracle_warm_us"), val("hbm_floor_us"), val("launch_floor_us") }
' OFS='\t' "$in" > "$tmp/all.tsv"

gpu=$(awk 'match($0, /"gpu":"[^"]*"/) { print substr($0, RSTART + 7, RLENGTH - 8); exit }' "$in")
date=$(awk 'match($0, /"date":"[^"]*"/) { print substr($0, RSTART + 8, RLENGTH - 9); exit }' "$in")

cut -f1,4,5,6 "$tmp/all.tsv" | sort -u | while IFS=$'\t' read -r dt rank din dout; do
  name="time_${dt}_${din}x${dout}_r${rank}"
  plots=""
  for lay in distinct uniform skewed identical mixed; do
    awk -F'\t' -v dt="$dt" -v r="$rank" -v a="$din" -v b="$dout" -v l="$lay" \
      '$1==dt && $4==r && $5==a && $6==b && $2==l { fl = ($10 > $11 ? $10 : $11); print $3, $7, $8, $9, fl }' \
      "$tmp/all.tsv" | sort -n > "$tmp/$name.$lay.dat"
    [ -s "$tmp/$name.$lay.dat" ] || continue
    plots="$plots '$tmp/$name.$lay.dat' u 1:2 w lp lw 2 t '$lay dop',"
    plots="$plots '$tmp/$name.$lay.dat' u 1:3 w l dt 2 t '$lay static',"
    plots="$plots '$tmp/$name.$lay.dat' u 1:5 w l dt 3 lc rgb 'gray' notitle,"
  done
  [ -n "$plots" ] || continue
  gnuplot <<GP
set terminal pngcairo size 1100,700 noenhanced
set output '$out/$name.png'
set title "dop_lora_apply $dt $din->$dout rank $rank, warm ($gpu, $date)\\ndotted gray: max(HBM floor, launch floor) per layout"
set logscale xy
set xlabel 'rows in the batch'
set ylabel 'time per call (us)'
set key outside right
set grid
plot ${plots%,}
GP
done

awk -F'\t' '$7+0 > 0 && $8+0 > 0 { printf "%d %s-%s-r%s-%s\t%.4f\n", NR, $2, $3, $4, $1, $8 / $7 }' \
  "$tmp/all.tsv" > "$tmp/speedup.dat"
if [ -s "$tmp/speedup.dat" ]; then
  gnuplot <<GP
set terminal pngcairo size 1400,600 noenhanced
set output '$out/speedup.png'
set title 'dispatched schedule over the best single static schedule, warm ($gpu, $date); above 1: dop faster'
set style fill solid 0.6
set boxwidth 0.8
set ylabel 'static time / dispatched time'
set xtics rotate by 90 right font ',7'
set grid y
set yrange [0:*]
plot '$tmp/speedup.dat' u 1:3:xtic(2) w boxes notitle, 1 w l lc rgb 'black' notitle
GP
fi
ls "$out"
