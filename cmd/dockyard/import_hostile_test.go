package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The tests of this file import from a source that misbehaves: go-containerregistry's
// in-memory registry, with some paths answered otherwise by the test, into a real
// dockyard.

// hostileSource serves an in-memory registry holding images ("repo:tag" → image);
// override, when it returns true, has answered the request itself.
func hostileSource(t *testing.T, images map[string]v1.Image, override func(w http.ResponseWriter, r *http.Request) bool) string {
	t.Helper()
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	var populated atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if populated.Load() && override != nil && override(w, r) {
			return
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	addr := strings.TrimPrefix(srv.URL, "http://")
	for ref, img := range images {
		tag, err := name.NewTag(addr+"/"+ref, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Write(tag, img); err != nil {
			t.Fatal(err)
		}
	}
	populated.Store(true)
	return addr
}

// importDestination starts a dockyard without authentication, with extra
// configuration appended, and returns its address.
func importDestination(t *testing.T, extra string) string {
	t.Helper()
	dir := memDir(t)
	os.WriteFile(filepath.Join(dir, "dockyard.yaml"), []byte(`log: {access: false}
registries:
  - {name: default, type: hosted}
routes:
  - {host: "*", registry: default}
`+extra), 0o600)
	addr, stop := serveWith(t, filepath.Join(dir, "dockyard.yaml"), filepath.Join(dir, "data"))
	t.Cleanup(stop)
	return addr
}

// runImport runs dockyard import in this process, giving up after limit.
func runImport(t *testing.T, limit time.Duration, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	done := make(chan error, 1)
	go func() {
		done <- run(append([]string{"import", "--progress-interval", "1h"}, args...), &syncWriter{w: &out}, &out)
	}()
	select {
	case err := <-done:
		return out.String(), err
	case <-time.After(limit):
		t.Fatalf("the import still runs after %s", limit)
		return "", nil
	}
}

// syncWriter lets the import's goroutines share a buffer.
type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func (s *syncWriter) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.String()
}

func randomImage(t *testing.T) v1.Image {
	t.Helper()
	img, err := random.Image(200, 1)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func digestOf(t *testing.T, img v1.Image) v1.Hash {
	t.Helper()
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// destinationDigest is the digest dst's repo:tag points at, or "" if none.
func destinationDigest(t *testing.T, dst, ref string) string {
	t.Helper()
	r, err := name.ParseReference(dst+"/"+ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	d, err := remote.Head(r, remote.WithContext(context.Background()))
	if err != nil {
		return ""
	}
	return d.Digest.String()
}

// A catalog naming team/../../victim/app is not followed out of --into: the name is
// refused and reported as a failure, and the rest of the import goes on.
func TestImportRefusesNamesLeavingTheNamespace(t *testing.T) {
	good, victim := randomImage(t), randomImage(t)
	src := hostileSource(t, map[string]v1.Image{"team/app:1.0": good, "victim/app:evil": victim},
		func(w http.ResponseWriter, r *http.Request) bool {
			switch r.URL.Path {
			case "/v2/_catalog":
				fmt.Fprint(w, `{"repositories":["team/../../victim/app","team/app"]}`)
				return true
			case "/v2/team/app/tags/list":
				fmt.Fprint(w, `{"name":"team/app","tags":["1.0","../../../victim/app/manifests/x"]}`)
				return true
			}
			// The hostile source serves the name as go-containerregistry collapses it
			// (../victim/app).
			if rest, ok := strings.CutPrefix(r.URL.Path, "/v2/../"); ok {
				r.URL.Path = "/v2/" + rest
			}
			return false
		})
	dst := importDestination(t, "")
	out, err := runImport(t, time.Minute, "--from", "http://"+src, "--to", "http://"+dst, "--into", "sandbox",
		"--repositories", "team/**")
	if err == nil {
		t.Errorf("the import succeeded with a hostile name:\n%s", out)
	}
	if got := destinationDigest(t, dst, "victim/app:evil"); got != "" {
		t.Errorf("victim/app:evil was written outside --into sandbox (%s):\n%s", got, out)
	}
	if got := destinationDigest(t, dst, "sandbox/team/app:1.0"); got != digestOf(t, good).String() {
		t.Errorf("sandbox/team/app:1.0 is %q, want the source's %s:\n%s", got, digestOf(t, good), out)
	}
	for _, want := range []string{`failed: team/../../victim/app: refused`, `failed: team/app:../../../victim/app/manifests/x: refused`} {
		if !strings.Contains(out, want) {
			t.Errorf("the output does not say %q:\n%s", want, out)
		}
	}
}

// A catalog whose Link always points at the same page, and a tag list linking to
// itself, end with an error instead of being followed forever.
func TestImportStopsPagesThatDoNotMoveForward(t *testing.T) {
	img := randomImage(t)
	catalogLoop := func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/v2/_catalog" {
			w.Header().Set("Link", `</v2/_catalog?last=a%2Fx&n=1>; rel="next"`)
			fmt.Fprint(w, `{"repositories":["a/x"]}`)
			return true
		}
		return false
	}
	src := hostileSource(t, map[string]v1.Image{"a/x:1": img}, catalogLoop)
	dst := importDestination(t, "")
	out, err := runImport(t, 30*time.Second, "--from", "http://"+src, "--to", "http://"+dst, "--page-size", "1")
	if err == nil || !strings.Contains(err.Error(), "do not move forward") {
		t.Errorf("a looping catalog: %v\n%s", err, out)
	}

	tagLoop := func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/v2/loop/app/tags/list" {
			w.Header().Set("Link", `</v2/loop/app/tags/list?n=1>; rel="next"`)
			fmt.Fprint(w, `{"name":"loop/app","tags":["1"]}`)
			return true
		}
		return false
	}
	src = hostileSource(t, map[string]v1.Image{"loop/app:1": img, "fine/app:1": img}, tagLoop)
	out, err = runImport(t, 30*time.Second, "--from", "http://"+src, "--to", "http://"+dst)
	if err == nil || !strings.Contains(out, "failed: loop/app: listing tags: ") || !strings.Contains(out, "do not move forward") {
		t.Errorf("a looping tag list: %v\n%s", err, out)
	}
	if got := destinationDigest(t, dst, "fine/app:1"); got != digestOf(t, img).String() {
		t.Errorf("fine/app:1 is %q at the destination, want it copied:\n%s", got, out)
	}
	if c := parseImportSummary(t, out); c.failed != 1 || c.copied != 1 {
		t.Errorf("summary %+v, want 1 copied and the tag listing counted as 1 failed:\n%s", c, out)
	}
}

