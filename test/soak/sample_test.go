package main

import (
	"math"
	"testing"
)

// The trend rule on series shaped like the soak's: 30 minutes sampled every 2 s.
func TestJudgeTellsLeaksFromWarmUpAndSawtooth(t *testing.T) {
	const mib = 1 << 20
	rss := metrics[0]
	series := func(f func(sec float64) float64) (xs, ys []float64) {
		for sec := 0.0; sec <= 1800; sec += 2 {
			xs, ys = append(xs, sec), append(ys, f(sec))
		}
		return xs, ys
	}
	// A garbage collector's sawtooth: 130 to 220 MiB every 90 s.
	saw := func(sec float64) float64 { return (130 + 90*math.Mod(sec, 90)/90) * mib }
	for _, c := range []struct {
		name string
		f    func(sec float64) float64
		long bool
		ok   bool
	}{
		{"sawtooth", saw, true, true},
		{"warm-up, then a sawtooth", func(sec float64) float64 { return saw(sec) + min(sec, 300)/300*100*mib }, true, true},
		// The cluster's RSS in the soak that found the collection livelock: 35 MiB per
		// 15 minutes, which max(64 MiB, 30 % of the mean) let through.
		{"a steady leak", func(sec float64) float64 { return (60 + 70*sec/1800) * mib }, true, false},
		{"a leak under a sawtooth", func(sec float64) float64 { return saw(sec) + 70*sec/1800*mib }, true, false},
		{"a leak starting half-way", func(sec float64) float64 { return (80 + 60*max(0, sec-900)/900) * mib }, true, false},
		{"a steady leak in a short run", func(sec float64) float64 { return (60 + 70*sec/1800) * mib }, false, true},
		{"a big leak in a short run", func(sec float64) float64 { return (60 + 200*sec/1800) * mib }, false, false},
	} {
		xs, ys := series(c.f)
		ok, msg := judge(rss, xs, ys, c.long)
		if ok != c.ok {
			t.Errorf("%s: judged bounded=%v, want %v (%s)", c.name, ok, c.ok, msg)
		}
	}
}

// Slow sawtooths (a periodic job's: the index between collections, RSS of a retention
// run every few minutes), at any phase, are bounded: a least-squares trend over a half
// alone called some of them leaks (found by a review).
func TestJudgeLetsSlowSawtoothsThrough(t *testing.T) {
	const mib = 1 << 20
	series := func(f func(sec float64) float64) (xs, ys []float64) {
		for sec := 0.0; sec <= 1800; sec += 2 {
			xs, ys = append(xs, sec), append(ys, f(sec))
		}
		return xs, ys
	}
	fails := 0
	for mi, m := range metrics {
		amp := map[int]float64{0: 90 * mib, 1: 30, 2: 16, 3: 40 * mib}[mi]
		base := map[int]float64{0: 150 * mib, 1: 100, 2: 60, 3: 80 * mib}[mi]
		for _, period := range []float64{240, 300, 420, 600, 720} {
			for _, phase := range []float64{0, 0.25, 0.5, 0.75} {
				f := func(sec float64) float64 {
					return base + amp*math.Mod(sec/period+phase, 1)
				}
				xs, ys := series(f)
				if ok, msg := judge(m, xs, ys, true); !ok {
					fails++
					t.Errorf("%s: bounded sawtooth (period %v s, amplitude %v, phase %v) judged a leak: %s", m.name, period, amp/m.unit, phase, msg)
				}
			}
		}
	}
	t.Logf("%d false leak verdicts", fails)
}
