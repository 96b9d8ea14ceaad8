package gateway_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/dockyard/dockyard/auth"
	"github.com/dockyard/dockyard/cache"
	"github.com/dockyard/dockyard/gateway"
	"github.com/dockyard/dockyard/vhost"
)

// testRegistry is a real gateway on a loopback port over a store in a temp dir.
type testRegistry struct {
	// headers are sent with every request (credentials).
	headers []string
	t       testing.TB
	dir     string
	addr    string
	store   *cache.Store
	auth    *auth.Service
	gw      *gateway.Gateway
	done    chan error
}

type registryOptions struct {
	sparse          bool
	maxManifestSize int64
	cors            gateway.CORS
	auth            func(store *cache.Store) *auth.Service
	// registries replaces the one hosted registry "default" answering every host.
	registries func(store *cache.Store) ([]vhost.Registry, []vhost.Route)
	// gateway adjusts the gateway's options before it starts.
	gateway func(*gateway.Options)
	// store adjusts the store's options.
	store func(*cache.Options)
}

func startRegistry(t testing.TB, dir string, o registryOptions) *testRegistry {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	so := cache.Options{Dir: dir, Logger: log}
	if o.store != nil {
		o.store(&so)
	}
	store, err := cache.Open(so)
	if err != nil {
		t.Fatal(err)
	}
	regs := []vhost.Registry{vhost.NewHosted("default", store, vhost.HostedOptions{AllowSparseIndex: o.sparse})}
	routes := []vhost.Route{{Host: "*", Registry: "default"}}
	if o.registries != nil {
		regs, routes = o.registries(store)
	}
	router, err := vhost.NewRouter(regs, routes)
	if err != nil {
		t.Fatal(err)
	}
	var authService *auth.Service
	if o.auth != nil {
		authService = o.auth(store)
	}
	opts := gateway.Options{Router: router, Logger: log, MaxManifestSize: o.maxManifestSize, CORS: o.cors, Auth: authService}
	if o.gateway != nil {
		o.gateway(&opts)
	}
	gw := gateway.New(opts)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &testRegistry{t: t, dir: dir, addr: ln.Addr().String(), store: store, auth: authService, gw: gw, done: make(chan error, 1)}
	go func() { r.done <- gw.Serve(ln) }()
	t.Cleanup(r.stop)
	return r
}

// stop shuts the server down and closes the store; it is safe to call twice.
func (r *testRegistry) stop() {
	if r.gw == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.gw.Shutdown(ctx); err != nil {
		r.t.Errorf("shutdown: %v", err)
	}
	<-r.done
	if err := r.store.Close(); err != nil {
		r.t.Errorf("close store: %v", err)
	}
	r.gw = nil
}

func (r *testRegistry) url(path string) string { return "http://" + r.addr + path }

type response struct {
	*http.Response
	body []byte
}

// do sends one request; headers are name/value pairs.
func (r *testRegistry) do(method, path string, body []byte, headers ...string) response {
	r.t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, r.url(path), rd)
	if err != nil {
		r.t.Fatal(err)
	}
	headers = append(append([]string{}, r.headers...), headers...)
	for i := 0; i+1 < len(headers); i += 2 {
		if strings.EqualFold(headers[i], "Host") {
			req.Host = headers[i+1]
			continue
		}
		req.Header.Add(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		r.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		r.t.Fatal(err)
	}
	return response{resp, b}
}

// blobFiles lists the blob files on disk, relative to the data dir.
func (r *testRegistry) blobFiles() []string {
	var out []string
	filepath.WalkDir(filepath.Join(r.dir, "blobs"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(r.dir, p)
			out = append(out, rel)
		}
		return nil
	})
	sort.Strings(out)
	return out
}
