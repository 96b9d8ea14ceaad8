package vhost_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/dockyard/dockyard/blobstore"
	"github.com/dockyard/dockyard/cache"
	"github.com/dockyard/dockyard/oci"
	"github.com/dockyard/dockyard/test/peers/faulty"
	"github.com/dockyard/dockyard/test/peers/refreg"
	"github.com/dockyard/dockyard/upstream"
	"github.com/dockyard/dockyard/vhost"
)

// These tests pull from the CNCF reference registry through a fault-injecting proxy
// (test/peers/faulty) and check what clients get and what the cache keeps.

// flakyAttempts is the retry budget of the flaky tests' upstream client.
const flakyAttempts = 4

// flaky is a dockyard proxy of the CNCF registry, reached through a faulty proxy.
type flaky struct {
	registry string // the CNCF registry's host:port, to push to directly
	faults   *faulty.Proxy
	s        *server
	proxy    *vhost.Proxy
	waits    *waits
}

// waits records the pauses dockyard's upstream client asks for between attempts, and
// makes them short.
type waits struct {
	mu sync.Mutex
	d  []time.Duration
}

func (w *waits) sleep(ctx context.Context, d time.Duration) error {
	w.mu.Lock()
	w.d = append(w.d, d)
	w.mu.Unlock()
	select {
	case <-time.After(min(d, 5*time.Millisecond)):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// count is how many recorded pauses were exactly d.
func (w *waits) count(d time.Duration) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, x := range w.d {
		if x == d {
			n++
		}
	}
	return n
}

func (w *waits) len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.d)
}

type flakyOptions struct {
	timeout time.Duration // the upstream timeout (default 5s)
	maxSize int64
	logger  *slog.Logger
}

func startFlaky(t *testing.T, o flakyOptions) *flaky {
	t.Helper()
	if o.timeout == 0 {
		o.timeout = 5 * time.Second
	}
	if o.logger == nil {
		o.logger = testLogger()
	}
	f := &flaky{registry: refreg.Start(t, refreg.Options{}), waits: &waits{}}
	fp, err := faulty.Start("http://" + f.registry)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fp.Close)
	f.faults = fp
	f.s = startServer(t, func(store *cache.Store) ([]vhost.Registry, []vhost.Route) {
		client, err := upstream.New(upstream.Config{URL: fp.URL, Timeout: o.timeout, Retry: upstream.Retry{
			Attempts: flakyAttempts, Backoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
			MaxRetryAfter: 10 * time.Second, Sleep: f.waits.sleep,
		}})
		if err != nil {
			t.Fatal(err)
		}
		f.proxy = vhost.NewProxy("up", store, client, vhost.ProxyOptions{TagTTL: time.Hour, MaxSize: o.maxSize, Logger: o.logger})
		return []vhost.Registry{f.proxy}, []vhost.Route{{Host: "*", Registry: "up"}}
	})
	return f
}

// push writes a random image of layers of size bytes to the registry as name:tag.
func (f *flaky) push(t *testing.T, nameTag string, size int64, layers int) v1.Image {
	t.Helper()
	img := randomImage(t, size, layers)
	if err := remote.Write(ref(t, f.registry+"/"+nameTag), img); err != nil {
		t.Fatal(err)
	}
	return img
}

// noRetries makes go-containerregistry's client report the first failure instead of
// retrying it: the tests look at what dockyard answers.
var noRetries = []remote.Option{remote.WithRetryPredicate(func(error) bool { return false }), remote.WithRetryStatusCodes()}

