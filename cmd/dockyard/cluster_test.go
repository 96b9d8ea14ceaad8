package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	stdlog "log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	"golang.org/x/crypto/bcrypt"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"github.com/dockyard/dockyard/blobstore/s3test"
	"github.com/dockyard/dockyard/index/pgtest"
)

// Two instances, each with a data directory of its own, sharing one PostgreSQL index
// and one bucket: what one is pushed is pulled through the other, a tag moved through
// one is what the other serves on the very next request, and an upload continues on
// whichever instance its next request reaches.
func TestTwoInstancesShareOneIndexAndOneBucket(t *testing.T) {
	dir := t.TempDir()
	cfgFile := sharedConfig(t, dir, "limits: {upload_sessions_per_client: 2}\n")
	a, stopA := serveWith(t, cfgFile, filepath.Join(dir, "a"))
	defer stopA()
	b, stopB := serveWith(t, cfgFile, filepath.Join(dir, "b"))
	defer stopB()
	ref := func(addr, s string) name.Reference {
		r, err := name.ParseReference(addr+"/"+s, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}

	img, _ := random.Image(6<<20, 2)
	if err := remote.Write(ref(a, "team/app:1"), img); err != nil {
		t.Fatal(err)
	}
	got, err := remote.Image(ref(b, "team/app:1"))
	if err != nil {
		t.Fatalf("pushed through a, pulled through b: %v", err)
	}
	if err := validate.Image(got); err != nil {
		t.Errorf("the image through b: %v", err)
	}
	// The tag moves twice through a (read through b after each), then twice through b:
	// an instance that read the tag must not keep serving what it read.
	for i := range 8 {
		from, to := a, b
		if i%4 >= 2 {
			from, to = b, a
		}
		next, _ := random.Image(1024, 1)
		if err := remote.Write(ref(from, "team/app:latest"), next); err != nil {
			t.Fatal(err)
		}
		want, _ := next.Digest()
		d, err := remote.Head(ref(to, "team/app:latest"))
		if err != nil || d.Digest != want {
			t.Fatalf("move %d: the other instance serves %v (%v), want %s", i, d, err, want)
		}
	}

	// POST on a, PATCH on b, PUT on a.
	blob := make([]byte, 7<<20)
	for i := range blob {
		blob[i] = byte(i * 7)
	}
	resp, err := http.Post("http://"+a+"/v2/team/up/blobs/uploads/", "", nil)
	if err != nil || resp.StatusCode != 202 {
		t.Fatalf("POST on a: %v %v", resp, err)
	}
	loc := resp.Header.Get("Location")
	req, _ := http.NewRequest("PATCH", "http://"+b+loc, bytes.NewReader(blob[:6<<20]))
	req.Header.Set("Content-Range", fmt.Sprintf("0-%d", 6<<20-1))
	resp, err = http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 202 {
		t.Fatalf("PATCH on b: %v %v", resp, err)
	}
	loc = resp.Header.Get("Location")
	d := fmt.Sprintf("sha256:%x", sha256Sum(blob))
	sep := "?"
	if bytes.ContainsRune([]byte(loc), '?') {
		sep = "&"
	}
	req, _ = http.NewRequest("PUT", "http://"+a+loc+sep+"digest="+d, bytes.NewReader(blob[6<<20:]))
	req.Header.Set("Content-Range", fmt.Sprintf("%d-%d", 6<<20, len(blob)-1))
	resp, err = http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 201 {
		t.Fatalf("PUT on a: %v %v", resp, err)
	}
	resp, err = http.Get("http://" + b + "/v2/team/up/blobs/" + d)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("the blob through b: %v %v", resp, err)
	}
	var buf bytes.Buffer
	buf.ReadFrom(resp.Body)
	resp.Body.Close()
	if !bytes.Equal(buf.Bytes(), blob) {
		t.Error("the blob uploaded across instances differs")
	}

	// A client's open sessions are counted across instances: sessions opened on a and
	// finished on b give their count back, and the limit (2) holds cluster-wide.
	post := func(addr string) (int, string) {
		resp, err := http.Post("http://"+addr+"/v2/team/limit/blobs/uploads/", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode, resp.Header.Get("Location")
	}
	for i := range 4 {
		st, loc := post(a)
		if st != 202 {
			t.Fatalf("upload %d opened on a: %d", i, st)
		}
		body := []byte(fmt.Sprint("small blob ", i))
		sep := "?"
		if strings.Contains(loc, "?") {
			sep = "&"
		}
		req, _ := http.NewRequest("PUT", fmt.Sprintf("http://%s%s%sdigest=sha256:%x", b, loc, sep, sha256Sum(body)), bytes.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != 201 {
			t.Fatalf("upload %d finished on b: %v %v", i, resp, err)
		}
	}
	if st, _ := post(a); st != 202 {
		t.Errorf("a first open session: %d", st)
	}
	if st, _ := post(b); st != 202 {
		t.Errorf("a second open session, on the other instance: %d", st)
	}
	if st, _ := post(a); st != 429 {
		t.Errorf("a third open session of one client over two instances: %d, want 429", st)
	}

	// fsck checks beside serving instances; a repair (which writes what one snapshot
	// recounted) is refused while they serve.
	var out bytes.Buffer
	if err := run([]string{"fsck", "--config", cfgFile, "--data", filepath.Join(dir, "fsck")}, &out, &out); err != nil {
		t.Errorf("fsck beside serving instances: %v\n%s", err, out.String())
	}
	err = run([]string{"fsck", "--repair", "--config", cfgFile, "--data", filepath.Join(dir, "fsck")}, &out, &out)
	if err == nil || !strings.Contains(err.Error(), "serving") {
		t.Errorf("fsck --repair beside serving instances: %v, want a refusal", err)
	}
}

func sha256Sum(b []byte) [32]byte { return sha256.Sum256(b) }

// sharedConfig writes dir/cluster.yaml: the index in a fresh PostgreSQL database, the
// blobs in a fresh bucket of the test S3 server, then extra (YAML); instances started
// on it share both.
func sharedConfig(t *testing.T, dir, extra string) string {
	t.Helper()
	srv := s3test.Need(t, s3server)
	dsn := pgtest.Need(t, pgserver).NewDatabase(t)
	bucket, err := srv.NewBucket(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("CLUSTER_TEST_SECRET", srv.Secret)
	t.Setenv("CLUSTER_TEST_DSN", dsn)
	cfgFile := filepath.Join(dir, "cluster.yaml")
	err = os.WriteFile(cfgFile, []byte(fmt.Sprintf(`index:
  driver: postgres
  postgres: {dsn_env: CLUSTER_TEST_DSN}
storage:
  driver: s3
  s3: {endpoint: %q, bucket: %q, path_style: true, part_size: 5MiB, access_key_id: %q, secret_access_key_env: CLUSTER_TEST_SECRET}
`, srv.Endpoint, bucket, srv.Access)+extra), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	return cfgFile
}

// countingUpstream is a registry (go-containerregistry's) that counts blob GETs.
func countingUpstream(t *testing.T) (host string, blobGETs *atomic.Int64) {
	n := &atomic.Int64{}
	reg := registry.New(registry.Logger(stdlog.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == "GET" && strings.Contains(r.URL.Path, "/blobs/sha256:") {
			n.Add(1)
			time.Sleep(300 * time.Millisecond) // a download long enough for every pull to overlap it
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://"), n
}

// What instances share besides the index and the bucket: a token issued by one is
// accepted by the other, and a revocation made on one holds on the other at once;
// cold pulls of one proxied blob through both make one upstream download; scheduled
// garbage collection runs on one instance at a time, and goes on when that one stops.
func TestTwoInstancesShareTokensFetchesAndJobs(t *testing.T) {
	upHost, blobGETs := countingUpstream(t)
	dir := t.TempDir()
	h, _ := bcrypt.GenerateFromPassword([]byte("alice-pw"), 10)
	os.WriteFile(filepath.Join(dir, "htpasswd"), []byte("alice:"+string(h)+"\n"), 0o600)
	cfgFile := sharedConfig(t, dir, fmt.Sprintf(`registries:
  - {name: local, type: hosted}
  - {name: up, type: proxy, upstream: {url: "http://%s"}}
routes:
  - {host: "*", registry: local, namespaces: {up: up}}
auth:
  mode: token
  users_file: htpasswd
  rules:
    - {subjects: [user:alice], registries: ["*"], repositories: ["**"], actions: [pull, push, delete]}
lifecycle:
  admins: [user:alice]
  gc: {interval: 400ms, grace: 1h}
`, upHost))
	a, appA, stopA := serveApp(t, cfgFile, filepath.Join(dir, "a"))
	stoppedA := false
	defer func() {
		if !stoppedA {
			stopA()
		}
	}()
	b, appB, stopB := serveApp(t, cfgFile, filepath.Join(dir, "b"))
	defer stopB()

	// A token from a, used on b.
	token := func(addr, repo string) string {
		// Behind a balancer every instance is asked under one name.
		req, _ := http.NewRequest("GET", "http://"+addr+"/token?service=reg.test&scope=repository:"+repo+":pull,push", nil)
		req.Host = "reg.test"
		req.SetBasicAuth("alice", "alice-pw")
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("token from %s: %v %v", addr, resp, err)
		}
		defer resp.Body.Close()
		var tok struct{ Token string }
		json.NewDecoder(resp.Body).Decode(&tok)
		if tok.Token == "" {
			t.Fatal("no token")
		}
		return tok.Token
	}
	list := func(addr, tok string) int {
		req, _ := http.NewRequest("GET", "http://"+addr+"/v2/team/app/tags/list", nil)
		req.Host = "reg.test"
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	tok := token(a, "team/app")
	if st := list(b, tok); st != 404 && st != 200 {
		t.Errorf("a token issued by a, used on b: %d", st)
	}
	// Revoked on a (the admin endpoint), refused on b at once.
	time.Sleep(1100 * time.Millisecond) // revocations are "issued up to now", to the second
	req, _ := http.NewRequest("POST", "http://"+a+"/-/admin/revoke?user=alice", nil)
	req.Host = "reg.test"
	req.SetBasicAuth("alice", "alice-pw")
	resp, err := http.DefaultClient.Do(req)
	if err == nil {
		resp.Body.Close()
	}
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("revoke on a: %v %v", resp, err)
	}
	if st := list(b, tok); st != 401 {
		t.Errorf("a revoked token on the other instance: %d, want 401", st)
	}

	time.Sleep(1100 * time.Millisecond) // tokens issued from the next second on are good

	// Cold pulls of one proxied blob, spread over both instances.
	img, _ := random.Image(3<<20, 1)
	upRef, _ := name.ParseReference(upHost+"/lib/big:1", name.Insecure)
	if err := remote.Write(upRef, img); err != nil {
		t.Fatal(err)
	}
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()
	blobGETs.Store(0)
	var wg sync.WaitGroup
	sums := make([][32]byte, 8)
	toks := []string{token(a, "up/lib/big"), token(b, "up/lib/big")}
	for i := range sums {
		wg.Add(1)
		go func() {
			defer wg.Done()
			addr, tok := a, toks[0]
			if i%2 == 1 {
				addr, tok = b, toks[1]
			}
			req, _ := http.NewRequest("GET", "http://"+addr+"/v2/up/lib/big/blobs/"+ld.String(), nil)
			req.Host = "reg.test"
			req.Header.Set("Authorization", "Bearer "+tok)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != 200 {
				t.Errorf("cold pull %d: %d %s", i, resp.StatusCode, body)
			}
			sums[i] = sha256.Sum256(body)
		}()
	}
	wg.Wait()
	if n := blobGETs.Load(); n != 1 {
		t.Errorf("%d cold pulls over two instances made %d upstream blob GETs, want 1", len(sums), n)
	}
	for i, s := range sums {
		if fmt.Sprintf("sha256:%x", s) != ld.String() {
			t.Errorf("cold pull %d got other bytes", i)
		}
	}

	// Scheduled GC every 400ms on both: one run per interval in the cluster, not one
	// per instance; after a stops, b goes on.
	gcRuns := func() int64 { return appA.jobs.Counters().GCRuns.Load() + appB.jobs.Counters().GCRuns.Load() }
	before := gcRuns()
	time.Sleep(3 * time.Second)
	if n := gcRuns() - before; n < 3 || n > 10 {
		t.Errorf("GC every 400ms on two instances ran %d times in 3s (one run per interval: 6 or 7; one per instance: 14 or more)", n)
	}
	stopA()
	stoppedA = true
	before = appB.jobs.Counters().GCRuns.Load()
	time.Sleep(1500 * time.Millisecond)
	if appB.jobs.Counters().GCRuns.Load() <= before {
		t.Error("after a stopped, GC no longer runs")
	}
}
