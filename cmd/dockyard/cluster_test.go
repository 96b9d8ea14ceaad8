package main

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"

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
	srv := s3test.Need(t, s3server)
	dsn := pgtest.Need(t, pgserver).NewDatabase(t)
	bucket, err := srv.NewBucket(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "cluster.yaml")
	t.Setenv("CLUSTER_TEST_SECRET", srv.Secret)
	t.Setenv("CLUSTER_TEST_DSN", dsn)
	os.WriteFile(cfgFile, []byte(fmt.Sprintf(`index:
  driver: postgres
  postgres: {dsn_env: CLUSTER_TEST_DSN}
storage:
  driver: s3
  s3: {endpoint: %q, bucket: %q, path_style: true, part_size: 5MiB, access_key_id: %q, secret_access_key_env: CLUSTER_TEST_SECRET}
`, srv.Endpoint, bucket, srv.Access)), 0o600)
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
}

func sha256Sum(b []byte) [32]byte { return sha256.Sum256(b) }