// pull pulls name:tag through dockyard and compares the manifest, config and every
// layer byte for byte with src.
func (f *flaky) pull(t *testing.T, nameTag string, src v1.Image) error {
	t.Helper()
	img, err := remote.Image(ref(t, f.s.addr+"/"+nameTag), noRetries...)
	if err != nil {
		return err
	}
	got, _ := img.RawManifest()
	want, _ := src.RawManifest()
	if !bytes.Equal(got, want) {
		return fmt.Errorf("the manifest pulled differs from the one pushed")
	}
	got, err = img.RawConfigFile()
	if err != nil {
		return err
	}
	if want, _ = src.RawConfigFile(); !bytes.Equal(got, want) {
		return fmt.Errorf("the config pulled differs from the one pushed")
	}
	srcLayers, _ := src.Layers()
	pulled, err := img.Layers()
	if err != nil || len(pulled) != len(srcLayers) {
		return fmt.Errorf("layers pulled: %d, %v; want %d", len(pulled), err, len(srcLayers))
	}
	for i, l := range pulled { // read through dockyard
		d, _ := l.Digest()
		got, err := readLayer(l)
		if err != nil {
			return fmt.Errorf("layer %s: %w", d, err)
		}
		want, err := readLayer(srcLayers[i])
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			return fmt.Errorf("layer %s: %d bytes pulled differ from the %d pushed", d, len(got), len(want))
		}
	}
	return nil
}

