// Command soak is the client half of `make soak` (test/soak/run.sh): against a running
// dockyard (one instance, or several behind a balancer) it runs a mixed workload for a
// while — pushes that overwrite a bounded set of tags, deletes, pulls, retention and
// garbage collection on demand, cold pulls through a proxy registry whose upstream
// misbehaves, token logins and searches — while it samples each instance's resident
// memory, goroutines and open files and the index's size into a CSV file. At the end
// it draws the samples (a PNG), checks that nothing grows without bound over the second
// half, and checks that every push it was answered 201 for, and did not undo itself,
// is still there byte-identical. It prints PASS/FAIL lines, one per check, and exits 1
// when any failed.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/csv"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

type config struct {
	name         string        // the run's name: single, cluster
	addr         string        // where clients go (an instance or the balancer)
	instances    []instance    // sampled
	indexDir     string        // a Badger index's directory (its size is sampled), or
	pgDSN        string        // a PostgreSQL index (its database's size)
	upstream     string        // the proxy's real upstream, seeded directly
	proxyPrefix  string        // the namespace routed to the proxy registry
	user, pass   string        // a user who may push, pull and delete everything, and run jobs
	duration     time.Duration // of the workload
	every        time.Duration // between samples
	out          string        // directory for the CSV and the PNG
	retentionPol []string      // the retention policies to run, in turn (the first: keep_last on soak/ret*)
	keepLast     int           // what that policy keeps
	opTimeout    time.Duration // an operation running longer hangs
}

type instance struct {
	name string
	pid  int
	addr string // its own address, for /metrics
}

func main() {
	var c config
	var instances string
	flag.StringVar(&c.name, "name", "single", "the run's name (files are NAME.csv, NAME.png)")
	flag.StringVar(&c.addr, "addr", "", "HOST:PORT clients use")
	flag.StringVar(&instances, "instances", "", "NAME=PID@HOST:PORT,… of the instances to sample")
	flag.StringVar(&c.indexDir, "index-dir", "", "the Badger index directory to measure")
	flag.StringVar(&c.pgDSN, "pg-dsn", "", "the PostgreSQL index to measure")
	flag.StringVar(&c.upstream, "upstream", "", "HOST:PORT of the proxy registry's upstream (seeded directly)")
	flag.StringVar(&c.proxyPrefix, "proxy-prefix", "upstream", "namespace routed to the proxy registry")
	flag.StringVar(&c.user, "user", "", "user name")
	flag.StringVar(&c.pass, "password", "", "password")
	flag.DurationVar(&c.duration, "duration", 2*time.Minute, "how long the workload runs")
	flag.DurationVar(&c.every, "every", 2*time.Second, "sampling interval")
	flag.StringVar(&c.out, "out", ".", "output directory")
	policies := flag.String("retention-policies", "soak,soak-untagged", "retention policies to run in turn")
	flag.IntVar(&c.keepLast, "keep-last", 5, "tags the retention policy keeps per repository")
	flag.DurationVar(&c.opTimeout, "op-timeout", 2*time.Minute, "an operation taking longer counts as hung")
	flag.Parse()
	c.retentionPol = strings.Split(*policies, ",")
	log.SetFlags(log.Ltime)
	for _, s := range strings.Split(instances, ",") {
		if s == "" {
			continue
		}
		n, rest, ok1 := strings.Cut(s, "=")
		p, a, ok2 := strings.Cut(rest, "@")
		pid, err := strconv.Atoi(p)
		if !ok1 || !ok2 || err != nil {
			log.Fatalf("-instances: %q is not NAME=PID@HOST:PORT", s)
		}
		c.instances = append(c.instances, instance{name: n, pid: pid, addr: a})
	}
	if c.addr == "" || len(c.instances) == 0 {
		log.Fatal("-addr and -instances are needed")
	}
	if err := os.MkdirAll(c.out, 0o755); err != nil {
		log.Fatal(err)
	}
	r := newRun(c)
	ok := r.main()
	fmt.Printf("soak %s: %d passed, %d failed\n", c.name, r.passed, r.failed)
	if !ok {
		os.Exit(1)
	}
}