// A source that stops sending in the middle of a blob fails that image after
// --timeout without a byte, and the import goes on and ends.
func TestImportFailsABlobThatStalls(t *testing.T) {
	stalled, fine := randomImage(t), randomImage(t)
	layers, _ := stalled.Layers()
	stalledDigest, _ := layers[0].Digest()
	stalledSize, _ := layers[0].Size()
	src := hostileSource(t, map[string]v1.Image{"stall/app:1": stalled, "fine/app:1": fine},
		func(w http.ResponseWriter, r *http.Request) bool {
			if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/blobs/"+stalledDigest.String()) {
				return false
			}
			w.Header().Set("Content-Length", fmt.Sprint(stalledSize))
			w.WriteHeader(http.StatusOK)
			w.Write(make([]byte, 50))
			w.(http.Flusher).Flush()
			<-r.Context().Done() // the rest never comes
			return true
		})
	dst := importDestination(t, "")
	began := time.Now()
	out, err := runImport(t, 30*time.Second, "--from", "http://"+src, "--to", "http://"+dst, "--timeout", "1s", "--concurrency", "1")
	if err == nil || !strings.Contains(out, "failed: stall/app:1: ") || !strings.Contains(out, "no data received within --timeout") {
		t.Errorf("a stalled blob: %v\n%s", err, out)
	}
	if got := destinationDigest(t, dst, "fine/app:1"); got != digestOf(t, fine).String() {
		t.Errorf("fine/app:1 is %q at the destination, want it copied:\n%s", got, out)
	}
	t.Logf("ended after %s", time.Since(began))
}

