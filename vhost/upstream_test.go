package vhost_test

import (
	"context"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"

	"github.com/dockyard/dockyard/blobstore"
	"github.com/dockyard/dockyard/cache"
	"github.com/dockyard/dockyard/gateway"
	"github.com/dockyard/dockyard/vhost"
)

// testUpstream is an upstream registry in the test process: go-containerregistry's
// in-memory registry behind the Bearer token flow that ghcr.io uses, which the test can
// tell to fail, stall, corrupt blobs or answer with a chosen status.
type testUpstream struct {
	*httptest.Server
	blobGets     atomic.Int64 // GETs of /blobs/ that reached the registry
	manifestGets atomic.Int64 // GETs of /manifests/

	mu         sync.Mutex
	failing    bool          // answer 500 to everything
	stall      time.Duration // wait before answering
	corrupt    bool          // flip a byte in blob bodies
	noLength   bool          // send blob bodies chunked, without Content-Length
	status     int           // answer manifest requests with this status
	retryAfter string
	// unknownRepo answers requests for repositories the upstream does not have the way
	// public registries do: 401 with an insufficient_scope challenge after granting an
	// anonymous token (Docker Hub), 403 DENIED (ghcr.io), or 404 NAME_UNKNOWN. 0: the
	// in-memory registry's own answer (it serves any blob through any repository).
	unknownRepo int
	// gate, when set, holds blob bodies after their first half until it is closed.
	gate chan struct{}
	// manifestHeads counts HEADs of /manifests/ that reached the registry.
	manifestHeads atomic.Int64
	// manifestGetStatus answers manifest GETs (not HEADs) with this status.
	manifestGetStatus int
	// undigested answers manifest requests without Docker-Content-Digest, as some
	// registries do.
	undigested bool
}

const upstreamToken = "t0ken"

func newTestUpstream(t *testing.T) *testUpstream { return newUpstream(t, false) }

// newUpstream starts the upstream, over TLS with a self-signed certificate when tls.
func newUpstream(t *testing.T, tls bool) *testUpstream {
	u := &testUpstream{}
	reg := registry.New(registry.WithReferrersSupport(true), registry.Logger(log.New(io.Discard, "", 0)))
	u.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		failing, stall, corrupt, status, retryAfter, unknownRepo, gate, noLength := u.failing, u.stall, u.corrupt, u.status, u.retryAfter, u.unknownRepo, u.gate, u.noLength
		manifestGetStatus, undigested := u.manifestGetStatus, u.undigested
		u.mu.Unlock()
		if stall > 0 {
			select {
			case <-time.After(stall):
			case <-r.Context().Done():
				return
			}
		}
		if failing {
			http.Error(w, "upstream failure", http.StatusInternalServerError)
			return
		}
		if r.URL.Path == "/token" {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"token":"`+upstreamToken+`","access_token":"`+upstreamToken+`"}`)
			return
		}
		if r.Header.Get("Authorization") != "Bearer "+upstreamToken {
			w.Header().Set("WWW-Authenticate", `Bearer realm="`+u.URL+`/token",service="test-upstream",scope="repository:x:pull"`)
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`)
			return
		}
		if r.Method == "HEAD" && strings.Contains(r.URL.Path, "/manifests/") {
			u.manifestHeads.Add(1)
		}
		if status != 0 && strings.Contains(r.URL.Path, "/manifests/") {
			if retryAfter != "" {
				w.Header().Set("Retry-After", retryAfter)
			}
			w.WriteHeader(status)
			io.WriteString(w, `{"errors":[{"code":"DENIED","message":"forced by the test"}]}`)
			return
		}
		if repo, ok := repoOf(r.URL.Path); unknownRepo != 0 && ok && !hasRepo(reg, repo) {
			if unknownRepo == http.StatusUnauthorized {
				w.Header().Set("WWW-Authenticate", `Bearer realm="`+u.URL+`/token",service="test-upstream",scope="repository:`+repo+`:pull",error="insufficient_scope"`)
				w.WriteHeader(http.StatusUnauthorized)
				io.WriteString(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required","detail":[{"Type":"repository","Class":"","Name":"`+repo+`","Action":"pull"}]}]}`)
				return
			}
			w.WriteHeader(unknownRepo)
			if unknownRepo == http.StatusNotFound {
				io.WriteString(w, `{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known to registry"}]}`)
				return
			}
			io.WriteString(w, `{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}`)
			return
		}
		if r.Method == "GET" && strings.Contains(r.URL.Path, "/manifests/") {
			u.manifestGets.Add(1)
			if manifestGetStatus != 0 {
				w.WriteHeader(manifestGetStatus)
				return
			}
		}
		if undigested && strings.Contains(r.URL.Path, "/manifests/") {
			w = &undigestedWriter{w}
		}
		if r.Method == "GET" && strings.Contains(r.URL.Path, "/blobs/") {
			u.blobGets.Add(1)
			var bw http.ResponseWriter = w
			if gate != nil {
				bw = &gatingWriter{ResponseWriter: w, gate: gate}
			}
			if corrupt {
				bw = &corruptingWriter{ResponseWriter: bw}
			}
			if noLength {
				bw = &unsizedWriter{ResponseWriter: bw}
			}
			reg.ServeHTTP(bw, r)
			return
		}
		reg.ServeHTTP(w, r)
	}))
	if tls {
		u.StartTLS()
	} else {
		u.Start()
	}
	t.Cleanup(u.Close)
	return u
}