type run struct {
	c      config
	auth   remote.Option
	passed int
	failed int

	// What the workload did, counted.
	ops sync.Map // op name → *opCount

	mu       sync.Mutex
	expected map[string]pushed // "repo:tag" → the push the tag must still show
	retained map[string][]pushed

	proxied []proxied // images in the upstream, pulled through the proxy
	corrupt atomic.Int64
	lost    atomic.Int64
	hung    atomic.Int64 // operations past opTimeout
}

type opCount struct{ ok, failed atomic.Int64 }

type pushed struct {
	repo, tag string
	digest    v1.Hash
	manifest  []byte
	layers    []v1.Hash
}

type proxied struct {
	repo, tag string
	digest    v1.Hash
}

func newRun(c config) *run {
	return &run{c: c, auth: remote.WithAuth(&authn.Basic{Username: c.user, Password: c.pass}),
		expected: map[string]pushed{}, retained: map[string][]pushed{}}
}

func (r *run) check(name string, ok bool, detail string, args ...any) {
	if ok {
		r.passed++
		fmt.Printf("PASS: %s: %s\n", r.c.name, name)
		return
	}
	r.failed++
	fmt.Printf("FAIL: %s: %s: %s\n", r.c.name, name, fmt.Sprintf(detail, args...))
}

func (r *run) count(op string, err error) {
	v, _ := r.ops.LoadOrStore(op, &opCount{})
	if err != nil {
		v.(*opCount).failed.Add(1)
		return
	}
	v.(*opCount).ok.Add(1)
}

func (r *run) main() bool {
	if r.c.upstream != "" {
		if err := r.seedUpstream(); err != nil {
			r.check("upstream seeded", false, "%v", err)
			return false
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.c.duration)
	defer cancel()
	samples := make(chan []sample, 1)
	go func() { samples <- r.sample(ctx) }()

	var wg sync.WaitGroup
	worker := func(name string, pause time.Duration, fn func(ctx context.Context, i int) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				opCtx, cancel := context.WithTimeout(ctx, r.c.opTimeout)
				err := fn(opCtx, i)
				hung := opCtx.Err() == context.DeadlineExceeded && ctx.Err() == nil
				cancel()
				if ctx.Err() != nil && err != nil {
					return // cut short by the end: neither success nor failure
				}
				if hung {
					r.hung.Add(1)
					log.Printf("%s: still running after %s: %v", name, r.c.opTimeout, err)
				}
				r.count(name, err)
				if err != nil && !errors.Is(err, errExpected) {
					log.Printf("%s: %v", name, err)
				}
				sleep(ctx, pause)
			}
		}()
	}
	for p := range 2 {
		worker(fmt.Sprint("push", p), 100*time.Millisecond, func(ctx context.Context, i int) error { return r.push(ctx, p, i) })
	}
	worker("retained-push", 300*time.Millisecond, r.pushRetained)
	for p := range 2 {
		worker(fmt.Sprint("pull", p), 50*time.Millisecond, r.pull)
	}
	if len(r.proxied) > 0 {
		worker("proxy-pull", 200*time.Millisecond, r.proxyPull)
	}
	worker("login", 500*time.Millisecond, r.login)
	worker("search", 500*time.Millisecond, r.search)
	worker("gc", 5*time.Second, func(ctx context.Context, _ int) error { return r.job(ctx, "gc", "") })
	worker("retention", 4*time.Second, func(ctx context.Context, i int) error {
		return r.job(ctx, "retention", "policy="+r.c.retentionPol[i%len(r.c.retentionPol)])
	})
	wg.Wait()
	got := <-samples

	r.report()
	r.writeSamples(got)
	r.checkTrends(got)
	r.verify()
	r.check("no proxied pull served wrong bytes", r.corrupt.Load() == 0, "%d pulls got bytes that differ from the upstream's", r.corrupt.Load())
	r.check("no acknowledged push was lost during the run", r.lost.Load() == 0, "%d pulls found an expected manifest missing", r.lost.Load())
	r.check(fmt.Sprintf("no operation hung (ran past %s)", r.c.opTimeout), r.hung.Load() == 0, "%d did", r.hung.Load())
	return r.failed == 0
}

