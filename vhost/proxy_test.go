package vhost_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"github.com/dockyard/dockyard/blobstore"
	"github.com/dockyard/dockyard/blobstore/s3test"
	"github.com/dockyard/dockyard/cache"
	"github.com/dockyard/dockyard/oci"
	"github.com/dockyard/dockyard/upstream"
	"github.com/dockyard/dockyard/vhost"
)

func ref(t *testing.T, s string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(s, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func randomImage(t *testing.T, layerSize int64, layers int) v1.Image {
	t.Helper()
	img, err := random.Image(layerSize, int64(layers))
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func digestOf(t *testing.T, x interface{ Digest() (v1.Hash, error) }) string {
	t.Helper()
	h, err := x.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return h.String()
}

type proxyConfig struct {
	ttl     time.Duration
	timeout time.Duration
	clock   *fakeClock
	maxSize int64
	caFile  string
	// blobs is the store's blob store (nil: the filesystem).
	blobs blobstore.Store
}

// startProxy serves a proxy of u as the only registry.
func startProxy(t *testing.T, u *testUpstream, pc proxyConfig) *server {
	t.Helper()
	if pc.ttl == 0 {
		pc.ttl = time.Hour
	}
	if pc.timeout == 0 {
		pc.timeout = 5 * time.Second
	}
	var now func() time.Time
	if pc.clock != nil {
		now = pc.clock.Now
	}
	return startServerAt(t, now, pc.blobs, func(store *cache.Store) ([]vhost.Registry, []vhost.Route) {
		client, err := upstream.New(upstream.Config{URL: u.URL, Timeout: pc.timeout, CAFile: pc.caFile})
		if err != nil {
			t.Fatal(err)
		}
		opts := vhost.ProxyOptions{TagTTL: pc.ttl, NegativeTTL: time.Second, MaxSize: pc.maxSize, Logger: testLogger()}
		if pc.clock != nil {
			opts.Now = pc.clock.Now
		}
		p := vhost.NewProxy("up", store, client, opts)
		return []vhost.Registry{p}, []vhost.Route{{Host: "*", Registry: "up"}}
	})
}

type httpResult struct {
	status int
	header http.Header
	body   []byte
	err    error
}

func get(method, url string, headers ...string) httpResult {
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		return httpResult{err: err}
	}
	for i := 0; i+1 < len(headers); i += 2 {
		if headers[i] == "Host" {
			req.Host = headers[i+1]
		} else {
			req.Header.Set(headers[i], headers[i+1])
		}
	}
	resp, err := (&http.Client{Timeout: 60 * time.Second}).Do(req)
	if err != nil {
		return httpResult{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return httpResult{status: resp.StatusCode, header: resp.Header, body: b, err: err}
}

func TestProxyPullsThroughAndServesFromCacheWhenUpstreamFails(t *testing.T) {
	u := newTestUpstream(t)
	img := randomImage(t, 64<<10, 2)
	if err := remote.Write(ref(t, u.host()+"/org/app:1.0"), img); err != nil {
		t.Fatal(err)
	}
	clock := &fakeClock{now: time.Unix(1e9, 0)}
	s := startProxy(t, u, proxyConfig{ttl: time.Minute, clock: clock})

	got, err := remote.Image(ref(t, s.addr+"/org/app:1.0"))
	if err != nil {
		t.Fatalf("pull through: %v", err)
	}
	if digestOf(t, got) != digestOf(t, img) {
		t.Fatal("pulled a different image")
	}
	if err := validate.Image(got); err != nil {
		t.Fatalf("pulled image: %v", err)
	}

	u.set(func(u *testUpstream) { u.failing = true })
	clock.Advance(2 * time.Minute) // the tag is stale: revalidation fails, the cache answers
	r := get("GET", "http://"+s.addr+"/v2/org/app/manifests/1.0", "Accept", "*/*")
	if r.status != 200 || !strings.Contains(r.header.Get("Warning"), "unavailable") {
		t.Errorf("stale tag with upstream down: %d, Warning %q", r.status, r.header.Get("Warning"))
	}
	got, err = remote.Image(ref(t, s.addr+"/org/app:1.0"))
	if err != nil {
		t.Fatalf("pull from cache with upstream down: %v", err)
	}
	if err := validate.Image(got); err != nil {
		t.Fatalf("cached image: %v", err)
	}
	// Nothing cached and the upstream down: a clear error, not a hang.
	r = get("GET", "http://"+s.addr+"/v2/org/app/manifests/2.0")
	if r.status != http.StatusBadGateway || !strings.Contains(string(r.body), "unavailable") {
		t.Errorf("uncached tag with upstream down: %d %s", r.status, r.body)
	}
}

// A stale tag whose revalidation gets through the HEAD (answered without
// Docker-Content-Digest, as some registries do) but whose manifest GET fails is served
// from cache with a warning, as when the HEAD fails.
func TestAStaleTagIsServedFromCacheWhenOnlyTheManifestGetFails(t *testing.T) {
	u := newTestUpstream(t)
	img := randomImage(t, 1024, 1)
	if err := remote.Write(ref(t, u.host()+"/org/app:1.0"), img); err != nil {
		t.Fatal(err)
	}
	raw, _ := img.RawManifest()
	clock := &fakeClock{now: time.Unix(1e9, 0)}
	s := startProxy(t, u, proxyConfig{ttl: time.Minute, clock: clock})
	if r := get("GET", "http://"+s.addr+"/v2/org/app/manifests/1.0", "Accept", "*/*"); r.status != 200 {
		t.Fatalf("first pull: %d %s", r.status, r.body)
	}
	u.set(func(u *testUpstream) { u.undigested, u.manifestGetStatus = true, http.StatusServiceUnavailable })
	clock.Advance(2 * time.Minute)
	r := get("GET", "http://"+s.addr+"/v2/org/app/manifests/1.0", "Accept", "*/*")
	if r.status != 200 || !bytes.Equal(r.body, raw) || !strings.Contains(r.header.Get("Warning"), "unavailable") {
		t.Errorf("stale tag, upstream HEAD answering and GET failing: %d, Warning %q, %s", r.status, r.header.Get("Warning"), r.body)
	}
}

// On the filesystem readers follow the fetch's own upload file; on S3 a spool file
// beside the index, while the bytes go to the bucket.
func TestConcurrentColdPullsShareOneUpstreamFetch(t *testing.T) {
	t.Run("filesystem", func(t *testing.T) { coldPulls(t, 256<<20, nil) })
	t.Run("s3", func(t *testing.T) {
		_, blobs := newS3(t)
		coldPulls(t, 128<<20, blobs)
	})
}

func coldPulls(t *testing.T, size int64, blobs blobstore.Store) {
	u := newTestUpstream(t)
	if raceEnabled || testing.Short() {
		size = 16 << 20
	}
	layer, err := random.Layer(size, "application/octet-stream")
	if err != nil {
		t.Fatal(err)
	}
	// Push the big layer as a blob of the upstream repository.
	if err := remote.WriteLayer(ref(t, u.host()+"/big/blob:x").Context(), layer); err != nil {
		t.Fatal(err)
	}
	d := digestOf(t, layer)
	if size, err = layer.Size(); err != nil {
		t.Fatal(err)
	}
	// The upstream sends half the blob, then waits: every client must have received
	// bytes before the download can finish, so the clients overlap and are served from
	// the download as it arrives (a lock that made them wait for the whole blob would
	// never see the gate open).
	gate := make(chan struct{})
	u.set(func(u *testUpstream) { u.gate = gate })
	s := startProxy(t, u, proxyConfig{blobs: blobs})

	const clients = 32
	var wg, started sync.WaitGroup
	sums := make([]string, clients)
	errs := make([]error, clients)
	for i := range clients {
		wg.Add(1)
		started.Add(1)
		go func() {
			defer wg.Done()
			first := false
			defer func() {
				if !first {
					started.Done()
				}
			}()
			resp, err := http.Get("http://" + s.addr + "/v2/big/blob/blobs/" + d)
			if err != nil {
				errs[i] = err
				return
			}
			defer resp.Body.Close()
			h := sha256.New()
			n, err := io.CopyN(h, resp.Body, 1)
			if err != nil {
				errs[i] = fmt.Errorf("status %d, first byte: %v", resp.StatusCode, err)
				return
			}
			first = true
			started.Done()
			m, err := io.Copy(h, resp.Body)
			if n += m; err != nil || resp.StatusCode != 200 || n != size {
				errs[i] = fmt.Errorf("status %d, %d bytes, %v", resp.StatusCode, n, err)
				return
			}
			sums[i] = "sha256:" + hex.EncodeToString(h.Sum(nil))
		}()
	}
	allStarted := make(chan struct{})
	go func() { started.Wait(); close(allStarted) }()
	select {
	case <-allStarted:
	case <-time.After(60 * time.Second):
		close(gate)
		wg.Wait()
		t.Fatal("not every client received its first bytes while the upstream download was held halfway")
	}
	close(gate)
	wg.Wait()
	for i := range clients {
		if errs[i] != nil {
			t.Errorf("client %d: %v", i, errs[i])
		} else if sums[i] != d {
			t.Errorf("client %d received bytes hashing to %s, want %s", i, sums[i], d)
		}
	}
	if n := u.blobGets.Load(); n != 1 {
		t.Errorf("%d upstream blob GETs for %d concurrent cold pulls, want 1", n, clients)
	}
	// Later pulls come from the cache.
	if r := get("GET", "http://"+s.addr+"/v2/big/blob/blobs/"+d); r.status != 200 || int64(len(r.body)) != size {
		t.Errorf("cached pull: %d, %d bytes", r.status, len(r.body))
	}
	if n := u.blobGets.Load(); n != 1 {
		t.Errorf("%d upstream blob GETs after a cached pull, want 1", n)
	}
}

func TestCorruptUpstreamBytesAreNeverCached(t *testing.T) {
	t.Run("filesystem", func(t *testing.T) {
		s := corruptUpstream(t, nil)
		if left, _ := os.ReadDir(filepath.Join(s.dir, "uploads")); len(left) != 0 {
			t.Errorf("%d partial files left behind", len(left))
		}
	})
	t.Run("s3", func(t *testing.T) {
		bucket, blobs := newS3(t)
		corruptUpstream(t, blobs)
		// Only the verified copy reached the bucket: no staging object, no multipart.
		objects, multipart, err := s3server.Keys(t.Context(), bucket, "")
		if err != nil {
			t.Fatal(err)
		}
		objects = slices.DeleteFunc(objects, func(k string) bool { return k == "dockyard-index" })
		if len(objects) != 1 || !strings.HasPrefix(objects[0], "blobs/") || len(multipart) != 0 {
			t.Errorf("the bucket holds %v and multipart uploads %v, want the one verified blob", objects, multipart)
		}
	})
}

// corruptUpstream pulls a blob the upstream corrupts, then once it no longer does; it
// returns the proxy.
func corruptUpstream(t *testing.T, blobs blobstore.Store) *server {
	u := newTestUpstream(t)
	layer, err := random.Layer(1<<20, "application/octet-stream")
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteLayer(ref(t, u.host()+"/bad/blob:x").Context(), layer); err != nil {
		t.Fatal(err)
	}
	d := digestOf(t, layer)
	s := startProxy(t, u, proxyConfig{blobs: blobs})
	u.set(func(u *testUpstream) { u.corrupt = true })

	r := get("GET", "http://"+s.addr+"/v2/bad/blob/blobs/"+d)
	if r.err == nil && r.status == 200 && sha256Hex(r.body) == d {
		t.Fatal("corrupt upstream content was served as the blob")
	}
	if size, _ := layer.Size(); r.err == nil && r.status == 200 && int64(len(r.body)) == size {
		t.Fatalf("a client received a complete body of corrupt content (status %d)", r.status)
	}
	if _, ok, _ := s.store.HasBlob(oci.Digest(d)); ok {
		t.Fatal("corrupt content was cached")
	}
	// The client learns of the failure first; the download's data goes right after.
	left := s.uploads(t)
	for deadline := time.Now().Add(10 * time.Second); len(left) != 0 && time.Now().Before(deadline); left = s.uploads(t) {
		time.Sleep(10 * time.Millisecond)
	}
	if len(left) != 0 {
		t.Errorf("upload data left behind after a corrupt fetch: %v", left)
	}

	u.set(func(u *testUpstream) { u.corrupt = false })
	r = get("GET", "http://"+s.addr+"/v2/bad/blob/blobs/"+d)
	if r.err != nil || r.status != 200 || sha256Hex(r.body) != d {
		t.Fatalf("after the upstream is fixed: %d %v", r.status, r.err)
	}
	if _, ok, _ := s.store.HasBlob(oci.Digest(d)); !ok {
		t.Fatal("verified content was not cached")
	}
	return s
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

func TestTagMovedUpstreamIsSeenAfterTheTTLAndNotBefore(t *testing.T) {
	u := newTestUpstream(t)
	first, second := randomImage(t, 1024, 1), randomImage(t, 1024, 1)
	tag := u.host() + "/moving/app:latest"
	if err := remote.Write(ref(t, tag), first); err != nil {
		t.Fatal(err)
	}
	clock := &fakeClock{now: time.Unix(1e9, 0)}
	s := startProxy(t, u, proxyConfig{ttl: 10 * time.Minute, clock: clock})
	resolve := func() string {
		r := get("HEAD", "http://"+s.addr+"/v2/moving/app/manifests/latest", "Accept", "*/*")
		return r.header.Get("Docker-Content-Digest")
	}
	if got := resolve(); got != digestOf(t, first) {
		t.Fatalf("first resolution: %s", got)
	}
	if err := remote.Write(ref(t, tag), second); err != nil {
		t.Fatal(err)
	}
	clock.Advance(9 * time.Minute)
	if got := resolve(); got != digestOf(t, first) {
		t.Errorf("within the TTL the cached tag must be served: got %s", got)
	}
	clock.Advance(2 * time.Minute)
	if got := resolve(); got != digestOf(t, second) {
		t.Errorf("after the TTL the moved tag must be seen: got %s, want %s", got, digestOf(t, second))
	}
}

func TestUpstreamErrorsMapToOCIErrors(t *testing.T) {
	u := newTestUpstream(t)
	s := startProxy(t, u, proxyConfig{})
	for _, c := range []struct {
		upstream   int
		retryAfter string
		status     int
		code       string
	}{
		{401, "", 401, "UNAUTHORIZED"},
		{403, "", 403, "DENIED"},
		{404, "", 404, "MANIFEST_UNKNOWN"},
		{429, "7", 429, "TOOMANYREQUESTS"},
		{429, "2000000", 429, "TOOMANYREQUESTS"},
		{503, "60", 503, "UNKNOWN"},
	} {
		u.set(func(u *testUpstream) { u.status, u.retryAfter = c.upstream, c.retryAfter })
		r := get("GET", fmt.Sprintf("http://%s/v2/err/app%d/manifests/v1", s.addr, c.upstream))
		if r.status != c.status || !strings.Contains(string(r.body), `"code":"`+c.code+`"`) {
			t.Errorf("upstream %d: got %d %s, want %d %s", c.upstream, r.status, r.body, c.status, c.code)
		}
		if r.header.Get("Retry-After") != c.retryAfter {
			t.Errorf("upstream %d: Retry-After %q, want %q", c.upstream, r.header.Get("Retry-After"), c.retryAfter)
		}
	}
}

func TestStalledUpstreamGivesAnErrorNotAHang(t *testing.T) {
	u := newTestUpstream(t)
	s := startProxy(t, u, proxyConfig{timeout: 300 * time.Millisecond})
	u.set(func(u *testUpstream) { u.stall = time.Minute })
	start := time.Now()
	r := get("GET", "http://"+s.addr+"/v2/slow/app/manifests/v1")
	took := time.Since(start)
	if r.err != nil || r.status != http.StatusBadGateway {
		t.Fatalf("stalled upstream: %d %v %s", r.status, r.err, r.body)
	}
	// The answer comes within the upstream timeout (and the token round trip before
	// the request, each bounded by it), not when the upstream gives up a minute later.
	if bound := 10 * 300 * time.Millisecond; took > bound {
		t.Errorf("the 502 came after %s; the upstream timeout is 300ms, the bound %s", took, bound)
	}
}

func TestHeadOfAnUncachedBlobDoesNotDownloadIt(t *testing.T) {
	u := newTestUpstream(t)
	layer, err := random.Layer(2<<20, "application/octet-stream")
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteLayer(ref(t, u.host()+"/head/blob:x").Context(), layer); err != nil {
		t.Fatal(err)
	}
	s := startProxy(t, u, proxyConfig{})
	size, _ := layer.Size()
	r := get("HEAD", "http://"+s.addr+"/v2/head/blob/blobs/"+digestOf(t, layer))
	if r.status != 200 || r.header.Get("Content-Length") != fmt.Sprint(size) {
		t.Fatalf("HEAD: %d length %q", r.status, r.header.Get("Content-Length"))
	}
	if n := u.blobGets.Load(); n != 0 {
		t.Errorf("HEAD caused %d upstream blob downloads", n)
	}
}

func TestMultiPlatformIndexChildrenAreFetchedWhenAskedFor(t *testing.T) {
	u := newTestUpstream(t)
	idx, err := random.Index(1024, 1, 3)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(ref(t, u.host()+"/multi/app:v1"), idx); err != nil {
		t.Fatal(err)
	}
	s := startProxy(t, u, proxyConfig{})
	got, err := remote.Index(ref(t, s.addr+"/multi/app:v1"))
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Index(got); err != nil { // fetches every child and layer through the proxy
		t.Fatalf("index through the proxy: %v", err)
	}
	if digestOf(t, got) != digestOf(t, idx) {
		t.Fatal("index digest differs")
	}
	// Children are now cached: served with the upstream failing.
	u.set(func(u *testUpstream) { u.failing = true })
	m, _ := idx.IndexManifest()
	for _, child := range m.Manifests {
		r := get("GET", "http://"+s.addr+"/v2/multi/app/manifests/"+child.Digest.String(), "Accept", "*/*")
		if r.status != 200 {
			t.Errorf("cached child %s: %d", child.Digest, r.status)
		}
	}
}

func TestProxyOfATLSUpstreamTrustsItsConfiguredCA(t *testing.T) {
	u := newUpstream(t, true)
	img := randomImage(t, 1024, 1)
	if err := remote.Write(ref(t, u.host()+"/tls/app:v1"), img, remote.WithTransport(u.Client().Transport)); err != nil {
		t.Fatal(err)
	}
	// Without the CA the upstream's certificate is refused.
	s := startProxy(t, u, proxyConfig{})
	if r := get("GET", "http://"+s.addr+"/v2/tls/app/manifests/v1"); r.status != http.StatusBadGateway {
		t.Errorf("untrusted certificate: %d %s", r.status, r.body)
	}
	ca := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: u.Certificate().Raw}), 0o644)
	s = startProxy(t, u, proxyConfig{caFile: ca})
	got, err := remote.Image(ref(t, s.addr+"/tls/app:v1"))
	if err != nil {
		t.Fatalf("pull through a proxy trusting the CA: %v", err)
	}
	if err := validate.Image(got); err != nil {
		t.Fatal(err)
	}
}

func TestBlobsOverMaxSizeAreStreamedButNotCached(t *testing.T) {
	u := newTestUpstream(t)
	layer, err := random.Layer(256<<10, "application/octet-stream")
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteLayer(ref(t, u.host()+"/huge/blob:x").Context(), layer); err != nil {
		t.Fatal(err)
	}
	d := digestOf(t, layer)
	s := startProxy(t, u, proxyConfig{maxSize: 64 << 10})
	for i := range 2 {
		r := get("GET", "http://"+s.addr+"/v2/huge/blob/blobs/"+d)
		if r.status != 200 || sha256Hex(r.body) != d {
			t.Fatalf("pull %d: %d", i, r.status)
		}
	}
	if _, ok, _ := s.store.HasBlob(oci.Digest(d)); ok {
		t.Error("a blob over max_size was cached")
	}
	if n := u.blobGets.Load(); n != 2 {
		t.Errorf("%d upstream GETs for two pulls of an uncacheable blob, want 2", n)
	}
}

func TestConcurrentRequestsForAnUncachedManifestShareOneFetch(t *testing.T) {
	u := newTestUpstream(t)
	img := randomImage(t, 1024, 1)
	if err := remote.Write(ref(t, u.host()+"/sf/app:v1"), img); err != nil {
		t.Fatal(err)
	}
	u.manifestGets.Store(0)
	u.set(func(u *testUpstream) { u.stall = 200 * time.Millisecond }) // let the requests overlap
	s := startProxy(t, u, proxyConfig{})
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if r := get("GET", "http://"+s.addr+"/v2/sf/app/manifests/v1", "Accept", "*/*"); r.status != 200 {
				t.Errorf("GET: %d", r.status)
			}
		}()
	}
	wg.Wait()
	if n := u.manifestGets.Load(); n != 1 {
		t.Errorf("%d upstream manifest GETs for 16 concurrent requests, want 1", n)
	}
}

