# The chart of bench/compare-etcd.sh: throughput and latency of keel and etcd per workload.
#   gnuplot -e "datafile='plot.dat'; outfile='out.png'; subtitle='...'" bench/plot.gp
# datafile: tab-separated, one workload a line:
#   label  keel_rps  etcd_rps  keel_p50_ms  etcd_p50_ms  keel_p99_ms  etcd_p99_ms   ("-" = missing)
#   (on the gw rows, the keel columns hold keel-gateway's figures: etcd driver -> keel-gateway -> keel)
if (!exists("subtitle")) subtitle = ""
set terminal pngcairo size 1200,1150 font "sans,10"
set output outfile
set datafile separator "\t"
set datafile missing "-"
set style data histogram
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set grid ytics
set key top right
set xtics rotate by 20 right nomirror scale 0 offset 0,-0.2
set logscale y
set format y "%g"
keel = "#2b6cb0"
etcd = "#dd6b20"
set lmargin 12
set rmargin 6
set multiplot layout 3,1 title subtitle font ",12"

set title "Throughput (requests/s, higher is better; log scale)"
set ylabel "req/s"
set yrange [100:*]
plot datafile using 2:xtic(1) title "keel (gw rows: via keel-gateway)" lc rgb keel, \
     "" using 3 title "etcd" lc rgb etcd, \
     "" using ($0 - 0.17):2:(sprintf("%.0f", $2)) with labels offset 0,0.5 font ",8" notitle, \
     "" using ($0 + 0.17):3:(sprintf("%.0f", $3)) with labels offset 0,0.5 font ",8" notitle

set title "Median latency p50 (ms, lower is better; log scale)"
set ylabel "ms"
set yrange [0.01:*]
plot datafile using 4:xtic(1) title "keel (gw rows: via keel-gateway)" lc rgb keel, \
     "" using 5 title "etcd" lc rgb etcd, \
     "" using ($0 - 0.17):4:(sprintf("%.2f", $4)) with labels offset 0,0.5 font ",8" notitle, \
     "" using ($0 + 0.17):5:(sprintf("%.2f", $5)) with labels offset 0,0.5 font ",8" notitle

set title "Tail latency p99 (ms, lower is better; log scale)"
plot datafile using 6:xtic(1) title "keel (gw rows: via keel-gateway)" lc rgb keel, \
     "" using 7 title "etcd" lc rgb etcd, \
     "" using ($0 - 0.17):6:(sprintf("%.2f", $6)) with labels offset 0,0.5 font ",8" notitle, \
     "" using ($0 + 0.17):7:(sprintf("%.2f", $7)) with labels offset 0,0.5 font ",8" notitle
unset multiplot