// errExpected marks failures the workload expects (a digest superseded and collected
// meanwhile; a job already running): counted, not logged.
var errExpected = errors.New("expected")

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func (r *run) ref(repo, tagOrDigest string) (name.Reference, error) {
	if strings.HasPrefix(tagOrDigest, "sha256:") {
		return name.NewDigest(r.c.addr+"/"+repo+"@"+tagOrDigest, name.Insecure)
	}
	return name.NewTag(r.c.addr+"/"+repo+":"+tagOrDigest, name.Insecure)
}

// image is a random image of layers layers of up to maxSmall bytes, one in ten of
// 1 MiB instead (downloads long enough to break midway).
func image(layers, maxSmall int) (v1.Image, error) {
	img := empty.Image
	for range layers {
		size := 1 + mrand.IntN(maxSmall)
		if mrand.IntN(10) == 0 {
			size = 1 << 20
		}
		b := make([]byte, size)
		rand.Read(b)
		var err error
		img, err = mutate.AppendLayers(img, static.NewLayer(b, types.OCILayer))
		if err != nil {
			return nil, err
		}
	}
	return mutate.MediaType(img, types.OCIManifestSchema1), nil
}

// pushNew pushes a new image of one or two small layers to repo:tag and returns what
// it pushed.
func (r *run) pushNew(ctx context.Context, repo, tag string) (pushed, error) {
	img, err := image(1+mrand.IntN(2), 64<<10)
	if err != nil {
		return pushed{}, err
	}
	d, err := describe(repo, tag, img)
	if err != nil {
		return d, err
	}
	ref, err := r.ref(repo, tag)
	if err != nil {
		return d, err
	}
	if err := remote.Write(ref, img, r.auth, remote.WithContext(ctx)); err != nil {
		return d, fmt.Errorf("push %s:%s: %w", repo, tag, err)
	}
	return d, nil
}

func describe(repo, tag string, img v1.Image) (pushed, error) {
	p := pushed{repo: repo, tag: tag}
	var err error
	if p.digest, err = img.Digest(); err != nil {
		return p, err
	}
	if p.manifest, err = img.RawManifest(); err != nil {
		return p, err
	}
	layers, err := img.Layers()
	if err != nil {
		return p, err
	}
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			return p, err
		}
		p.layers = append(p.layers, d)
	}
	return p, nil
}

// push writes a new image to one of pusher p's tags (soak/appN:pP-tM: each tag has one
// pusher, so the last acknowledged push is the one the tag must show), and now and
// then deletes one of its tags instead.
func (r *run) push(ctx context.Context, p, i int) error {
	repo := fmt.Sprintf("soak/app%d", mrand.IntN(5))
	tag := fmt.Sprintf("p%d-t%d", p, mrand.IntN(8))
	key := repo + ":" + tag
	if i%10 == 9 {
		r.mu.Lock()
		_, there := r.expected[key]
		r.mu.Unlock()
		if !there {
			return nil
		}
		ref, err := r.ref(repo, tag)
		if err != nil {
			return err
		}
		// Once sent, the delete may have happened (its answer lost, or the run's end
		// cutting the wait short): the tag is no longer expected either way.
		r.mu.Lock()
		delete(r.expected, key)
		r.mu.Unlock()
		if err := remote.Delete(ref, r.auth, remote.WithContext(ctx)); err != nil {
			return fmt.Errorf("delete %s: %w", key, err)
		}
		return nil
	}
	// Once the push has been tried the tag may show it (the 201 lost on the way): the
	// expectation is dropped first, and set only when acknowledged.
	r.mu.Lock()
	delete(r.expected, key)
	r.mu.Unlock()
	d, err := r.pushNew(ctx, repo, tag)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.expected[key] = d
	r.mu.Unlock()
	return nil
}