// A download that fails between a request finding it and reading it is an upstream
// failure (502), not a blob the registry does not know (404).
func TestAFailedDownloadIsABadGatewayForEveryoneWaitingOnIt(t *testing.T) {
	u, layer := upstreamLayer(t, "org/app", 64<<10)
	u.set(func(u *testUpstream) { u.corrupt = true })
	s := startProxy(t, u, proxyConfig{})
	defer vhost.SetHookBeforeReader(func(filled <-chan struct{}) { <-filled })()
	r := get("GET", "http://"+s.addr+"/v2/org/app/blobs/"+layer)
	if r.status != http.StatusBadGateway {
		t.Errorf("a blob whose download failed before it was read: %d %s, want 502", r.status, r.body)
	}
}

// A HEAD of a blob another repository is downloading is answered only once the
// upstream says this repository has it.
func TestStatOfABlobDownloadingForAnotherRepositoryAsksTheUpstream(t *testing.T) {
	u, layer := upstreamLayer(t, "org/a", 256<<10)
	gate := make(chan struct{})
	u.set(func(u *testUpstream) { u.gate, u.unknownRepo = gate, http.StatusNotFound })
	s := startProxy(t, u, proxyConfig{})
	started := make(chan struct{})
	done := make(chan httpResult)
	go func() {
		req, _ := http.NewRequest("GET", "http://"+s.addr+"/v2/org/a/blobs/"+layer, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			done <- httpResult{err: err}
			return
		}
		close(started) // headers arrived: the download is in flight and held at the gate
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- httpResult{status: resp.StatusCode, body: b, err: err}
	}()
	select {
	case <-started:
	case r := <-done:
		t.Fatalf("download for org/a: %+v", r)
	}
	r := get("HEAD", "http://"+s.addr+"/v2/org/b/blobs/"+layer)
	close(gate)
	if r.status != 404 {
		t.Errorf("HEAD through org/b while org/a downloads the blob: %d, want 404", r.status)
	}
	if r := <-done; r.err != nil || r.status != 200 || oci.FromBytes(oci.SHA256, r.body) != oci.Digest(layer) {
		t.Errorf("the download for org/a: %d %v", r.status, r.err)
	}
}

