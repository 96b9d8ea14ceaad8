package main

import (
	"bufio"
	"context"
	"fmt"
	"image/color"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// sample is one instance's resources at one moment, with the index's size then.
type sample struct {
	at                   time.Duration // since the start
	instance             string
	rss, goroutines, fds int64
	index                int64
}

// sample measures every instance each r.c.every until ctx ends. A measurement that
// fails is recorded as -1, never as 0 (a zero would pass a bound).
func (r *run) sample(ctx context.Context) []sample {
	start := time.Now()
	var out []sample
	t := time.NewTicker(r.c.every)
	defer t.Stop()
	for {
		idx := r.indexSize(ctx)
		for _, in := range r.c.instances {
			out = append(out, sample{at: time.Since(start), instance: in.name,
				rss: rss(in.pid), goroutines: r.goroutines(ctx, in.addr), fds: openFiles(in.pid), index: idx})
		}
		select {
		case <-ctx.Done():
			return out
		case <-t.C:
		}
	}
}

func rss(pid int) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return -1
			}
			return kb << 10
		}
	}
	return -1
}

func openFiles(pid int) int64 {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return -1
	}
	return int64(len(ents))
}

// goroutines reads go_goroutines from the instance's /metrics (an admin's, with
// authentication on).
func (r *run) goroutines(ctx context.Context, addr string) int64 {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return -1
	}
	req.SetBasicAuth(r.c.user, r.c.pass)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil || resp.StatusCode != 200 {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "go_goroutines "); ok {
			n, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				return -1
			}
			return int64(n)
		}
	}
	return -1
}

func (r *run) indexSize(ctx context.Context) int64 {
	switch {
	case r.c.indexDir != "":
		var n int64
		err := filepath.WalkDir(r.c.indexDir, func(_ string, d fs.DirEntry, err error) error {
			if err != nil {
				return nil // a file compacted away while walking
			}
			if info, err := d.Info(); err == nil && info.Mode().IsRegular() {
				n += info.Size()
			}
			return nil
		})
		if err != nil || n == 0 {
			return -1
		}
		return n
	case r.c.pgDSN != "":
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, r.c.pgDSN)
		if err != nil {
			return -1
		}
		defer conn.Close(context.Background())
		var n int64
		if err := conn.QueryRow(ctx, "SELECT pg_database_size(current_database())").Scan(&n); err != nil {
			return -1
		}
		return n
	}
	return -1
}

// metric names one sampled quantity and how much it may grow: see judge.
type metric struct {
	name  string
	get   func(sample) int64
	floor float64 // growth over the second half always allowed
	frac  float64 // of the second half's mean: growth allowed however the first half went
	noise float64 // growth too small to compare with the first half's
	unit  float64 // for messages and the plot
}

var metrics = []metric{
	{"rss_mib", func(s sample) int64 { return s.rss }, 64 << 20, 0.3, 24 << 20, 1 << 20},
	{"goroutines", func(s sample) int64 { return s.goroutines }, 50, 0.3, 10, 1},
	{"open_files", func(s sample) int64 { return s.fds }, 32, 0.3, 8, 1},
	{"index_mib", func(s sample) int64 { return s.index }, 64 << 20, 0.5, 16 << 20, 1 << 20},
}

// steadyAfter is how long a run must be for judge to compare its halves: a shorter
// one is mostly warm-up.
const steadyAfter = 10 * time.Minute

// judge says whether samples ys (at xs seconds) of m grow without bound. Growth over
// a half is its least-squares trend extrapolated over the half, so a sawtooth (a
// garbage collector's, a compaction's) does not count. The second half may not grow
// by more than max(floor, frac × its mean). In a run of steadyAfter or more it may
// also not grow by more than noise at over half the first half's pace (a process
// warming up slows down, a leak keeps its pace) while its floor rises too: the lowest
// sample of the last quarter above the second quarter's by more than noise. A
// sawtooth's trend over a half depends on where its teeth fall; its lowest points stay
// put (for teeth up to a quarter of the run long).
func judge(m metric, xs, ys []float64, long bool) (ok bool, msg string) {
	half := len(xs) / 2
	growth := func(xs, ys []float64) (float64, float64) {
		slope, mean := fit(xs, ys)
		return slope * (xs[len(xs)-1] - xs[0]), mean
	}
	g1, _ := growth(xs[:half+1], ys[:half+1])
	g2, mean := growth(xs[half:], ys[half:])
	bound := max(m.floor, m.frac*mean)
	msg = fmt.Sprintf("grew %.1f over the second half (bound %.1f, mean %.1f), %.1f over the first",
		g2/m.unit, bound/m.unit, mean/m.unit, g1/m.unit)
	if g2 > bound {
		return false, msg
	}
	if long && g2 > m.noise && g2 > g1/2 {
		q := len(ys) / 4
		rise := slices.Min(ys[3*q:]) - slices.Min(ys[q:2*q])
		msg += fmt.Sprintf(", its lowest point %.1f higher in the last quarter than in the second", rise/m.unit)
		if rise > m.noise {
			return false, msg + ": a leak's pace"
		}
	}
	return true, msg
}