// pushRetained pushes new tags to soak/retN, which the retention policy cuts back to
// its newest keep-last: those must always be there.
func (r *run) pushRetained(ctx context.Context, i int) error {
	repo := fmt.Sprintf("soak/ret%d", i%2)
	d, err := r.pushNew(ctx, repo, fmt.Sprintf("build-%06d", i))
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.retained[repo] = append(r.retained[repo], d)
	r.mu.Unlock()
	return nil
}

// pull reads an expected image by digest, its manifest and one layer. A manifest
// missing is a loss unless its tag moved on meanwhile (then GC may rightly have taken
// it).
func (r *run) pull(ctx context.Context, _ int) error {
	r.mu.Lock()
	var pick pushed
	n := 0
	for _, p := range r.expected {
		n++
		if mrand.IntN(n) == 0 {
			pick = p
		}
	}
	r.mu.Unlock()
	if n == 0 {
		return nil
	}
	ref, err := r.ref(pick.repo, pick.digest.String())
	if err != nil {
		return err
	}
	desc, err := remote.Get(ref, r.auth, remote.WithContext(ctx))
	if err == nil && !bytes.Equal(desc.Manifest, pick.manifest) {
		r.lost.Add(1)
		return fmt.Errorf("%s@%s: the manifest differs from what was pushed", pick.repo, pick.digest)
	}
	if err == nil {
		var img v1.Image
		if img, err = desc.Image(); err == nil {
			var l v1.Layer
			if l, err = img.LayerByDigest(pick.layers[mrand.IntN(len(pick.layers))]); err == nil {
				err = drain(l)
			}
		}
	}
	if err == nil {
		return nil
	}
	if !r.stillExpected(pick) {
		return errExpected
	}
	if isNotFound(err) {
		r.lost.Add(1)
	}
	return fmt.Errorf("pull %s:%s@%s: %w", pick.repo, pick.tag, pick.digest, err)
}

func (r *run) stillExpected(p pushed) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	cur, ok := r.expected[p.repo+":"+p.tag]
	return ok && cur.digest == p.digest
}

func isNotFound(err error) bool {
	return strings.Contains(err.Error(), "MANIFEST_UNKNOWN") || strings.Contains(err.Error(), "BLOB_UNKNOWN")
}

// drain reads a layer whole; go-containerregistry checks its digest at EOF.
func drain(l v1.Layer) error {
	rc, err := l.Compressed()
	if err != nil {
		return err
	}
	defer rc.Close()
	_, err = io.Copy(io.Discard, rc)
	return err
}

// upstreamImage pushes a new image of two layers straight to the upstream.
func (r *run) upstreamImage(ctx context.Context, repo, tag string) (proxied, error) {
	p := proxied{repo: repo, tag: tag}
	img, err := image(2, 96<<10)
	if err != nil {
		return p, err
	}
	ref, err := name.NewTag(r.c.upstream+"/"+repo+":"+tag, name.Insecure)
	if err != nil {
		return p, err
	}
	if err := remote.Write(ref, img, remote.WithContext(ctx)); err != nil {
		return p, fmt.Errorf("seeding the upstream: %w", err)
	}
	p.digest, err = img.Digest()
	return p, err
}

// upstreamRepo names one of this run's repositories in the upstream (runs at once
// share it).
func (r *run) upstreamRepo(i int) string { return fmt.Sprintf("soak-%s/up%d", r.c.name, i) }

// seedUpstream puts the first images in the upstream.
func (r *run) seedUpstream() error {
	for i := range 4 {
		p, err := r.upstreamImage(context.Background(), r.upstreamRepo(i), "v0")
		if err != nil {
			return err
		}
		r.proxied = append(r.proxied, p)
	}
	return nil
}