// A pull of a blob that joined another repository's download of it, which the upstream
// refuses (the repository is missing, private or rate limited), downloads the blob for
// its own repository instead of failing with the other's answer: nobody denies a blob
// to everyone by asking for it through a repository that fails. The pulls that joined
// share that one download.
func TestAPullJoiningAnotherRepositorysRefusedDownloadStartsItsOwn(t *testing.T) {
	blob := []byte(strings.Repeat("layer bytes ", 8000))
	d := oci.FromBytes(oci.SHA256, blob)
	for _, refusal := range []int{http.StatusNotFound, http.StatusUnauthorized, http.StatusForbidden, http.StatusTooManyRequests} {
		t.Run(http.StatusText(refusal), func(t *testing.T) {
			release := make(chan struct{}) // holds the refusal until the pulls have joined
			var heads, gets atomic.Int64   // of the blob through org/app
			up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				switch {
				case r.URL.Path == "/v2/":
				case strings.HasPrefix(r.URL.Path, "/v2/private/app/"):
					<-release
					w.Header().Set("Retry-After", "3600")
					w.WriteHeader(refusal)
				case r.URL.Path == "/v2/org/app/blobs/"+string(d):
					w.Header().Set("Content-Length", strconv.Itoa(len(blob)))
					if r.Method == "HEAD" {
						heads.Add(1)
						return
					}
					gets.Add(1)
					w.Write(blob)
				default:
					w.WriteHeader(http.StatusNotFound)
				}
			}))
			t.Cleanup(up.Close)
			unblock := sync.OnceFunc(func() { close(release) })
			t.Cleanup(unblock) // before up.Close, which waits for the handler
			store, err := cache.Open(cache.Options{Dir: t.TempDir(), Logger: testLogger()})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { store.Close() })
			client, _ := upstream.New(upstream.Config{URL: up.URL, Timeout: 5 * time.Second})
			p := vhost.NewProxy("up", store, client, vhost.ProxyOptions{TagTTL: time.Hour, Logger: testLogger()})
			t.Cleanup(p.Close)

			refused := make(chan error, 1)
			go func() {
				rc, _, err := p.OpenBlob(context.Background(), "private/app", d)
				if err == nil {
					rc.Close()
				}
				refused <- err
			}()
			waitFor(t, "the download for private/app to start", func() bool { return vhost.InFlight(p) == 1 })
			const pulls = 3
			pulled := make(chan httpResult, pulls)
			for range pulls {
				go func() {
					rc, _, err := p.OpenBlob(context.Background(), "org/app", d)
					if err != nil {
						pulled <- httpResult{err: err}
						return
					}
					b, err := io.ReadAll(rc)
					rc.Close()
					pulled <- httpResult{body: b, err: err}
				}()
			}
			waitFor(t, "the pulls to join it", func() bool {
				return p.Stats().FlightJoins.Load() == pulls && heads.Load() == pulls
			})
			unblock()
			if err := <-refused; err == nil {
				t.Error("the pull through private/app got the blob")
			}
			for range pulls {
				if r := <-pulled; r.err != nil || !bytes.Equal(r.body, blob) {
					t.Errorf("a pull through org/app that joined private/app's download: %d bytes, %v", len(r.body), r.err)
				}
			}
			if n := gets.Load(); n != 1 {
				t.Errorf("%d downloads of the blob through org/app for %d pulls, want 1", n, pulls)
			}
		})
	}
}