// repoOf is the repository a /v2/<name>/{manifests,blobs,tags,referrers}/… path names.
func repoOf(path string) (string, bool) {
	rest, ok := strings.CutPrefix(path, "/v2/")
	if !ok {
		return "", false
	}
	for _, sep := range []string{"/manifests/", "/blobs/", "/tags/", "/referrers/"} {
		if i := strings.LastIndex(rest, sep); i > 0 {
			return rest[:i], true
		}
	}
	return "", false
}

// hasRepo asks the in-memory registry whether it holds any tag of repo.
func hasRepo(reg http.Handler, repo string) bool {
	rec := httptest.NewRecorder()
	reg.ServeHTTP(rec, httptest.NewRequest("GET", "/v2/"+repo+"/tags/list", nil))
	return rec.Code == http.StatusOK
}

func (u *testUpstream) set(f func(u *testUpstream)) {
	u.mu.Lock()
	defer u.mu.Unlock()
	f(u)
}

func (u *testUpstream) host() string {
	return strings.TrimPrefix(strings.TrimPrefix(u.URL, "http://"), "https://")
}

// unsizedWriter drops Content-Length: the body goes chunked.
type unsizedWriter struct{ http.ResponseWriter }

func (w *unsizedWriter) WriteHeader(code int) {
	w.Header().Del("Content-Length")
	w.ResponseWriter.WriteHeader(code)
}

func (w *unsizedWriter) Write(p []byte) (int, error) {
	w.Header().Del("Content-Length")
	return w.ResponseWriter.Write(p)
}

// undigestedWriter drops Docker-Content-Digest.
type undigestedWriter struct{ http.ResponseWriter }

func (w *undigestedWriter) WriteHeader(code int) {
	w.Header().Del("Docker-Content-Digest")
	w.ResponseWriter.WriteHeader(code)
}

func (w *undigestedWriter) Write(p []byte) (int, error) {
	w.Header().Del("Docker-Content-Digest")
	return w.ResponseWriter.Write(p)
}

// gatingWriter sends the first half of a body, then waits for its gate.
type gatingWriter struct {
	http.ResponseWriter
	gate   chan struct{}
	passed bool
}

func (g *gatingWriter) Write(p []byte) (int, error) {
	if g.passed || len(p) < 2 {
		return g.ResponseWriter.Write(p)
	}
	g.passed = true
	half := len(p) / 2
	n, err := g.ResponseWriter.Write(p[:half])
	if err != nil {
		return n, err
	}
	g.ResponseWriter.(http.Flusher).Flush()
	<-g.gate
	m, err := g.ResponseWriter.Write(p[half:])
	return n + m, err
}

// corruptingWriter flips the first body byte it writes.
type corruptingWriter struct {
	http.ResponseWriter
	done bool
}

func (c *corruptingWriter) Write(p []byte) (int, error) {
	if !c.done && len(p) > 0 {
		c.done = true
		q := append([]byte(nil), p...)
		q[0] ^= 0xff
		return c.ResponseWriter.Write(q)
	}
	return c.ResponseWriter.Write(p)
}

// fakeClock is a settable clock for TTLs.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// server is a dockyard gateway over registries built by the test.
type server struct {
	addr  string
	store *cache.Store
	dir   string
	blobs blobstore.Store
}

// uploads lists the upload data the blob store holds.
func (s *server) uploads(t *testing.T) []string {
	t.Helper()
	var ids []string
	if err := s.blobs.WalkUploads(t.Context(), func(u blobstore.Upload) error {
		ids = append(ids, u.ID)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return ids
}

func testLogger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// startServer opens a store, lets build make the registries and routes over it, and
// serves them on a loopback port.
func startServer(t *testing.T, build func(store *cache.Store) ([]vhost.Registry, []vhost.Route)) *server {
	return startServerAt(t, nil, nil, build)
}

// startServerAt is startServer with the store on the clock now (nil: the real one)
// and its blobs in blobs (nil: the filesystem).
func startServerAt(t *testing.T, now func() time.Time, blobs blobstore.Store, build func(store *cache.Store) ([]vhost.Registry, []vhost.Route)) *server {
	t.Helper()
	dir := t.TempDir()
	store, err := cache.Open(cache.Options{Dir: dir, Logger: testLogger(), Now: now, Blobs: blobs})
	if err != nil {
		t.Fatal(err)
	}
	regs, routes := build(store)
	router, err := vhost.NewRouter(regs, routes)
	if err != nil {
		t.Fatal(err)
	}
	gw := gateway.New(gateway.Options{Router: router, Logger: testLogger()})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- gw.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		gw.Shutdown(ctx)
		<-done
		store.Close()
	})
	if blobs == nil {
		if blobs, err = blobstore.NewFS(dir); err != nil {
			t.Fatal(err)
		}
	}
	return &server{addr: ln.Addr().String(), store: store, dir: dir, blobs: blobs}
}