// proxyPull pulls through the proxy registry: every other time a new image just pushed
// to the upstream, by tag (a cold pull: tag, manifest and blobs from the upstream),
// otherwise one of the last 20 by digest (cached, or evicted by the cache's size
// bound and cold again). It succeeds byte-identical or fails; wrong bytes are counted
// as corruption.
func (r *run) proxyPull(ctx context.Context, i int) error {
	var p proxied
	ref := func() (name.Reference, error) { return r.ref(r.c.proxyPrefix+"/"+p.repo, p.digest.String()) }
	if i%2 == 0 {
		var err error
		if p, err = r.upstreamImage(ctx, r.upstreamRepo(i%8), fmt.Sprintf("v%d", i)); err != nil {
			return err
		}
		r.proxied = append(r.proxied, p)
		if len(r.proxied) > 20 {
			r.proxied = r.proxied[1:]
		}
		ref = func() (name.Reference, error) { return r.ref(r.c.proxyPrefix+"/"+p.repo, p.tag) }
	} else {
		p = r.proxied[mrand.IntN(len(r.proxied))]
	}
	rf, err := ref()
	if err != nil {
		return err
	}
	img, err := remote.Image(rf, r.auth, remote.WithContext(ctx))
	if err != nil {
		return err
	}
	d, err := img.Digest()
	if err != nil {
		return err
	}
	if d != p.digest {
		r.corrupt.Add(1)
		return fmt.Errorf("proxy pull of %s: manifest digest %s, want %s", rf, d, p.digest)
	}
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	for _, l := range layers {
		if err := drain(l); err != nil {
			// A body that ended cleanly with other bytes than the digest's (a cut
			// connection is an unexpected EOF instead).
			if strings.Contains(err.Error(), "error verifying") {
				r.corrupt.Add(1)
			}
			return err
		}
	}
	return nil
}

// login asks the token endpoint for a token (what `docker login` does).
func (r *run) login(ctx context.Context, _ int) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet,
		"http://"+r.c.addr+"/token?service="+r.c.addr+"&scope=repository:soak/app0:pull,push", nil)
	if err != nil {
		return err
	}
	req.SetBasicAuth(r.c.user, r.c.pass)
	return r.expect200(req)
}

func (r *run) expect200(req *http.Request) error {
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s: %s", req.Method, req.URL.Path, resp.Status, bytes.TrimSpace(b))
	}
	return nil
}

// search runs a Docker Hub style search and a tag search.
func (r *run) search(ctx context.Context, i int) error {
	url := "http://" + r.c.addr + "/v1/search?q=soak"
	if i%2 == 1 {
		url = "http://" + r.c.addr + "/-/api/v1/search?q=soak&class=other&n=50"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.SetBasicAuth(r.c.user, r.c.pass)
	return r.expect200(req)
}

// job runs a lifecycle job through the admin endpoint (on whichever instance the
// balancer picks); one already running is expected.
func (r *run) job(ctx context.Context, job, query string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+r.c.addr+"/-/admin/"+job+"?"+query, nil)
	if err != nil {
		return err
	}
	req.SetBasicAuth(r.c.user, r.c.pass)
	err = r.expect200(req)
	if err != nil && strings.Contains(err.Error(), "already running") {
		return errExpected
	}
	return err
}

func (r *run) report() {
	var names []string
	r.ops.Range(func(k, _ any) bool { names = append(names, k.(string)); return true })
	sort.Strings(names)
	var line []string
	for _, n := range names {
		v, _ := r.ops.Load(n)
		c := v.(*opCount)
		line = append(line, fmt.Sprintf("%s %d ok/%d failed", n, c.ok.Load(), c.failed.Load()))
	}
	fmt.Printf("soak %s: operations: %s\n", r.c.name, strings.Join(line, ", "))
	for _, n := range names {
		if strings.HasPrefix(n, "push") || strings.HasPrefix(n, "pull") || n == "search" || n == "login" {
			v, _ := r.ops.Load(n)
			c := v.(*opCount)
			// The hosted workload does not fail on a healthy registry: a few failures
			// (a balancer's retry, an instance busy) are tolerated, a pattern is not.
			r.check(n+" succeeded", c.ok.Load() > 0 && c.failed.Load()*20 <= c.ok.Load(),
				"%d ok, %d failed", c.ok.Load(), c.failed.Load())
		}
	}
	if v, ok := r.ops.Load("proxy-pull"); ok {
		c := v.(*opCount)
		r.check("cold pulls through the faulty upstream succeeded at times", c.ok.Load() > 0,
			"%d ok, %d failed", c.ok.Load(), c.failed.Load())
	}
}

