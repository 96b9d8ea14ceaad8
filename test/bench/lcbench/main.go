// Command lcbench is the lifecycle half of `make bench` (test/bench/run.sh): it builds
// a store directly through the Go API (no HTTP) and times garbage collection and
// retention planning on it. Each subcommand prints KEY=VALUE lines on stdout for the
// driver script; progress goes to stderr.
//
//	lcbench gc -dir DIR [-blobs 100000] [-manifests 10000] [-repos 4] [-layers 12]
//	           [-workers 32] [-settle 0s] [-profile delete|dry|gc|gc2] [-cpuprofile FILE]
//	           [-memprofile FILE]
//	lcbench retention -dir DIR [-tags 10000] [-workers 32] [-reps 3] [-deletes 500] [-cpuprofile FILE]
//	           [-memprofile FILE]
//
// gc: pushes -blobs small blobs (16 to 64 bytes) spread over -repos repositories and
// -manifests tagged OCI image manifests, each referencing its own config blob, two
// base layers shared by many manifests and the rest of -layers from a pool in which
// some layers are shared by two manifests; every blob is referenced. It then deletes
// every other manifest (DeleteManifest, one at a time) and times CollectGarbage with
// no grace period: a dry run first, then the real collection, then a second real
// collection that must find nothing. The counts are checked against what the
// program knows it referenced.
//
// retention: pushes -tags tagged manifests into one repository (releases across many
// majors and minors, release candidates, snapshots and other tags, 10% of them
// pulled) and times lifecycle.Engine.Plan with a Semver + Candidates + Snapshots +
// KeepLast policy, -reps times; TagInfos (the store's share) is timed alone too. Then
// it deletes -deletes of the manifests the plan lets go of, one DeleteManifest at a
// time, for the cost of a manifest delete in a repository with many tags.
//
// Memory: before each timed phase the program collects garbage, returns the free heap
// to the kernel and resets the kernel's peak-RSS mark (writing 5 to /proc/self/clear_refs), so *_HWM_MIB is the
// peak resident set during the phase (the process's, including Badger's memory-mapped
// index files), *_ANON_MIB the peak of its anonymous part sampled every 5 ms; *_HEAP_MIB is
// the peak of live plus unswept Go heap objects sampled every 5 ms, *_LIVE_MIB the
// largest live heap a Go collection marked during the phase, *_ALLOC_MIB what the
// phase allocated in total, *_CPU_S the user+system CPU time it used. Badger's
// memtables and caches are Go memory here (no jemalloc), so they are in the heap.
// -cpuprofile and -memprofile profile one phase (-profile; the real collection by
// default); compare heap profiles with go tool pprof -sample_index=alloc_space
// -base FILE.base BINARY FILE.
package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"runtime/pprof"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/dockyard/dockyard/cache"
	"github.com/dockyard/dockyard/index"
	"github.com/dockyard/dockyard/lifecycle"
	"github.com/dockyard/dockyard/oci"
	"github.com/dockyard/dockyard/vhost"
)

const (
	reg          = "hosted"
	configType   = "application/vnd.oci.image.config.v1+json"
	layerType    = "application/vnd.oci.image.layer.v1.tar+gzip"
	hotLayers    = 2   // base layers per manifest, from a small shared set
	hotSetPerRep = 100 // base layers per repository
)

func main() {
	if len(os.Args) < 2 {
		fatalf("usage: lcbench gc|retention|pages [flags]")
	}
	var err error
	switch os.Args[1] {
	case "gc":
		err = gcBench(os.Args[2:])
	case "retention":
		err = retentionBench(os.Args[2:])
	case "pages":
		err = pagesBench(os.Args[2:])
	default:
		fatalf("unknown subcommand %q", os.Args[1])
	}
	if err != nil {
		fatalf("%s: %v", os.Args[1], err)
	}
}

func fatalf(f string, a ...any) {
	fmt.Fprintf(os.Stderr, "lcbench: "+f+"\n", a...)
	os.Exit(1)
}

func logf(f string, a ...any) { fmt.Fprintf(os.Stderr, "lcbench: "+f+"\n", a...) }

func out(k string, v any) { fmt.Printf("%s=%v\n", k, v) }

func secs(d time.Duration) string { return fmt.Sprintf("%.2f", d.Seconds()) }

// dsn, when set (-dsn), puts the index in that PostgreSQL database instead of Badger.
var dsn string

