# Enqueue throughput against pending size, wsup beside the seed (log-log).
# gnuplot -e "datafile='bench/out/enqueue.dat'; outfile='bench/enqueue.png'; subtitle='...'" bench/enqueue.gp
# datafile columns: pending keys, wsup enqueues/s, seed enqueues/s (NaN when not run).
if (!exists("datafile")) datafile = 'bench/out/enqueue.dat'
if (!exists("outfile")) outfile = 'bench/enqueue.png'
if (!exists("subtitle")) subtitle = ''
set terminal pngcairo size 900,560 enhanced font 'sans,11'
set output outfile
set title "Enqueue throughput into a stalled uploader\n{/*0.8 ".subtitle."}"
set xlabel 'pending metadata keys (log scale)'
set ylabel 'enqueues per CPU-second (log scale)'
set logscale xy
set xrange [5:16000]
set yrange [100:1e7]
set format y '10^{%L}'
set xtics ('8' 8, '100' 100, '1000' 1000, '10000' 10000)
set grid xtics ytics mytics
set key bottom left
set datafile missing 'NaN'
fmt(x) = x >= 1e6 ? sprintf('%.2fM', x / 1e6) : x >= 1e4 ? sprintf('%.0fk', x / 1e3) : sprintf('%.0f', x)
plot datafile using 1:2 with linespoints lw 2 pt 7 ps 1.2 lc rgb '#1f77b4' title 'wsup', \
     datafile using 1:2:(fmt($2)) with labels offset 0,1.1 font ',9' tc rgb '#1f77b4' notitle, \
     datafile using 1:3 with linespoints lw 2 pt 5 ps 1.2 lc rgb '#d62728' title 'seed (Node.js)', \
     datafile using 1:3:(fmt($3)) with labels offset 0,-1.1 font ',9' tc rgb '#d62728' notitle