// verify checks, after the workload, every tag the run expects: it shows the last
// acknowledged push, byte-identical, with its layers; and the retained repositories
// keep their newest pushes.
func (r *run) verify() {
	r.mu.Lock()
	expected := make([]pushed, 0, len(r.expected))
	for _, p := range r.expected {
		expected = append(expected, p)
	}
	for _, list := range r.retained {
		if len(list) > r.c.keepLast {
			list = list[len(list)-r.c.keepLast:]
		}
		expected = append(expected, list...)
	}
	r.mu.Unlock()
	var bad []string
	for _, p := range expected {
		if err := r.verifyOne(p); err != nil {
			bad = append(bad, err.Error())
		}
	}
	r.check(fmt.Sprintf("every acknowledged push (%d tags) pulls byte-identical at the end", len(expected)),
		len(expected) > 0 && len(bad) == 0, "%d of %d: %s", len(bad), len(expected), strings.Join(first(bad, 5), "; "))
	list, _ := json.Marshal(expected)
	os.WriteFile(filepath.Join(r.c.out, r.c.name+"-expected.json"), list, 0o644)
}

func first(s []string, n int) []string { return s[:min(n, len(s))] }

func (r *run) verifyOne(p pushed) error {
	ref, err := r.ref(p.repo, p.tag)
	if err != nil {
		return err
	}
	desc, err := remote.Get(ref, r.auth)
	if err != nil {
		return fmt.Errorf("%s:%s: %v", p.repo, p.tag, err)
	}
	if desc.Digest != p.digest || !bytes.Equal(desc.Manifest, p.manifest) {
		return fmt.Errorf("%s:%s is %s, want %s", p.repo, p.tag, desc.Digest, p.digest)
	}
	img, err := desc.Image()
	if err != nil {
		return err
	}
	for _, d := range p.layers {
		l, err := img.LayerByDigest(d)
		if err == nil {
			err = drain(l)
		}
		if err != nil {
			return fmt.Errorf("%s:%s layer %s: %v", p.repo, p.tag, d, err)
		}
	}
	return nil
}

// MarshalJSON lists a push for the record of what was checked.
func (p pushed) MarshalJSON() ([]byte, error) {
	return json.Marshal(map[string]string{"repository": p.repo, "tag": p.tag, "digest": p.digest.String()})
}

// writeSamples writes NAME.csv.
func (r *run) writeSamples(s []sample) {
	f, err := os.Create(filepath.Join(r.c.out, r.c.name+".csv"))
	if err != nil {
		r.check("samples written", false, "%v", err)
		return
	}
	defer f.Close()
	w := csv.NewWriter(f)
	w.Write([]string{"seconds", "instance", "rss_bytes", "goroutines", "open_files", "index_bytes"})
	for _, x := range s {
		w.Write([]string{strconv.FormatFloat(x.at.Seconds(), 'f', 1, 64), x.instance,
			fmt.Sprint(x.rss), fmt.Sprint(x.goroutines), fmt.Sprint(x.fds), fmt.Sprint(x.index)})
	}
	w.Flush()
	if err := w.Error(); err != nil {
		r.check("samples written", false, "%v", err)
	}
	if err := drawPlot(filepath.Join(r.c.out, r.c.name+".png"), r.c.name, s); err != nil {
		r.check("plot drawn", false, "%v", err)
	}
}