// Uploads that fail (a source blob whose bytes are not its digest's) are cancelled,
// so dockyard's count of the client's open uploads (3 here) is not used up by them:
// after three failed imports, a good one from the same client succeeds.
func TestImportCancelsTheUploadsItAbandons(t *testing.T) {
	bad, good := randomImage(t), randomImage(t)
	layers, _ := bad.Layers()
	badDigest, _ := layers[0].Digest()
	src := hostileSource(t, map[string]v1.Image{"bad/app:1": bad, "good/app:1": good},
		func(w http.ResponseWriter, r *http.Request) bool {
			if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/blobs/"+badDigest.String()) {
				return false
			}
			rc, _ := layers[0].Compressed()
			b, _ := io.ReadAll(rc)
			b[len(b)/2] ^= 0xff
			w.Write(b)
			return true
		})
	dst := importDestination(t, "limits: {upload_sessions_per_client: 3}\n")
	for i := range 3 {
		out, err := runImport(t, 30*time.Second, "--from", "http://"+src, "--to", "http://"+dst, "--repositories", "bad/app")
		if err == nil || !strings.Contains(out, "failed: bad/app:1: ") {
			t.Fatalf("import %d of a corrupt blob: %v\n%s", i+1, err, out)
		}
	}
	out, err := runImport(t, 30*time.Second, "--from", "http://"+src, "--to", "http://"+dst, "--repositories", "good/app")
	if err != nil {
		t.Fatalf("a good import after three failed ones: %v\n%s", err, out)
	}
	if got := destinationDigest(t, dst, "good/app:1"); got != digestOf(t, good).String() {
		t.Errorf("good/app:1 is %q at the destination:\n%s", got, out)
	}
	if _, err := runImport(t, time.Minute, "--from", "http://"+src, "--concurrency", "17"); err == nil || !strings.Contains(err.Error(), "between 1 and 16") {
		t.Errorf("--concurrency 17: %v", err)
	}
}

// A repository the source refuses (401 insufficient_scope, 403), for its tag list or
// its manifests, fails alone: the run goes on with the others.
func TestImportGoesOnPastARefusedRepository(t *testing.T) {
	img := randomImage(t)
	src := hostileSource(t, map[string]v1.Image{"open/app:1": img, "secret/app:1": img, "secret2/app:1": img, "secret3/app:1": img},
		func(w http.ResponseWriter, r *http.Request) bool {
			status := 0
			switch {
			case strings.HasPrefix(r.URL.Path, "/v2/secret/app/tags/"):
				status = http.StatusUnauthorized
			case strings.HasPrefix(r.URL.Path, "/v2/secret2/app/manifests/"):
				status = http.StatusUnauthorized
			case strings.HasPrefix(r.URL.Path, "/v2/secret3/app/manifests/"):
				status = http.StatusForbidden
			default:
				return false
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			fmt.Fprint(w, `{"errors":[{"code":"UNAUTHORIZED","message":"insufficient_scope"}]}`)
			return true
		})
	dst := importDestination(t, "")
	out, err := runImport(t, 30*time.Second, "--from", "http://"+src, "--to", "http://"+dst)
	if err == nil || !strings.Contains(err.Error(), "3 failures") {
		t.Errorf("import: %v, want 3 failures\n%s", err, out)
	}
	for _, want := range []string{"failed: secret/app: listing tags: ", "failed: secret2/app:1: source: ", "failed: secret3/app:1: source: "} {
		if !strings.Contains(out, want) {
			t.Errorf("the output does not say %q:\n%s", want, out)
		}
	}
	if got := destinationDigest(t, dst, "open/app:1"); got != digestOf(t, img).String() {
		t.Errorf("open/app:1 is %q at the destination, want it copied:\n%s", got, out)
	}
}

// A full destination (507) ends the run at the first refusal instead of every blob
// of every image trying again.
func TestImportStopsWhenTheDestinationIsFull(t *testing.T) {
	images := map[string]v1.Image{}
	for r := range 3 {
		for tag := range 2 {
			images[fmt.Sprintf("repo%d/app:%d", r, tag)] = randomImage(t)
		}
	}
	src := hostileSource(t, images, nil)
	dst := importDestination(t, "")
	target, _ := url.Parse("http://" + dst)
	proxy := httputil.NewSingleHostReverseProxy(target)
	var uploads atomic.Int64
	full := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/blobs/uploads/") {
			uploads.Add(1)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusInsufficientStorage)
			fmt.Fprint(w, `{"errors":[{"code":"UNKNOWN","message":"no space left"}]}`)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	defer full.Close()
	out, err := runImport(t, 30*time.Second, "--from", "http://"+src, "--to", full.URL, "--concurrency", "1")
	if err == nil || !strings.Contains(err.Error(), "out of space") {
		t.Errorf("import into a full destination: %v\n%s", err, out)
	}
	if n := uploads.Load(); n > 4 {
		t.Errorf("%d uploads tried after the destination said it was full, want the first image's (2 blobs, each tried with a mount then without: at most 4)\n%s", n, out)
	}
}

