# Latency vs connections (scripts/bench.sh): gnuplot -e "datafile='…'; outfile='….svg'" plot.gp
set terminal svg size 1100,520 dynamic font "sans,12" background rgb "white"
set output outfile
set title "aside: latency vs connections (wrk, 1 thread, loopback, 2-core machine)"
set logscale x 2
set logscale y 10
set xlabel "connections"
set ylabel "latency (ms, log scale)"
set xtics (1, 8, 64, 256)
set grid
set key outside right top
set xrange [0.8:320]
plot datafile using 1:2 with linespoints lw 2 lc rgb "#1f77b4" pt 7 title "S1 aside cache hit p50", \
     datafile using 1:3 with linespoints lw 2 lc rgb "#1f77b4" pt 5 dt 2 title "S1 aside cache hit p99", \
     datafile using 1:4 with linespoints lw 2 lc rgb "#2ca02c" pt 7 title "poem+fred ceiling p50", \
     datafile using 1:5 with linespoints lw 2 lc rgb "#2ca02c" pt 5 dt 2 title "poem+fred ceiling p99", \
     datafile using 1:6 with linespoints lw 2 lc rgb "#d62728" pt 7 title "S6 no cache (Postgres) p50", \
     datafile using 1:7 with linespoints lw 2 lc rgb "#d62728" pt 5 dt 2 title "S6 no cache (Postgres) p99"