func readLayer(l v1.Layer) ([]byte, error) {
	rc, err := l.Compressed()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

// checkCache re-hashes every stored blob, checks the index against the blobs and finds
// no download left behind.
func (f *flaky) checkCache(t *testing.T) {
	t.Helper()
	blobs := 0
	err := f.s.blobs.Walk(t.Context(), func(b blobstore.Blob) error {
		blobs++
		rc, _, err := f.s.blobs.Open(t.Context(), b.Digest)
		if err != nil {
			return err
		}
		defer rc.Close()
		h := b.Digest.Algorithm().New()
		if _, err := io.Copy(h, rc); err != nil {
			return err
		}
		if got := oci.FromHash(b.Digest.Algorithm(), h); got != b.Digest {
			t.Errorf("the cache holds %s with bytes hashing to %s", b.Digest, got)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := f.s.store.Check(t.Context(), cache.CheckOptions{VerifyDigests: true})
	if err != nil || len(rep.Problems) != 0 {
		t.Errorf("cache check: %v %v", err, rep.Problems)
	}
	if left := f.s.uploads(t); len(left) != 0 {
		t.Errorf("download data left behind: %v", left)
	}
}

// layer returns the digest of src's i-th layer and its size.
func layer(t *testing.T, src v1.Image, i int) (string, int64) {
	t.Helper()
	ls, err := src.Layers()
	if err != nil {
		t.Fatal(err)
	}
	size, _ := ls[i].Size()
	return digestOf(t, ls[i]), size
}

// blobRequests are the requests for blob d the faulty proxy saw.
func (f *flaky) blobRequests(d string) []faulty.Seen {
	var out []faulty.Seen
	for _, s := range f.faults.Log() {
		if s.Method == "GET" && strings.HasSuffix(s.Path, "/blobs/"+d) {
			out = append(out, s)
		}
	}
	return out
}

// A blob whose body is cut partway is resumed with a Range request from the byte
// reached, not downloaded again: the pull succeeds, byte for byte.
func TestACutBlobDownloadResumesWithARangeRequest(t *testing.T) {
	for _, cut := range []faulty.Cut{faulty.Reset, faulty.Close} {
		t.Run(string(cut), func(t *testing.T) {
			f := startFlaky(t, flakyOptions{})
			src := f.push(t, "flaky/app:1", 300<<10, 2)
			d, size := layer(t, src, 0)
			f.faults.Add(faulty.Rule{Method: "GET", Path: "/blobs/" + d, Times: 1, Fault: faulty.Fault{Cut: cut, CutAt: 100 << 10}})

			if err := f.pull(t, "flaky/app:1", src); err != nil {
				t.Fatalf("pull with the layer cut at 100 KiB: %v", err)
			}
			reqs := f.blobRequests(d)
			if len(reqs) != 2 || reqs[0].Range != "" || !strings.HasPrefix(reqs[0].Fault, string(cut)+"@") {
				t.Fatalf("requests for the layer: %+v; want the cut one, then one resume", reqs)
			}
			var from int64
			if n, err := fmt.Sscanf(reqs[1].Range, "bytes=%d-", &from); n != 1 || err != nil || from <= 0 || from > 100<<10 || reqs[1].Status != 206 {
				t.Errorf("the resume: Range %q answered %d; want bytes=N- with 0 < N <= %d, answered 206", reqs[1].Range, reqs[1].Status, 100<<10)
			}
			if reqs[1].Sent != size-from {
				t.Errorf("the resume sent %d bytes, want the %d from byte %d", reqs[1].Sent, size-from, from)
			}
			if n := f.proxy.Upstream().Stats().Resumes.Load(); n != 1 {
				t.Errorf("%d resumes counted, want 1", n)
			}
			f.checkCache(t)
			if _, ok, _ := f.s.store.HasBlob(oci.Digest(d)); !ok {
				t.Error("the resumed layer was not cached")
			}
		})
	}
}

// An upstream that answers a Range request with the whole blob (200) is read from the
// start again, skipping what was already received.
func TestAResumeAnsweredWithTheWholeBlobStartsOver(t *testing.T) {
	f := startFlaky(t, flakyOptions{})
	src := f.push(t, "flaky/app:1", 300<<10, 1)
	d, _ := layer(t, src, 0)
	f.faults.Add(faulty.Rule{Method: "GET", Path: "/blobs/" + d, Times: 1, Fault: faulty.Fault{Cut: faulty.Close, CutAt: 100 << 10}},
		faulty.Rule{Method: "GET", Path: "/blobs/" + d, Fault: faulty.Fault{IgnoreRange: true}})
	if err := f.pull(t, "flaky/app:1", src); err != nil {
		t.Fatalf("pull: %v", err)
	}
	reqs := f.blobRequests(d)
	if len(reqs) != 2 || reqs[1].Range == "" || reqs[1].Status != 200 || reqs[1].Fault != "ignore-range" {
		t.Fatalf("requests for the layer: %+v; want the cut one, then a Range request answered 200", reqs)
	}
	f.checkCache(t)
}

// A blob cut on every attempt fails after the retry budget, cleanly, and nothing of
// it is cached; once the upstream recovers it is pulled whole.
func TestABlobCutOnEveryAttemptFailsWithinTheBudget(t *testing.T) {
	f := startFlaky(t, flakyOptions{})
	src := f.push(t, "flaky/app:1", 400<<10, 1)
	d, size := layer(t, src, 0)
	f.faults.Add(faulty.Rule{Method: "GET", Path: "/blobs/" + d, Fault: faulty.Fault{Cut: faulty.Reset, CutAt: 50 << 10}})

	r := get("GET", "http://"+f.s.addr+"/v2/flaky/app/blobs/"+d)
	if r.err == nil && r.status == 200 && int64(len(r.body)) == size {
		t.Fatalf("a blob the upstream never sent whole was answered whole (%d)", r.status)
	}
	if n := len(f.blobRequests(d)); n != flakyAttempts {
		t.Errorf("%d requests for the blob, want the budget's %d", n, flakyAttempts)
	}
	waitFor(t, "the failed download to end", func() bool { return vhost.InFlight(f.proxy) == 0 })
	if _, ok, _ := f.s.store.HasBlob(oci.Digest(d)); ok {
		t.Fatal("a blob never received whole was cached")
	}
	f.faults.Clear()
	if err := f.pull(t, "flaky/app:1", src); err != nil {
		t.Fatalf("pull once the upstream recovered: %v", err)
	}
	f.checkCache(t)
}

// A flipped bit in a blob is never cached nor served as a complete body; the next
// pull gets the right bytes. A blob too large to cache is verified as it streams.
func TestAFlippedBitInABlobIsRefused(t *testing.T) {
	for _, c := range []struct {
		name    string
		maxSize int64
	}{{"cached", 0}, {"too large to cache", 64 << 10}} {
		t.Run(c.name, func(t *testing.T) {
			f := startFlaky(t, flakyOptions{maxSize: c.maxSize})
			src := f.push(t, "flaky/app:1", 200<<10, 1)
			d, size := layer(t, src, 0)
			f.faults.Add(faulty.Rule{Method: "GET", Path: "/blobs/" + d, Times: 1, Fault: faulty.Fault{Flip: true, FlipAt: 150 << 10}})

			r := get("GET", "http://"+f.s.addr+"/v2/flaky/app/blobs/"+d)
			if r.err == nil && r.status == 200 && int64(len(r.body)) == size {
				t.Fatalf("a complete 200 of a blob with a flipped bit (digest %s)", sha256Hex(r.body))
			}
			// Cut short, not left waiting: the client's own timeout is not an answer.
			var ne net.Error
			if errors.As(r.err, &ne) && ne.Timeout() {
				t.Fatalf("the response to a refused blob never ended: %v (after %d bytes)", r.err, len(r.body))
			}
			if reqs := f.blobRequests(d); len(reqs) != 1 || reqs[0].Fault != fmt.Sprintf("flip@%d", 150<<10) {
				t.Fatalf("requests for the layer: %+v", reqs)
			}
			waitFor(t, "the failed download to end", func() bool { return vhost.InFlight(f.proxy) == 0 })
			if _, ok, _ := f.s.store.HasBlob(oci.Digest(d)); ok {
				t.Fatal("a blob with a flipped bit was cached")
			}
			if err := f.pull(t, "flaky/app:1", src); err != nil {
				t.Fatalf("the next pull: %v", err)
			}
			f.checkCache(t)
		})
	}
}

func mustLayer(t *testing.T, src v1.Image) []byte {
	t.Helper()
	ls, _ := src.Layers()
	b, err := readLayer(ls[0])
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A manifest cut short, with a flipped bit, or whose connection was reset before the
// answer is downloaded again; one that never arrives intact is a clean 502 and is not
// cached.
func TestABrokenManifestIsFetchedAgain(t *testing.T) {
	for _, fault := range []faulty.Fault{
		{Flip: true, FlipAt: 20},
		{Cut: faulty.Close, CutAt: 20},
		{Cut: faulty.Reset, CutAt: 20},
		{Drop: true},
	} {
		name := string(fault.Cut)
		if fault.Flip {
			name = "flip"
		} else if fault.Drop {
			name = "drop"
		}
		t.Run(name, func(t *testing.T) {
			f := startFlaky(t, flakyOptions{})
			src := f.push(t, "flaky/app:1", 1024, 1)
			// Twice for a drop: Go's transport itself retries a request whose reused
			// connection was reset, once.
			times := 1
			if fault.Drop {
				times = 2
			}
			f.faults.Add(faulty.Rule{Method: "GET", Path: "/manifests/", Times: times, Fault: fault})
			if err := f.pull(t, "flaky/app:1", src); err != nil {
				t.Fatalf("pull: %v", err)
			}
			gets := f.faults.Count(func(s faulty.Seen) bool { return s.Method == "GET" && strings.Contains(s.Path, "/manifests/") })
			if gets != times+1 {
				t.Errorf("%d manifest GETs upstream, want %d (the broken ones, then a good one)", gets, times+1)
			}
			f.checkCache(t)

			// Always broken: a clean error, nothing cached.
			other := f.push(t, "flaky/other:1", 1024, 1)
			od := digestOf(t, other)
			f.faults.Add(faulty.Rule{Method: "GET", Path: "/manifests/", Fault: fault})
			r := get("GET", "http://"+f.s.addr+"/v2/flaky/other/manifests/"+od, "Accept", "*/*")
			if r.status != http.StatusBadGateway || !strings.Contains(string(r.body), `"code":"UNKNOWN"`) {
				t.Errorf("a manifest never received intact: %d %s", r.status, r.body)
			}
			if _, err := f.s.store.GetManifest(t.Context(), "up", "flaky/other", oci.Reference{Digest: oci.Digest(od)}); err == nil {
				t.Error("a manifest never received intact was cached")
			}
		})
	}
}

// A 429 storm is waited out, each wait the upstream's Retry-After; a storm longer than
// the budget, or a Retry-After beyond the bound, reaches the client as a 429 with the
// upstream's Retry-After.
func TestARateLimitStormIsWaitedOut(t *testing.T) {
	f := startFlaky(t, flakyOptions{})
	src := f.push(t, "flaky/app:1", 1024, 1)
	f.faults.Add(faulty.Rule{Path: "/manifests/", Times: 3, Fault: faulty.Fault{Status: 429, RetryAfter: "2"}})
	if err := f.pull(t, "flaky/app:1", src); err != nil {
		t.Fatalf("pull through three 429s: %v", err)
	}
	if n := f.waits.count(2 * time.Second); n != 3 {
		t.Errorf("%d waits of the 2 s the upstream asked for, want 3 (waits %v)", n, f.waits.d)
	}

	// 503 without Retry-After: backoff.
	f.push(t, "flaky/app:2", 1024, 1)
	before := f.waits.len()
	f.faults.Add(faulty.Rule{Path: "/manifests/", Times: 2, Fault: faulty.Fault{Status: 503}})
	if r := get("GET", "http://"+f.s.addr+"/v2/flaky/app/manifests/2", "Accept", "*/*"); r.status != 200 {
		t.Errorf("through two 503s: %d %s", r.status, r.body)
	}
	if n := f.waits.len() - before; n != 2 {
		t.Errorf("%d backoff waits for two 503s, want 2", n)
	}

	// Longer than the budget: the client hears the 429.
	f.push(t, "flaky/app:3", 1024, 1)
	f.faults.ResetLog()
	f.faults.Add(faulty.Rule{Path: "/manifests/", Fault: faulty.Fault{Status: 429, RetryAfter: "2"}})
	r := get("GET", "http://"+f.s.addr+"/v2/flaky/app/manifests/3", "Accept", "*/*")
	if r.status != 429 || r.header.Get("Retry-After") != "2" || !strings.Contains(string(r.body), "TOOMANYREQUESTS") {
		t.Errorf("an endless storm: %d Retry-After %q %s", r.status, r.header.Get("Retry-After"), r.body)
	}
	if n := f.faults.Count(func(faulty.Seen) bool { return true }); n != flakyAttempts {
		t.Errorf("%d upstream requests in an endless storm, want the budget's %d", n, flakyAttempts)
	}

	// A Retry-After beyond the bound is not waited for.
	f.faults.Clear()
	f.faults.ResetLog()
	before = f.waits.len()
	f.faults.Add(faulty.Rule{Path: "/manifests/", Fault: faulty.Fault{Status: 429, RetryAfter: "3600"}})
	r = get("GET", "http://"+f.s.addr+"/v2/flaky/app/manifests/3", "Accept", "*/*")
	if r.status != 429 || r.header.Get("Retry-After") != "3600" {
		t.Errorf("Retry-After: 3600: %d %q", r.status, r.header.Get("Retry-After"))
	}
	if n := f.faults.Count(func(faulty.Seen) bool { return true }); n != 1 || f.waits.len() != before {
		t.Errorf("Retry-After: 3600 asked %d times, waited %d times; want once, no wait", n, f.waits.len()-before)
	}
	f.checkCache(t)
}

// Latency under the timeout and a throttled body are served; the timeout bounds a
// pause, not a whole download. An answer later than the timeout is a clean 502, and
// not retried while the client waits.
func TestASlowUpstreamIsServed(t *testing.T) {
	f := startFlaky(t, flakyOptions{timeout: time.Second})
	src := f.push(t, "flaky/app:1", 300<<10, 1)
	d, _ := layer(t, src, 0)
	f.faults.Add(faulty.Rule{Path: "/blobs/" + d, Fault: faulty.Fault{BytesPerSecond: 200 << 10}},
		faulty.Rule{Fault: faulty.Fault{Latency: 200 * time.Millisecond}})
	if err := f.pull(t, "flaky/app:1", src); err != nil {
		t.Fatalf("pull from a slow upstream: %v", err)
	}
	if st := f.proxy.Upstream().Stats(); st.Resumes.Load() != 0 || st.Retries.Load() != 0 {
		t.Errorf("%d resumes and %d retries for a slow upstream; want none", st.Resumes.Load(), st.Retries.Load())
	}
	f.checkCache(t)

	f.faults.Clear()
	f.push(t, "flaky/app:2", 1024, 1)
	f.faults.Add(faulty.Rule{Path: "/manifests/", Times: 1, Fault: faulty.Fault{Latency: 3 * time.Second}})
	r := get("GET", "http://"+f.s.addr+"/v2/flaky/app/manifests/2", "Accept", "*/*")
	if r.status != http.StatusBadGateway {
		t.Errorf("an answer later than the timeout: %d %s", r.status, r.body)
	}
	if r := get("GET", "http://"+f.s.addr+"/v2/flaky/app/manifests/2", "Accept", "*/*"); r.status != 200 {
		t.Errorf("once the upstream answers in time: %d %s", r.status, r.body)
	}
}

// Many clients share one download and the upstream dies partway. Clients already
// streaming have their responses cut short (never a complete 200), clients waiting for
// the first byte get a 502, none hangs, nothing is cached, and once the upstream is
// back the blob is pulled whole.
func TestADyingUpstreamFailsEveryWaiterCleanly(t *testing.T) {
	t.Run("while streaming", func(t *testing.T) { dyingUpstream(t, 64<<10) })
	t.Run("before the first byte", func(t *testing.T) { dyingUpstream(t, 0) })
}

// dyingUpstream holds the blob's download after heldAt bytes until every client has
// joined it (and, past 0 bytes, received its first byte), then takes the upstream down.
func dyingUpstream(t *testing.T, heldAt int64) {
	f := startFlaky(t, flakyOptions{})
	src := f.push(t, "flaky/app:1", 512<<10, 1)
	d, size := layer(t, src, 0)
	whole := mustLayer(t, src)
	hold := make(chan struct{})
	defer close(hold)
	f.faults.Add(faulty.Rule{Method: "GET", Path: "/blobs/" + d, Times: 1, Fault: faulty.Fault{Hold: hold, HoldAt: heldAt}})

	const clients = 16
	type outcome struct {
		status int
		body   []byte
		err    error // reading the body
	}
	results := make(chan outcome, clients)
	var streaming sync.WaitGroup
	streaming.Add(clients)
	for range clients {
		go func() {
			resp, err := http.Get("http://" + f.s.addr + "/v2/flaky/app/blobs/" + d)
			if err != nil {
				streaming.Done()
				results <- outcome{err: err}
				return
			}
			defer resp.Body.Close()
			first := make([]byte, 1)
			n, err := io.ReadFull(resp.Body, first)
			streaming.Done()
			if err != nil {
				results <- outcome{status: resp.StatusCode, body: first[:n], err: err}
				return
			}
			rest, err := io.ReadAll(resp.Body)
			results <- outcome{status: resp.StatusCode, body: append(first, rest...), err: err}
		}()
	}
	waitFor(t, "every client to join the download", func() bool {
		return f.proxy.Stats().FlightJoins.Load() == clients-1
	})
	if heldAt > 0 {
		allStreaming := make(chan struct{})
		go func() { streaming.Wait(); close(allStreaming) }()
		select {
		case <-allStreaming:
		case <-time.After(30 * time.Second):
			t.Fatal("the clients did not receive the bytes sent before the hold")
		}
	}
	f.faults.SetDown(true)
	for i := range clients {
		select {
		case r := <-results:
			switch {
			case heldAt > 0 && (r.status != 200 || r.err == nil || !bytes.HasPrefix(whole, r.body)):
				t.Errorf("client %d, streaming: %d, %d bytes, %v; want a 200 cut short, the bytes right", i, r.status, len(r.body), r.err)
			case heldAt == 0 && (r.status != http.StatusBadGateway || !strings.Contains(string(r.body), "unavailable")):
				t.Errorf("client %d, waiting: %d %v %q; want a 502 saying the upstream is unavailable", i, r.status, r.err, r.body)
			}
		case <-time.After(60 * time.Second):
			t.Fatalf("%d clients still waiting after the upstream died", clients-i)
		}
	}
	// Go's transport itself sends a request again, once, when a reused connection is
	// reset before any answer (what a dying upstream does): the proxy may see each
	// attempt of the budget twice, but no more.
	if n := len(f.blobRequests(d)); n > 2*flakyAttempts {
		t.Errorf("%d requests for the blob, more than twice the budget's %d", n, flakyAttempts)
	}
	waitFor(t, "the failed download to end", func() bool { return vhost.InFlight(f.proxy) == 0 })
	if _, ok, _ := f.s.store.HasBlob(oci.Digest(d)); ok {
		t.Fatal("a blob from an upstream that died was cached")
	}

	f.faults.SetDown(false)
	if r := get("GET", "http://"+f.s.addr+"/v2/flaky/app/blobs/"+d); r.status != 200 || int64(len(r.body)) != size || !bytes.Equal(r.body, whole) {
		t.Fatalf("once the upstream is back: %d, %d bytes, %v", r.status, len(r.body), r.err)
	}
	f.checkCache(t)
}

// A request that comes once a download has failed starts a download of its own: it
// does not join the failed one and inherit its error. The request is made from the
// log record of the failure, the moment the failed download reports it.
func TestARequestAfterAFailedDownloadStartsAnother(t *testing.T) {
	var f *flaky
	var d string
	after := make(chan httpResult, 1)
	logged := &hookHandler{msg: "upstream blob not cached", hook: func() {
		f.faults.Clear()
		after <- get("GET", "http://"+f.s.addr+"/v2/flaky/app/blobs/"+d)
	}}
	f = startFlaky(t, flakyOptions{logger: slog.New(logged)})
	src := f.push(t, "flaky/app:1", 64<<10, 1)
	d, _ = layer(t, src, 0)
	f.faults.Add(faulty.Rule{Method: "GET", Path: "/blobs/" + d, Fault: faulty.Fault{Flip: true, FlipAt: 10}})
	if r := get("GET", "http://"+f.s.addr+"/v2/flaky/app/blobs/"+d); r.err == nil && r.status == 200 {
		t.Fatalf("a blob with a flipped bit was answered whole")
	}
	select {
	case r := <-after:
		if r.status != 200 || !bytes.Equal(r.body, mustLayer(t, src)) {
			t.Errorf("the request made once the download failed: %d %v %s; want the blob", r.status, r.err, r.body)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the failed download was not logged")
	}
	waitFor(t, "the downloads to end", func() bool { return vhost.InFlight(f.proxy) == 0 })
	f.checkCache(t)
}

// hookHandler is a logger that calls hook (once) when a record with msg is logged.
type hookHandler struct {
	msg  string
	hook func()
	once sync.Once
}

func (h *hookHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *hookHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Message == h.msg {
		h.once.Do(h.hook)
	}
	return nil
}
func (h *hookHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *hookHandler) WithGroup(string) slog.Handler      { return h }

// waitFor polls cond until it holds; it fails the test if it never does (a hang
// guard, not a timing).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("waited 30 s for %s", what)
		}
	}
}