func openStore(dir string, now func() time.Time) (*cache.Store, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	opts := cache.Options{Dir: dir, Logger: log, Now: now}
	if dsn != "" {
		db, err := index.OpenPostgres(context.Background(), index.PostgresOptions{DSN: dsn, MaxConns: 32, Timeout: 10 * time.Minute})
		if err != nil {
			return nil, err
		}
		opts.Index = db
	}
	return cache.Open(opts)
}

// parallel runs f(0..n-1) on workers goroutines and returns the first error.
func parallel(n, workers int, f func(i int) error) error {
	var next atomic.Int64
	var firstErr atomic.Pointer[error]
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for firstErr.Load() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := f(i); err != nil {
					firstErr.CompareAndSwap(nil, &err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if p := firstErr.Load(); p != nil {
		return *p
	}
	return nil
}

// --- memory and CPU of a phase ------------------------------------------------------

type phase struct {
	name      string
	start     time.Time
	cpu0      time.Duration
	csw0      int64
	alloc0    uint64
	hwmReset  bool
	peakHeap  atomic.Uint64
	peakLive  atomic.Uint64
	peakAnon  atomic.Uint64 // kB
	stop      chan struct{}
	done      chan struct{}
	profile   *os.File
	memprof   string
	wall, cpu time.Duration
}

// lastAllocMiB is what the last phase to end allocated.
var lastAllocMiB float64

var heapMetrics = []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/gc/heap/allocs:bytes"},
	{Name: "/gc/heap/live:bytes"}}

// readHeap reads the heap's objects (live and not yet swept), the bytes allocated so
// far and the live heap marked by the last collection.
func readHeap() (objects, allocs, live uint64) {
	s := slices.Clone(heapMetrics)
	metrics.Read(s)
	return s[0].Value.Uint64(), s[1].Value.Uint64(), s[2].Value.Uint64()
}

func storeMax(a *atomic.Uint64, v uint64) {
	if v > a.Load() {
		a.Store(v)
	}
}

// profiles says which phase to profile and where.
type profiles struct{ phase, cpu, mem string }

func (pr profiles) register(fs *flag.FlagSet, phases, def string) *profiles {
	p := &profiles{}
	fs.StringVar(&p.phase, "profile", def, "phase the profiles cover: "+phases)
	fs.StringVar(&p.cpu, "cpuprofile", "", "write a CPU profile of the -profile phase")
	fs.StringVar(&p.mem, "memprofile", "", "write heap profiles at the start (FILE.base) and end (FILE) of the -profile phase")
	return p
}

func writeHeapProfile(path string) {
	f, err := os.Create(path)
	if err == nil {
		err = pprof.Lookup("allocs").WriteTo(f, 0)
		f.Close()
	}
	if err != nil {
		logf("heap profile: %v", err)
	}
}

func rusage() (cpu time.Duration, csw int64) {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), ru.Nvcsw
}

// begin starts a timed phase, profiled when prof names it.
func begin(name string, prof *profiles) *phase {
	debug.FreeOSMemory() // a collection, and the freed heap back to the kernel: RSS starts low
	p := &phase{name: name, stop: make(chan struct{}), done: make(chan struct{})}
	p.hwmReset = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil
	if prof != nil && prof.phase == name && prof.mem != "" {
		p.memprof = prof.mem
		writeHeapProfile(prof.mem + ".base")
	}
	obj, alloc, live := readHeap()
	p.peakHeap.Store(obj)
	p.peakLive.Store(live)
	p.alloc0 = alloc
	go func() {
		defer close(p.done)
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-t.C:
				o, _, l := readHeap()
				storeMax(&p.peakHeap, o)
				storeMax(&p.peakLive, l)
				storeMax(&p.peakAnon, statusKB("RssAnon:"))
			}
		}
	}()
	if prof != nil && prof.phase == name && prof.cpu != "" {
		f, err := os.Create(prof.cpu)
		if err == nil && pprof.StartCPUProfile(f) == nil {
			p.profile = f
		} else {
			logf("%s: no CPU profile: %v", name, err)
		}
	}
	p.cpu0, p.csw0 = rusage()
	p.start = time.Now()
	return p
}