// Tags sharing one digest each get their own outcome: the immutable release tag
// 1.0.0, which points elsewhere at the destination, fails alone, and the other tags
// of the same image are copied.
func TestImportTagsSharingADigestFailAlone(t *testing.T) {
	img, other := randomImage(t), randomImage(t)
	images := map[string]v1.Image{}
	for _, tag := range []string{"1.0.0", "latest", "stable", "v-next"} {
		images["app:"+tag] = img
	}
	src := hostileSource(t, images, func(w http.ResponseWriter, r *http.Request) bool {
		// The immutable tag's copy goes first and holds the others back, so that
		// they wait for it if its outcome is shared.
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
			time.Sleep(300 * time.Millisecond)
		}
		if strings.Contains(r.URL.Path, "/manifests/") && !strings.HasSuffix(r.URL.Path, "/1.0.0") {
			time.Sleep(100 * time.Millisecond)
		}
		return false
	})
	dst := importDestination(t, "lifecycle: {immutable: [{registries: [\"*\"], repositories: [\"**\"]}]}\n")
	pinned, _ := name.NewTag(dst+"/app:1.0.0", name.Insecure)
	if err := remote.Write(pinned, other); err != nil {
		t.Fatal(err)
	}
	out, err := runImport(t, time.Minute, "--from", "http://"+src, "--to", "http://"+dst, "--overwrite")
	if err == nil || !strings.Contains(err.Error(), "1 failures") || !strings.Contains(out, "failed: app:1.0.0: ") {
		t.Errorf("import: %v, want app:1.0.0 to fail alone\n%s", err, out)
	}
	for _, tag := range []string{"latest", "stable", "v-next"} {
		if got := destinationDigest(t, dst, "app:"+tag); got != digestOf(t, img).String() {
			t.Errorf("app:%s is %q at the destination, want the source's %s\n%s", tag, got, digestOf(t, img), out)
		}
	}
	if got := destinationDigest(t, dst, "app:1.0.0"); got != digestOf(t, other).String() {
		t.Errorf("the immutable app:1.0.0 moved to %s", got)
	}
}

// A tag pushed to the destination after an import is not moved back to the source's
// digest by the next run: it is kept and listed, unless --overwrite.
func TestImportKeepsTagsThatDifferAtTheDestination(t *testing.T) {
	img, newer := randomImage(t), randomImage(t)
	src := hostileSource(t, map[string]v1.Image{"app:1": img, "app:2": img}, nil)
	dst := importDestination(t, "")
	pushed, _ := name.NewTag(dst+"/app:1", name.Insecure)
	if err := remote.Write(pushed, newer); err != nil {
		t.Fatal(err)
	}
	out, err := runImport(t, time.Minute, "--from", "http://"+src, "--to", "http://"+dst)
	if err != nil || !strings.Contains(out, "import: kept: app:1 differs at the destination (kept; --overwrite to replace)") ||
		!strings.Contains(out, "; 1 tags differ at the destination (kept; --overwrite to replace);") {
		t.Errorf("import: %v, want app:1 kept and listed\n%s", err, out)
	}
	if got := destinationDigest(t, dst, "app:1"); got != digestOf(t, newer).String() {
		t.Errorf("app:1 was moved to %s, want it kept at %s\n%s", got, digestOf(t, newer), out)
	}
	if got := destinationDigest(t, dst, "app:2"); got != digestOf(t, img).String() {
		t.Errorf("app:2 is %q, want it copied\n%s", got, out)
	}
	out, err = runImport(t, time.Minute, "--from", "http://"+src, "--to", "http://"+dst, "--overwrite")
	if got := destinationDigest(t, dst, "app:1"); err != nil || got != digestOf(t, img).String() {
		t.Errorf("--overwrite: %v, app:1 is %s, want the source's %s\n%s", err, got, digestOf(t, img), out)
	}
}