// checkTrends fails a metric of an instance that has too few valid samples, or that
// grows without bound (judge).
func (r *run) checkTrends(all []sample) {
	for _, in := range r.c.instances {
		var s []sample
		for _, x := range all {
			if x.instance == in.name {
				s = append(s, x)
			}
		}
		for _, m := range metrics {
			var xs, ys []float64
			invalid := 0
			for _, x := range s {
				if v := m.get(x); v > 0 {
					xs, ys = append(xs, x.at.Seconds()), append(ys, float64(v))
				} else {
					invalid++
				}
			}
			what := fmt.Sprintf("%s of %s", m.name, in.name)
			if len(ys) < 10 || invalid*10 > len(s) {
				r.check(what+" sampled", false, "%d valid samples, %d invalid", len(ys), invalid)
				continue
			}
			ok, msg := judge(m, xs, ys, r.c.duration >= steadyAfter)
			r.check(fmt.Sprintf("%s bounded (%s)", what, msg), ok, "grows without bound")
		}
	}
}

// fit returns the least-squares slope of ys over xs, and the mean of ys.
func fit(xs, ys []float64) (slope, mean float64) {
	n := float64(len(xs))
	var sx, sy, sxx, sxy float64
	for i := range xs {
		sx, sy = sx+xs[i], sy+ys[i]
		sxx, sxy = sxx+xs[i]*xs[i], sxy+xs[i]*ys[i]
	}
	mean = sy / n
	d := n*sxx - sx*sx
	if d == 0 {
		return 0, mean
	}
	return (n*sxy - sx*sy) / d, mean
}

// plot draws one panel per metric, one line per instance, into a PNG.
func drawPlot(path, title string, all []sample) error {
	names := []string{}
	seen := map[string]bool{}
	for _, x := range all {
		if !seen[x.instance] {
			seen[x.instance] = true
			names = append(names, x.instance)
		}
	}
	colors := []color.Color{color.RGBA{31, 119, 180, 255}, color.RGBA{214, 39, 40, 255},
		color.RGBA{44, 160, 44, 255}, color.RGBA{148, 103, 189, 255}}
	plots := make([][]*plot.Plot, len(metrics))
	for i, m := range metrics {
		p := plot.New()
		p.Title.Text = title + ": " + m.name
		p.X.Label.Text = "seconds"
		for j, n := range names {
			var pts plotter.XYs
			for _, x := range all {
				if v := m.get(x); x.instance == n && v > 0 {
					pts = append(pts, plotter.XY{X: x.at.Seconds(), Y: float64(v) / m.unit})
				}
			}
			if len(pts) == 0 {
				continue
			}
			l, err := plotter.NewLine(pts)
			if err != nil {
				return err
			}
			l.Color = colors[j%len(colors)]
			p.Add(l)
			if m.name == "index_mib" { // one index, drawn once
				p.Legend.Add("index", l)
				break
			}
			p.Legend.Add(n, l)
		}
		p.Legend.Top = true
		p.X.Min, p.Y.Min = 0, 0
		plots[i] = []*plot.Plot{p}
	}
	img := vgimg.New(vg.Points(800), vg.Points(float64(220*len(metrics))))
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: len(metrics), Cols: 1, PadX: vg.Millimeter, PadY: vg.Millimeter * 3,
		PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2, PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 2}
	canvases := plot.Align(plots, tiles, dc)
	for i := range plots {
		plots[i][0].Draw(canvases[i][0])
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		return err
	}
	return f.Close()
}