// end stops the phase and prints PREFIX_S, _CPU_S, _HEAP_MIB, _LIVE_MIB, _ALLOC_MIB,
// _HWM_MIB, _ANON_MIB and _CSW (voluntary context switches: the phase waiting, on the
// disk mostly).
func (p *phase) end(prefix string) {
	p.wall = time.Since(p.start)
	cpu, csw := rusage()
	p.cpu = cpu - p.cpu0
	if p.profile != nil {
		pprof.StopCPUProfile()
		p.profile.Close()
	}
	close(p.stop)
	<-p.done
	obj, alloc, live := readHeap()
	storeMax(&p.peakHeap, obj)
	storeMax(&p.peakLive, live)
	storeMax(&p.peakAnon, statusKB("RssAnon:"))
	if p.memprof != "" {
		writeHeapProfile(p.memprof)
	}
	out(prefix+"_S", secs(p.wall))
	out(prefix+"_CPU_S", secs(p.cpu))
	out(prefix+"_CSW", csw-p.csw0)
	out(prefix+"_HEAP_MIB", mib(p.peakHeap.Load()))
	out(prefix+"_LIVE_MIB", mib(p.peakLive.Load()))
	out(prefix+"_ALLOC_MIB", mib(alloc-p.alloc0))
	lastAllocMiB = float64(alloc-p.alloc0) / (1 << 20)
	hwm := fmt.Sprintf("%.1f", float64(statusKB("VmHWM:"))/1024)
	if !p.hwmReset {
		hwm += "(since-start)"
	}
	out(prefix+"_HWM_MIB", hwm)
	out(prefix+"_ANON_MIB", fmt.Sprintf("%.1f", float64(p.peakAnon.Load())/1024))
}

func mib(b uint64) string { return fmt.Sprintf("%.1f", float64(b)/(1<<20)) }

// statusKB reads a field of /proc/self/status in kB (VmHWM: the peak resident set;
// RssAnon: resident anonymous memory, without the mapped index files).
func statusKB(field string) uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb
		}
	}
	return 0
}

// fsyncLatency times small synced writes in dir: what one durable index commit costs
// at least on this disk.
func fsyncLatency(dir string) time.Duration {
	f, err := os.CreateTemp(dir, "fsync-probe")
	if err != nil {
		return 0
	}
	defer os.Remove(f.Name())
	defer f.Close()
	const n = 200
	buf := make([]byte, 512)
	start := time.Now()
	for range n {
		f.Write(buf)
		f.Sync()
	}
	return time.Since(start) / n
}

// --- manifests -----------------------------------------------------------------------

type blobRef struct {
	d    oci.Digest
	size int64
}

type descJSON struct {
	MediaType string     `json:"mediaType"`
	Digest    oci.Digest `json:"digest"`
	Size      int64      `json:"size"`
}

// imageManifest builds an OCI image manifest's bytes and parses them as a push would.
func imageManifest(config blobRef, layers []blobRef, annotations map[string]string) ([]byte, *oci.Manifest, oci.Digest, error) {
	doc := struct {
		SchemaVersion int               `json:"schemaVersion"`
		MediaType     string            `json:"mediaType"`
		Config        descJSON          `json:"config"`
		Layers        []descJSON        `json:"layers"`
		Annotations   map[string]string `json:"annotations,omitempty"`
	}{SchemaVersion: 2, MediaType: oci.MediaTypeOCIManifest, Config: descJSON{configType, config.d, config.size}, Annotations: annotations}
	for _, l := range layers {
		doc.Layers = append(doc.Layers, descJSON{layerType, l.d, l.size})
	}
	body, err := json.Marshal(doc)
	if err != nil {
		return nil, nil, "", err
	}
	m, err := oci.ParseManifest(oci.MediaTypeOCIManifest, body)
	if err != nil {
		return nil, nil, "", err
	}
	return body, m, oci.FromBytes(oci.SHA256, body), nil
}

// blobContent is the bytes of blob i of repository r: unique, 16 to 64 bytes.
func blobContent(r, i int) []byte {
	b := []byte(fmt.Sprintf("r%db%d:", r, i))
	n := 16 + (i*7919+r*104729)%49
	for len(b) < n {
		b = append(b, 'a'+byte((len(b)*31+i)%26))
	}
	return b
}

func putBlob(ctx context.Context, s *cache.Store, repo string, content []byte) (blobRef, error) {
	d := oci.FromBytes(oci.SHA256, content)
	n, err := s.PutBlob(ctx, reg, repo, d, strings.NewReader(string(content)), int64(len(content)))
	return blobRef{d, n}, err
}

// --- gc --------------------------------------------------------------------------------