// Credentials in --from or --to are refused, pointing at the flags to use, and never
// echoed.
func TestImportRefusesCredentialsInURLs(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--from", "http://admin:hunter2@127.0.0.1:1"}, "--username"},
		{[]string{"--from", "http://127.0.0.1:1", "--to", "https://importer:hunter2@127.0.0.1:2"}, "--to-username"},
		{[]string{"--from", "http://admin:hunter2@127.0.0.1:1/%zz"}, "must be"},
	} {
		_, err := runImport(t, time.Minute, c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%v: %v, want a refusal naming %s without the password", c.args, err, c.want)
		}
	}
}

// The summary counts what happened: an interrupted run does not report the
// repositories it left as done, and foreign layers (never copied) are not counted as
// mounted.
func TestImportSummaryCountsWhatHappened(t *testing.T) {
	img := randomImage(t)
	foreign, err := mutate.Append(img, mutate.Addendum{
		Layer: static.NewLayer([]byte("a foreign layer"), types.DockerForeignLayer),
		URLs:  []string{"https://example.com/layer"},
	})
	if err != nil {
		t.Fatal(err)
	}
	src := hostileSource(t, map[string]v1.Image{"one/app:1": foreign, "two/app:1": foreign}, nil)
	dst := importDestination(t, "")
	out, err := runImport(t, time.Minute, "--from", "http://"+src, "--to", "http://"+dst, "--concurrency", "1")
	if err != nil {
		t.Fatalf("import: %v\n%s", err, out)
	}
	if c := parseImportSummary(t, out); c.copied != 2 || c.mounted != 2 {
		t.Errorf("summary %+v, want 2 copied and 2 blobs (a layer and the config) mounted, not the foreign layer\n%s", c, out)
	}

	started := make(chan struct{}, 10)
	src = hostileSource(t, map[string]v1.Image{"three/app:1": randomImage(t), "four/app:1": randomImage(t)},
		func(w http.ResponseWriter, r *http.Request) bool {
			if r.Method != http.MethodGet || !strings.Contains(r.URL.Path, "/blobs/") {
				return false
			}
			started <- struct{}{}
			<-r.Context().Done()
			return true
		})
	go func() {
		<-started
		syscall.Kill(os.Getpid(), syscall.SIGINT)
	}()
	out, err = runImport(t, time.Minute, "--from", "http://"+src, "--to", "http://"+dst, "--concurrency", "1")
	if err == nil || !strings.Contains(err.Error(), "interrupted") {
		t.Errorf("import: %v, want it interrupted\n%s", err, out)
	}
	if !strings.Contains(out, ": 0/2 repositories,") {
		t.Errorf("the interrupted import reports repositories done:\n%s", out)
	}
}

// --into HOST sends every request of the import, upload sessions included, with that
// Host, so that dockyard routes them all to the registry of that host (an upload's
// relative Location used to resolve to --to's address, and its chunks went to the
// default registry).
func TestImportIntoAHostKeepsItsUploadsThere(t *testing.T) {
	img := randomImage(t)
	src := hostileSource(t, map[string]v1.Image{"team/app:1": img}, nil)
	dir := memDir(t)
	os.WriteFile(filepath.Join(dir, "dockyard.yaml"), []byte(`log: {access: false}
registries:
  - {name: default, type: hosted}
  - {name: moved, type: hosted}
routes:
  - {host: moved.example.test, registry: moved}
  - {host: "*", registry: default}
`), 0o600)
	dst, stop := serveWith(t, filepath.Join(dir, "dockyard.yaml"), filepath.Join(dir, "data"))
	t.Cleanup(stop)
	out, err := runImport(t, time.Minute, "--from", "http://"+src, "--to", "http://"+dst, "--into", "moved.example.test")
	if err != nil {
		t.Fatalf("import into a host: %v\n%s", err, out)
	}
	req, _ := http.NewRequest(http.MethodHead, "http://"+dst+"/v2/team/app/manifests/1", nil)
	req.Host = "moved.example.test"
	req.Header.Set("Accept", string(types.DockerManifestSchema2)+", "+string(types.OCIManifestSchema1))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Docker-Content-Digest") != digestOf(t, img).String() {
		t.Errorf("team/app:1 on moved.example.test: %d %s\n%s", resp.StatusCode, resp.Header.Get("Docker-Content-Digest"), out)
	}
	if got := destinationDigest(t, dst, "team/app:1"); got != "" {
		t.Errorf("team/app:1 landed in the default registry too (%s)", got)
	}
}