// An upstream "not found" is remembered for the negative TTL even when a stale copy is
// cached: the tag is gone upstream, and asking again on every request helps nobody.
func TestNegativeCacheHoldsWhenAStaleCopyIsCached(t *testing.T) {
	u := newTestUpstream(t)
	clock := &fakeClock{now: time.Now()}
	img := randomImage(t, 512, 1)
	if err := remote.Write(ref(t, u.host()+"/org/app:1.0"), img); err != nil {
		t.Fatal(err)
	}
	s := startProxy(t, u, proxyConfig{ttl: time.Minute, clock: clock})
	if r := get("GET", "http://"+s.addr+"/v2/org/app/manifests/1.0", "Accept", "*/*"); r.status != 200 {
		t.Fatalf("first pull: %d", r.status)
	}
	u.set(func(u *testUpstream) { u.status = http.StatusNotFound }) // the tag is gone upstream
	clock.Advance(2 * time.Minute)                                  // and the cached one is stale
	heads := u.manifestHeads.Load()
	for i := range 3 {
		r := get("GET", "http://"+s.addr+"/v2/org/app/manifests/1.0", "Accept", "*/*")
		if r.status != 404 {
			t.Errorf("pull %d of a tag deleted upstream: %d", i, r.status)
		}
	}
	if n := u.manifestHeads.Load() - heads; n != 1 {
		t.Errorf("upstream asked %d times within the negative TTL, want 1", n)
	}
}