func gcBench(args []string) error {
	fs := flag.NewFlagSet("gc", flag.ExitOnError)
	dir := fs.String("dir", "", "store directory (created; must be empty)")
	nBlobs := fs.Int("blobs", 100000, "blobs")
	nManifests := fs.Int("manifests", 10000, "manifests")
	nRepos := fs.Int("repos", 4, "repositories")
	nLayers := fs.Int("layers", 12, "layers per manifest (plus a config blob)")
	workers := fs.Int("workers", 32, "goroutines pushing during setup")
	prof := profiles{}.register(fs, "delete, dry, gc, gc2", "gc")
	settle := fs.Duration("settle", 0, "pause before the dry run (lets Badger finish compacting what setup wrote)")
	fs.StringVar(&dsn, "dsn", "", "PostgreSQL DSN: the index there instead of Badger")
	fs.Parse(args)
	if *dir == "" {
		return fmt.Errorf("-dir is required")
	}
	ctx := context.Background()
	s, err := openStore(*dir, nil)
	if err != nil {
		return err
	}
	defer s.Close()
	out("FSYNC_MS", fmt.Sprintf("%.3f", float64(fsyncLatency(*dir).Microseconds())/1000))

	bPer, mPer := *nBlobs / *nRepos, *nManifests / *nRepos
	pool := bPer - mPer - hotSetPerRep // layers that are neither configs nor base layers
	poolPer := *nLayers - hotLayers
	if pool <= 0 || poolPer <= 0 || poolPer*mPer < pool {
		return fmt.Errorf("not every blob would be referenced: %d blobs, %d manifests, %d layers per repository", bPer, mPer, *nLayers)
	}
	repos := make([]string, *nRepos)
	for r := range repos {
		repos[r] = fmt.Sprintf("bench/gc%d", r)
	}

	// Blobs: per repository, configs [0, mPer), base layers [mPer, mPer+hot), pool after.
	logf("gc: pushing %d blobs (%d workers)", bPer**nRepos, *workers)
	blobs := make([][]blobRef, *nRepos)
	for r := range blobs {
		blobs[r] = make([]blobRef, bPer)
	}
	start := time.Now()
	err = parallel(bPer**nRepos, *workers, func(i int) error {
		r, j := i%*nRepos, i / *nRepos
		ref, err := putBlob(ctx, s, repos[r], blobContent(r, j))
		blobs[r][j] = ref
		return err
	})
	if err != nil {
		return fmt.Errorf("push blobs: %w", err)
	}
	out("SETUP_BLOBS", bPer**nRepos)
	out("SETUP_BLOBS_S", secs(time.Since(start)))

	// Manifests: manifest k of a repository references config k, two base layers and
	// poolPer consecutive pool layers (wrapping around: the first pool layers are
	// shared by two manifests).
	refsOf := func(r, k int) (blobRef, []blobRef) {
		b := blobs[r]
		layers := []blobRef{b[mPer+k%hotSetPerRep], b[mPer+(k*7+1)%hotSetPerRep]}
		if layers[0] == layers[1] {
			layers[1] = b[mPer+(k+1)%hotSetPerRep]
		}
		for t := range poolPer {
			layers = append(layers, b[mPer+hotSetPerRep+(k*poolPer+t)%pool])
		}
		return b[k], layers
	}
	logf("gc: pushing %d tagged manifests", mPer**nRepos)
	digests := make([][]oci.Digest, *nRepos)
	for r := range digests {
		digests[r] = make([]oci.Digest, mPer)
	}
	start = time.Now()
	err = parallel(mPer**nRepos, *workers, func(i int) error {
		r, k := i%*nRepos, i / *nRepos
		config, layers := refsOf(r, k)
		body, m, d, err := imageManifest(config, layers, nil)
		if err != nil {
			return err
		}
		digests[r][k] = d
		return s.PutManifest(ctx, cache.PutManifestRequest{Registry: reg, Repo: repos[r], Digest: d, Content: body,
			Manifest: m, Tags: []oci.Tag{oci.Tag(fmt.Sprintf("build-%d", k))}})
	})
	if err != nil {
		return fmt.Errorf("push manifests: %w", err)
	}
	out("SETUP_MANIFESTS", mPer**nRepos)
	out("GC_TAGS_PER_REPO", mPer)
	out("SETUP_MANIFESTS_S", secs(time.Since(start)))

	// What must go: the odd manifests, and the blobs only they reference.
	kept := map[oci.Digest]bool{}
	deleted := 0
	for r := range repos {
		for k := 0; k < mPer; k += 2 {
			config, layers := refsOf(r, k)
			kept[config.d] = true
			for _, l := range layers {
				kept[l.d] = true
			}
		}
		deleted += mPer / 2
	}
	wantBlobs := bPer**nRepos - len(kept)

	logf("gc: deleting %d manifests, one at a time", deleted)
	p := begin("delete", prof)
	for r := range repos {
		for k := 1; k < mPer; k += 2 {
			if err := s.DeleteManifest(ctx, reg, repos[r], digests[r][k], nil); err != nil {
				return fmt.Errorf("delete manifest: %w", err)
			}
		}
	}
	p.end("DELETE")
	out("DELETE_MANIFESTS", deleted)

	if *settle > 0 {
		logf("gc: settling for %s", *settle)
		time.Sleep(*settle)
	}
	logf("gc: dry run")
	p = begin("dry", prof)
	dry, err := s.CollectGarbage(ctx, cache.GCOptions{Grace: 0, DryRun: true})
	if err != nil {
		return fmt.Errorf("dry run: %w", err)
	}
	p.end("GC_DRY")
	out("GC_DRY_MANIFESTS", dry.Manifests)
	out("GC_DRY_BLOBS", dry.Blobs)
	out("GC_DRY_ORPHANS", dry.OrphanFiles)

	logf("gc: collecting (want %d manifests, %d blobs)", deleted, wantBlobs)
	p = begin("gc", prof)
	rep, err := s.CollectGarbage(ctx, cache.GCOptions{Grace: 0})
	if err != nil {
		return fmt.Errorf("collect: %w", err)
	}
	p.end("GC")
	out("GC_MANIFESTS", rep.Manifests)
	out("GC_BLOBS", rep.Blobs)
	out("GC_BYTES", rep.Bytes)
	out("GC_ORPHANS", rep.OrphanFiles)
	out("GC_WANT_MANIFESTS", deleted)
	out("GC_WANT_BLOBS", wantBlobs)
	if n := rep.Manifests + rep.Blobs; n > 0 {
		out("GC_MS_PER_ITEM", fmt.Sprintf("%.3f", p.wall.Seconds()*1000/float64(n)))
	}

	logf("gc: collecting again")
	p = begin("gc2", prof)
	again, err := s.CollectGarbage(ctx, cache.GCOptions{Grace: 0})
	if err != nil {
		return fmt.Errorf("second collection: %w", err)
	}
	p.end("GC2")
	out("GC2_MANIFESTS", again.Manifests)
	out("GC2_BLOBS", again.Blobs)

	// Spot checks: the kept blobs and manifests are all there, the others are gone.
	problems := 0
	for r := range repos {
		for j, b := range blobs[r] {
			_, ok, err := s.HasBlob(b.d)
			if err != nil {
				return err
			}
			if ok != kept[b.d] {
				if problems < 5 {
					logf("gc: blob %d of %s: stored=%v, want %v", j, repos[r], ok, kept[b.d])
				}
				problems++
			}
		}
		for k, d := range digests[r] {
			_, err := s.GetManifest(ctx, reg, repos[r], oci.Reference{Digest: d})
			if (err == nil) != (k%2 == 0) {
				if problems < 5 {
					logf("gc: manifest %d of %s: err=%v", k, repos[r], err)
				}
				problems++
			}
		}
	}
	out("GC_CHECK_PROBLEMS", problems)
	if problems > 0 || rep.Manifests != deleted || rep.Blobs != wantBlobs || again.Manifests+again.Blobs != 0 {
		return fmt.Errorf("collection did not reclaim what it should (%d problems, %d/%d manifests, %d/%d blobs, then %d+%d)",
			problems, rep.Manifests, deleted, rep.Blobs, wantBlobs, again.Manifests, again.Blobs)
	}
	return nil
}

// --- retention -------------------------------------------------------------------------

// retentionTags generates n distinct tags: about 60% releases (a tenth v-prefixed;
// one version in 20 never released), 15% release candidates, 15% snapshots and 10%
// others, in push order (older versions first, each version's snapshots and release
// candidates before its release), 12 minors of 10 patches per major.
func retentionTags(n int) []string {
	rng := rand.New(rand.NewPCG(1, 2))
	seen := map[string]bool{}
	var tags []string
	add := func(t string) {
		if !seen[t] && len(tags) < n {
			seen[t] = true
			tags = append(tags, t)
		}
	}
	for major := 0; len(tags) < n; major++ {
		for minor := 0; minor < 12 && len(tags) < n; minor++ {
			for patch := 0; patch < 10 && len(tags) < n; patch++ {
				v := fmt.Sprintf("%d.%d.%d", major, minor, patch)
				switch rng.IntN(12) {
				case 0:
					add(fmt.Sprintf("%s-SNAPSHOT.%d", v, 20240101+rng.IntN(1000)))
					fallthrough
				case 1:
					add(v + "-SNAPSHOT")
				}
				if rng.IntN(4) == 0 {
					add(v + "-rc." + strconv.Itoa(1+rng.IntN(3)))
				} else if rng.IntN(15) == 0 {
					add(v + "-RC1")
				}
				switch r := rng.IntN(40); {
				case r < 2: // never released
				case r < 6:
					add("v" + v)
				default:
					add(v)
				}
				if rng.IntN(8) == 0 {
					add(fmt.Sprintf("feature-%d-%d-%d", major, minor, rng.IntN(1000)))
				}
				if rng.IntN(24) == 0 {
					add(fmt.Sprintf("sha-%012x", rng.Uint64()>>16))
				}
			}
		}
	}
	for _, t := range []string{"latest", "main", "develop", "nightly"} {
		if len(tags) == n {
			tags = tags[:n-1]
		}
		tags = append(tags, t)
	}
	return tags
}