// Closing a proxy cancels its background downloads and waits for them: the store is
// closed after the proxies and must never be closed under a fill.
func TestCloseCancelsAndWaitsForDownloads(t *testing.T) {
	u, layer := upstreamLayer(t, "org/app", 256<<10)
	gate := make(chan struct{}) // never opened: the upstream stalls mid-blob
	defer close(gate)
	u.set(func(u *testUpstream) { u.gate = gate })
	dir := t.TempDir()
	store, err := cache.Open(cache.Options{Dir: dir, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	client, err := upstream.New(upstream.Config{URL: u.URL, Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	p := vhost.NewProxy("up", store, client, vhost.ProxyOptions{TagTTL: time.Hour, Logger: testLogger()})
	rc, _, err := p.OpenBlob(t.Context(), "org/app", oci.Digest(layer))
	if err != nil {
		t.Fatal(err)
	}
	first := make([]byte, 1)
	if _, err := io.ReadFull(rc, first); err != nil { // the fill is running
		t.Fatal(err)
	}
	rc.Close()
	closed := make(chan struct{})
	go func() { p.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(30 * time.Second):
		t.Fatal("Close did not return while a download was stalled")
	}
	left, _ := filepath.Glob(filepath.Join(dir, "uploads", "fetch-*"))
	if len(left) != 0 {
		t.Errorf("download files left after Close: %v", left)
	}
	if _, err := store.StatBlob(t.Context(), "up", "org/app", oci.Digest(layer)); err == nil {
		t.Error("a cancelled download was committed")
	}
}

// Close waits for a download that has its upstream answer but has not started copying
// it into the cache yet: it must not return (and the store be closed) before that copy
// ends.
func TestCloseWaitsForADownloadAboutToStartItsCopy(t *testing.T) {
	u, layer := upstreamLayer(t, "org/app", 64<<10)
	store, err := cache.Open(cache.Options{Dir: t.TempDir(), Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	client, _ := upstream.New(upstream.Config{URL: u.URL, Timeout: 5 * time.Second})
	p := vhost.NewProxy("up", store, client, vhost.ProxyOptions{TagTTL: time.Hour, Logger: testLogger()})
	closed := make(chan struct{})
	var closedEarly atomic.Bool
	defer vhost.SetHookBeforeFill(func() {
		go func() { p.Close(); close(closed) }()
		select {
		case <-closed: // Close returned while this download was about to copy
			closedEarly.Store(true)
		case <-time.After(200 * time.Millisecond):
		}
	})()
	rc, _, err := p.OpenBlob(t.Context(), "org/app", oci.Digest(layer))
	if err == nil {
		io.Copy(io.Discard, rc)
		rc.Close()
	}
	select {
	case <-closed:
	case <-time.After(30 * time.Second):
		t.Fatal("Close did not return")
	}
	if closedEarly.Load() {
		t.Error("Close returned before a download it had not waited for started its copy into the cache")
	}
}

// A proxy is a read-only cache: every write is DENIED before a handler runs.
func TestProxyRefusesEveryWrite(t *testing.T) {
	u := newTestUpstream(t)
	s := startProxy(t, u, proxyConfig{})
	d := "sha256:" + strings.Repeat("a", 64)
	for _, c := range []struct{ method, path string }{
		{"POST", "/v2/org/app/blobs/uploads/"},
		{"PUT", "/v2/org/app/manifests/1.0"},
		{"DELETE", "/v2/org/app/manifests/" + d},
		{"DELETE", "/v2/org/app/blobs/" + d},
		{"PATCH", "/v2/org/app/blobs/uploads/abc"},
	} {
		r := get(c.method, "http://"+s.addr+c.path)
		if r.status != 403 || !strings.Contains(string(r.body), "read-only cache") {
			t.Errorf("%s %s: %d %s", c.method, c.path, r.status, r.body)
		}
	}
}

var s3server *s3test.Server

func TestMain(m *testing.M) { s3test.Main(m, &s3server) }

// newS3 is a blob store on a new bucket of the test S3 server.
func newS3(t *testing.T) (string, blobstore.Store) {
	s, bucket := s3test.Store(t, s3server)
	return bucket, s
}

// A blob the upstream sends without a length is bounded all the same: past max_size
// the fill fails and nothing is cached (a hostile upstream cannot fill the disk).
func TestAnUnsizedUpstreamBlobIsBoundedByMaxSize(t *testing.T) {
	u := newTestUpstream(t)
	layer, err := random.Layer(4<<20, "application/octet-stream")
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteLayer(ref(t, u.host()+"/big/blob:x").Context(), layer); err != nil {
		t.Fatal(err)
	}
	d := digestOf(t, layer)
	u.set(func(u *testUpstream) { u.noLength = true })
	s := startProxy(t, u, proxyConfig{maxSize: 1 << 20})
	r := get("GET", "http://"+s.addr+"/v2/big/blob/blobs/"+d)
	if r.err == nil && r.status == 200 && sha256Hex(r.body) == d {
		t.Errorf("a 4 MiB blob passed a 1 MiB max_size")
	}
	time.Sleep(100 * time.Millisecond) // the fill ends in the background
	if _, ok, _ := s.store.HasBlob(oci.Digest(d)); ok {
		t.Error("a blob over max_size, sent without a length, was cached")
	}
	if left := s.uploads(t); len(left) != 0 {
		t.Errorf("upload data left behind: %v", left)
	}
}

// A request that joins a download which then fails before it reads a byte downloads the
// blob again itself, instead of being cut short with the download's readers.
func TestAJoinerOfAFailedDownloadDownloadsAgain(t *testing.T) {
	u, layer := upstreamLayer(t, "org/app", 256<<10)
	gate := make(chan struct{})
	u.set(func(u *testUpstream) { u.gate, u.corrupt = gate, true })
	s := startProxy(t, u, proxyConfig{})
	var calls atomic.Int64
	defer vhost.SetHookBeforeReader(func(filled <-chan struct{}) {
		if calls.Add(1) == 2 {
			<-filled // the second request reads only once the download has failed
		}
	})()
	started := make(chan struct{})
	first := make(chan httpResult, 1)
	go func() {
		resp, err := http.Get("http://" + s.addr + "/v2/org/app/blobs/" + layer)
		if err != nil {
			first <- httpResult{err: err}
			close(started)
			return
		}
		close(started)
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		first <- httpResult{status: resp.StatusCode, body: b, err: err}
	}()
	<-started
	second := make(chan httpResult, 1)
	go func() { second <- get("GET", "http://"+s.addr+"/v2/org/app/blobs/"+layer) }()
	for calls.Load() < 2 {
		time.Sleep(time.Millisecond)
	}
	// The corrupt download goes on to its end; the next one is sound.
	u.set(func(u *testUpstream) { u.corrupt = false })
	close(gate)
	if r := <-first; r.err == nil && oci.FromBytes(oci.SHA256, r.body) == oci.Digest(layer) {
		t.Error("the first request got the blob from a corrupt download")
	}
	if r := <-second; r.err != nil || r.status != 200 || oci.FromBytes(oci.SHA256, r.body) != oci.Digest(layer) {
		t.Errorf("the request that joined the failed download: %d %v (%d bytes)", r.status, r.err, len(r.body))
	}
}

// upstreamLayer starts an upstream holding a one-layer image of size bytes as repo:1.0,
// and returns it with the layer's digest.
func upstreamLayer(t *testing.T, repo string, size int64) (*testUpstream, string) {
	t.Helper()
	u := newTestUpstream(t)
	img := randomImage(t, size, 1)
	if err := remote.Write(ref(t, u.host()+"/"+repo+":1.0"), img); err != nil {
		t.Fatal(err)
	}
	layers, _ := img.Layers()
	return u, digestOf(t, layers[0])
}