func retentionBench(args []string) error {
	fs := flag.NewFlagSet("retention", flag.ExitOnError)
	dir := fs.String("dir", "", "store directory (created; must be empty)")
	nTags := fs.Int("tags", 10000, "tags in the repository")
	workers := fs.Int("workers", 32, "goroutines pushing during setup")
	reps := fs.Int("reps", 3, "timed plans")
	deletes := fs.Int("deletes", 500, "manifests to delete one by one after planning")
	prof := profiles{}.register(fs, "plan", "plan")
	fs.Parse(args)
	if *dir == "" {
		return fmt.Errorf("-dir is required")
	}
	ctx := context.Background()
	// A clock that advances a minute per reading: push times are distinct and in
	// push order.
	base := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	var ticks atomic.Int64
	clock := func() time.Time { return base.Add(time.Duration(ticks.Add(1)) * time.Minute) }
	s, err := openStore(*dir, clock)
	if err != nil {
		return err
	}
	defer s.Close()
	const repo = "bench/retention"
	config, err := putBlob(ctx, s, repo, []byte(`{"architecture":"amd64","os":"linux"}`))
	if err != nil {
		return err
	}
	layer, err := putBlob(ctx, s, repo, blobContent(0, 0))
	if err != nil {
		return err
	}
	tags := retentionTags(*nTags)
	classes := lifecycle.DefaultClasses()
	count := map[lifecycle.Class]int{}
	for _, t := range tags {
		count[classes.Of(t)]++
	}
	logf("retention: pushing %d tagged manifests into %s (%d workers)", len(tags), repo, *workers)
	start := time.Now()
	// Pushed in order in batches of the worker count, so push times follow versions.
	digests := make([]oci.Digest, len(tags))
	for lo := 0; lo < len(tags); lo += *workers {
		hi := min(lo+*workers, len(tags))
		err := parallel(hi-lo, *workers, func(i int) error {
			i += lo
			body, m, d, err := imageManifest(config, []blobRef{layer}, map[string]string{"org.opencontainers.image.version": tags[i]})
			if err != nil {
				return err
			}
			digests[i] = d
			return s.PutManifest(ctx, cache.PutManifestRequest{Registry: reg, Repo: repo, Digest: d, Content: body,
				Manifest: m, Tags: []oci.Tag{oci.Tag(tags[i])}})
		})
		if err != nil {
			return fmt.Errorf("push: %w", err)
		}
	}
	out("SETUP_TAGS_S", secs(time.Since(start)))
	for i, t := range tags {
		if i%10 == 0 {
			s.RecordPull(reg, repo, t, digests[i])
		}
	}
	if err := s.FlushAccess(); err != nil {
		return err
	}
	out("RET_TAGS", len(tags))
	out("RET_RELEASES", count[lifecycle.Release])
	out("RET_RCS", count[lifecycle.Candidate])
	out("RET_SNAPSHOTS", count[lifecycle.Snapshot])
	out("RET_OTHERS", count[lifecycle.Other])

	now := clock().Add(24 * time.Hour)
	e := &lifecycle.Engine{
		Store:      s,
		Registries: []string{reg},
		Policies: []lifecycle.Policy{{
			Name: "bench", Registries: []string{"*"}, Repositories: []string{"bench/**"},
			Rules: []lifecycle.Rule{
				lifecycle.Semver{Majors: 3, Minors: 5, Patches: 3},
				lifecycle.Candidates{DropReleased: true},
				lifecycle.Snapshots{PerVersion: 2, DropReleased: true},
				lifecycle.KeepLast{Count: 20},
			},
		}},
		Classes: classes,
		Now:     func() time.Time { return now },
	}

	logf("retention: TagInfos alone, %d times", *reps)
	var infoTimes []time.Duration
	for range *reps {
		t0 := time.Now()
		infos, err := s.TagInfos(ctx, reg, repo)
		if err != nil {
			return err
		}
		infoTimes = append(infoTimes, time.Since(t0))
		if len(infos) != len(tags) {
			return fmt.Errorf("TagInfos: %d tags, want %d", len(infos), len(tags))
		}
	}
	out("RET_TAGINFOS_S", fmt.Sprintf("%.3f", median(infoTimes).Seconds()))

	logf("retention: planning, %d times", *reps)
	p := begin("plan", prof)
	var times []time.Duration
	var plan []lifecycle.Decision
	for range *reps {
		t0 := time.Now()
		plan, err = e.Plan(ctx, "", "")
		if err != nil {
			return err
		}
		times = append(times, time.Since(t0))
	}
	p.end("RET_PLAN_ALL")
	med := median(times)
	all := make([]string, len(times))
	for i, t := range times {
		all[i] = fmt.Sprintf("%.3f", t.Seconds())
	}
	out("RET_PLAN_REPS", len(times))
	out("RET_PLAN_S", fmt.Sprintf("%.3f", med.Seconds()))
	out("RET_PLAN_S_ALL", strings.Join(all, ","))
	out("RET_PLAN_TAGS_PER_S", fmt.Sprintf("%.0f", float64(len(tags))/med.Seconds()))
	keep := map[string]int{}
	for _, d := range plan {
		if d.Keep {
			keep[d.Reason]++
		}
	}
	reasons := make([]string, 0, len(keep))
	for r, n := range keep {
		reasons = append(reasons, fmt.Sprintf("%s:%d", strings.TrimPrefix(r, "kept by "), n))
	}
	sort.Strings(reasons)
	kept := 0
	for _, n := range keep {
		kept += n
	}
	out("RET_PLAN_DECISIONS", len(plan))
	out("RET_PLAN_KEPT", kept)
	out("RET_PLAN_KEPT_BY", strings.Join(reasons, ","))
	if len(plan) != len(tags) {
		return fmt.Errorf("plan decided %d tags, want %d", len(plan), len(tags))
	}

	// DeleteManifest in this repository (untagged pruning deletes manifests one by one):
	// the first -deletes manifests the plan lets go of, one at a time.
	var victims []oci.Digest
	for _, d := range plan {
		if !d.Keep && len(victims) < *deletes {
			victims = append(victims, oci.Digest(d.Digest))
		}
	}
	if len(victims) > 0 {
		logf("retention: deleting %d manifests of the %d-tag repository, one at a time", len(victims), len(tags))
		p = begin("delete", nil)
		for _, d := range victims {
			if err := s.DeleteManifest(ctx, reg, repo, d, nil); err != nil {
				return fmt.Errorf("delete manifest: %w", err)
			}
		}
		p.end("RET_DELETE")
		out("RET_DELETE_MANIFESTS", len(victims))
		out("RET_DELETE_MS_EACH", fmt.Sprintf("%.2f", p.wall.Seconds()*1000/float64(len(victims))))
		out("RET_DELETE_ALLOC_KB_EACH", fmt.Sprintf("%.0f", lastAllocMiB*1024/float64(len(victims))))
	}
	return nil
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// --- pages -------------------------------------------------------------------------------

// pagesBench fills one repository with n tags and the registry with n repositories,
// then times pages of the tag list and of the catalog at random keyset positions (the
// store call a listing request makes, without HTTP).
func pagesBench(args []string) error {
	fs := flag.NewFlagSet("pages", flag.ExitOnError)
	dir := fs.String("dir", "", "store directory (created)")
	n := fs.Int("n", 100000, "tags in one repository, and repositories in the registry")
	pages := fs.Int("pages", 300, "pages timed of each listing")
	size := fs.Int("size", 1000, "entries per page")
	workers := fs.Int("workers", 16, "goroutines during setup")
	fs.StringVar(&dsn, "dsn", "", "PostgreSQL DSN: the index there instead of Badger")
	fs.Parse(args)
	if *dir == "" {
		return fmt.Errorf("-dir is required")
	}
	ctx := context.Background()
	s, err := openStore(*dir, nil)
	if err != nil {
		return err
	}
	defer s.Close()
	config := []byte(`{"architecture":"amd64","os":"linux"}`)
	body, m, d, err := imageManifest(blobRef{oci.FromBytes(oci.SHA256, config), int64(len(config))}, nil, nil)
	if err != nil {
		return err
	}
	put := func(repo string, tags []oci.Tag) error {
		return s.PutManifest(ctx, cache.PutManifestRequest{Registry: reg, Repo: repo, Digest: d, Content: body,
			Manifest: m, Tags: tags, AllowSparse: true})
	}
	tagName := func(i int) string { return fmt.Sprintf("tag-%07d", i) }
	repoName := func(i int) string { return fmt.Sprintf("bench/r%07d", i) }
	start := time.Now()
	const perPut = 500
	err = parallel((*n+perPut-1)/perPut, *workers, func(i int) error {
		var tags []oci.Tag
		for j := i * perPut; j < min(*n, (i+1)*perPut); j++ {
			tags = append(tags, oci.Tag(tagName(j)))
		}
		return put("bench/tags", tags)
	})
	if err != nil {
		return fmt.Errorf("tags: %w", err)
	}
	err = parallel(*n, *workers, func(i int) error { return put(repoName(i), nil) })
	if err != nil {
		return fmt.Errorf("repositories: %w", err)
	}
	out("PAGES_ENTRIES", *n)
	out("PAGES_SETUP_S", secs(time.Since(start)))

	timePages := func(key string, list func(last string) (int, error), name func(int) string) error {
		var ds []time.Duration
		for range *pages {
			k := rand.IntN(*n - *size)
			t0 := time.Now()
			got, err := list(name(k))
			ds = append(ds, time.Since(t0))
			if err != nil {
				return err
			}
			if got != *size {
				return fmt.Errorf("%s: a page after %s has %d entries, want %d", key, name(k), got, *size)
			}
		}
		slices.Sort(ds)
		out(key+"_P50_MS", fmt.Sprintf("%.2f", float64(ds[len(ds)/2].Microseconds())/1000))
		out(key+"_P99_MS", fmt.Sprintf("%.2f", float64(ds[len(ds)*99/100].Microseconds())/1000))
		return nil
	}
	err = timePages("TAGS", func(last string) (int, error) {
		tags, _, err := s.ListTags(ctx, reg, "bench/tags", last, *size)
		return len(tags), err
	}, tagName)
	if err != nil {
		return err
	}
	err = timePages("CATALOG", func(last string) (int, error) {
		repos, _, err := s.ListRepositories(ctx, reg, last, *size)
		return len(repos), err
	}, repoName)
	if err != nil {
		return err
	}
	return searchBench(ctx, s, *n, *pages, tagName)
}

// searchBench times searches of the search API (the call its handler makes, without
// HTTP) over the n tags of bench/tags: a page of 50 at a random cursor, a text that
// matches 100 tags somewhere in the middle (the scan reaches it first), and a class no
// tag has (the whole registry scanned, an empty answer).
func searchBench(ctx context.Context, s *cache.Store, n, times int, tagName func(int) string) error {
	classes := lifecycle.DefaultClasses()
	h := vhost.NewHosted(reg, s, vhost.HostedOptions{})
	classify := func(tag string) string { return string(classes.Of(tag)) }
	cursor := func(k int) string {
		b, _ := json.Marshal(map[string]string{"g": reg, "r": "bench/tags", "t": tagName(k)})
		return base64.RawURLEncoding.EncodeToString(b)
	}
	for _, c := range []struct {
		key  string
		want func(int) int // results expected
		q    func(k int) vhost.TagQuery
	}{
		{"SEARCH_PAGE", func(int) int { return 50 }, func(k int) vhost.TagQuery {
			return vhost.TagQuery{Cursor: cursor(k), Limit: 50, Classify: classify}
		}},
		{"SEARCH_TEXT", func(int) int { return 50 }, func(k int) vhost.TagQuery {
			return vhost.TagQuery{Text: tagName(k)[:len(tagName(k))-2], Limit: 50, Classify: classify}
		}},
		{"SEARCH_NONE", func(int) int { return 0 }, func(int) vhost.TagQuery {
			return vhost.TagQuery{Class: "release", Limit: 50, Classify: classify}
		}},
	} {
		var ds []time.Duration
		for range times {
			k := rand.IntN(n-200) / 100 * 100
			t0 := time.Now()
			page, err := vhost.SearchTags(ctx, h, c.q(k))
			ds = append(ds, time.Since(t0))
			if err != nil {
				return err
			}
			if len(page.Tags) != c.want(k) {
				return fmt.Errorf("%s: %d results, want %d", c.key, len(page.Tags), c.want(k))
			}
		}
		slices.Sort(ds)
		out(c.key+"_P50_MS", fmt.Sprintf("%.2f", float64(ds[len(ds)/2].Microseconds())/1000))
		out(c.key+"_P99_MS", fmt.Sprintf("%.2f", float64(ds[len(ds)*99/100].Microseconds())/1000))
	}
	return nil
}
