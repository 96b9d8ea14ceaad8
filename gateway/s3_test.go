package gateway_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"github.com/dockyard/dockyard/blobstore"
	"github.com/dockyard/dockyard/blobstore/s3test"
	"github.com/dockyard/dockyard/cache"
	"github.com/dockyard/dockyard/index/pgtest"
	"github.com/dockyard/dockyard/oci"
)

var (
	s3server *s3test.Server
	pgserver *pgtest.Server // for the cases run on the PostgreSQL index too
)

func TestMain(m *testing.M) {
	flag.Parse()
	if fuzz := flag.Lookup("test.fuzz"); fuzz != nil && fuzz.Value.String() != "" {
		// A fuzzing run (its coordinator and each worker process run this) needs
		// neither server.
		os.Exit(m.Run())
	}
	var err error
	if s3server, err = s3test.Shared(); err == nil {
		pgserver, err = pgtest.Shared()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	if s3server != nil {
		s3server.Stop()
	}
	if pgserver != nil {
		pgserver.Stop()
	}
	os.Exit(code)
}

// onS3 is a store option putting the blobs in a new bucket of the test S3 server
// (parts of 5 MiB); bucket receives the bucket's name.
func onS3(t *testing.T, bucket *string) func(*cache.Options) {
	s, name := s3test.Store(t, s3server)
	if bucket != nil {
		*bucket = name
	}
	return func(so *cache.Options) { so.Blobs = s }
}

// Ranges of a blob stored in S3: from the start, the middle, the end.
func TestRangeReadsFromS3(t *testing.T) {
	r := startRegistry(t, t.TempDir(), registryOptions{store: onS3(t, nil)})
	blob := make([]byte, 3<<20)
	rand.Read(blob)
	d := oci.FromBytes(oci.SHA256, blob)
	if resp := r.do("POST", "/v2/app/blobs/uploads/?digest="+string(d), blob); resp.StatusCode != 201 {
		t.Fatalf("push: %d %s", resp.StatusCode, resp.body)
	}
	for _, c := range []struct {
		rng        string
		start, end int
	}{{"bytes=0-99", 0, 99}, {"bytes=500-1499", 500, 1499}, {"bytes=500-", 500, len(blob) - 1}, {"bytes=-500", len(blob) - 500, len(blob) - 1}} {
		resp := r.do("GET", "/v2/app/blobs/"+string(d), nil, "Range", c.rng)
		if resp.StatusCode != 206 || !bytes.Equal(resp.body, blob[c.start:c.end+1]) {
			t.Errorf("%s: %d, %d bytes", c.rng, resp.StatusCode, len(resp.body))
		}
	}
	if resp := r.do("GET", "/v2/app/blobs/"+string(d), nil); resp.StatusCode != 200 || !bytes.Equal(resp.body, blob) {
		t.Errorf("whole blob: %d, %d bytes", resp.StatusCode, len(resp.body))
	}
}

// bucketKeys lists what the bucket holds under prefix (objects and multipart uploads).
func bucketKeys(t *testing.T, bucket, prefix string) (objects, multipart []string) {
	t.Helper()
	objects, multipart, err := s3server.Keys(context.Background(), bucket, prefix)
	if err != nil {
		t.Fatal(err)
	}
	return objects, multipart
}

// Collecting deleted content on S3 deletes its objects; kept content still pulls.
func TestGarbageCollectionOnS3EmptiesTheBucketOfDeletedContent(t *testing.T) {
	var bucket string
	r := startRegistry(t, t.TempDir(), registryOptions{store: onS3(t, &bucket)})
	keep, gone := randomImage(t, 6<<20, 2), randomImage(t, 1<<20, 2)
	if err := remote.Write(r.ref("app:keep"), keep); err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r.ref("app:gone"), gone); err != nil {
		t.Fatal(err)
	}
	gd, _ := gone.Digest()
	if resp := r.do("DELETE", "/v2/app/manifests/"+gd.String(), nil); resp.StatusCode != 202 {
		t.Fatalf("delete: %d %s", resp.StatusCode, resp.body)
	}
	// The first collection drops the manifest; the blobs it released are collected by
	// the next, past their grace.
	for range 2 {
		if _, err := r.store.CollectGarbage(context.Background(), cache.GCOptions{Grace: time.Nanosecond}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
	objects, _ := bucketKeys(t, bucket, "blobs/")
	want := map[string]bool{}
	for _, x := range blobsOf(t, keep) {
		want[x] = true
	}
	for _, o := range objects {
		enc := o[strings.LastIndex(o, "/")+1:]
		if !want[enc] {
			t.Errorf("the bucket still holds %s, which no kept image references", o)
		}
		delete(want, enc)
	}
	if len(want) != 0 {
		t.Errorf("blobs of the kept image missing from the bucket: %v", want)
	}
	got, err := remote.Image(r.ref("app:keep"))
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Image(got); err != nil {
		t.Errorf("the kept image after collection: %v", err)
	}
}

// blobsOf returns the hex of an image's layer and config digests.
func blobsOf(t *testing.T, img v1.Image) []string {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ := img.ConfigName()
	out := []string{cfg.Hex}
	for _, l := range layers {
		d, _ := l.Digest()
		out = append(out, d.Hex)
	}
	return out
}

func randomImage(t *testing.T, size int64, layers int) v1.Image {
	t.Helper()
	img, err := random.Image(size, int64(layers))
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// Purging abandoned uploads on S3 leaves no object and no multipart upload: neither
// of a session (parts uploaded, a state saved) nor of upload data no session owns (a
// crash after the multipart upload began).
func TestPurgeOnS3LeavesNoMultipartUpload(t *testing.T) {
	var bucket string
	r := startRegistry(t, t.TempDir(), registryOptions{store: onS3(t, &bucket)})
	loc := r.startUpload("app")
	chunk := make([]byte, 12<<20)
	rand.Read(chunk)
	if resp := r.do("PATCH", loc, chunk, "Content-Range", fmt.Sprintf("0-%d", len(chunk)-1)); resp.StatusCode != 202 {
		t.Fatalf("PATCH: %d %s", resp.StatusCode, resp.body)
	}
	srv := s3test.Need(t, s3server)
	o := srv.Options(bucket)
	o.PartSize = blobstore.MinPartSize
	raw, err := blobstore.NewS3(context.Background(), o) // a second store on the bucket
	if err != nil {
		t.Fatal(err)
	}
	w, err := raw.NewWriter(context.Background(), "crashed")
	if err != nil {
		t.Fatal(err)
	}
	w.Write(chunk) // two parts sent, never flushed
	w.Close()
	if _, multipart := bucketKeys(t, bucket, ""); len(multipart) != 2 {
		t.Fatalf("multipart uploads before the purge: %v, want the session's and the orphan's", multipart)
	}
	time.Sleep(10 * time.Millisecond)
	n, err := r.store.PurgeUploads(context.Background(), time.Millisecond)
	if err != nil || n != 2 {
		t.Fatalf("purged %d, %v; want 2", n, err)
	}
	objects, multipart := bucketKeys(t, bucket, "uploads/")
	if len(objects) != 0 || len(multipart) != 0 {
		t.Errorf("after the purge the bucket holds %v and multipart uploads %v", objects, multipart)
	}
	if resp := r.do("GET", loc, nil); resp.StatusCode != 404 {
		t.Errorf("the purged session answers %d", resp.StatusCode)
	}
}

// A bucket prefix belongs to the index that first used it: another index (a second
// instance, or an empty one started over the blobs of a lost data directory) is
// refused, because its garbage collection would delete what it does not know.
func TestABucketPrefixBelongsToOneIndex(t *testing.T) {
	var bucket string
	opt := onS3(t, &bucket)
	dir := t.TempDir()
	open := func(dir string) (*cache.Store, error) {
		so := cache.Options{Dir: dir}
		opt(&so)
		return cache.Open(so)
	}
	s, err := open(dir)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := open(t.TempDir()); err == nil || !strings.Contains(err.Error(), "another dockyard index") {
		t.Fatalf("a second index over the same prefix: %v", err)
	}
	s, err = open(dir) // the owner itself opens again
	if err != nil {
		t.Fatalf("the owning index reopened: %v", err)
	}
	s.Close()
}

// An S3 that answers 503 SlowDown now and then is retried through; one that keeps
// failing gives the client a 503 naming the blob storage, promptly, and nothing is
// committed. The secret never reaches the client.
func TestS3SlowDownIsRetriedThenReported(t *testing.T) {
	srv := s3test.Need(t, s3server)
	target, _ := url.Parse(srv.Endpoint)
	var slowDowns atomic.Int64 // how many part uploads still get 503 SlowDown
	var refused atomic.Int64
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == "PUT" && r.URL.Query().Has("partNumber") && slowDowns.Add(-1) >= 0 {
			refused.Add(1)
			io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>`)
			return
		}
		httputil.NewSingleHostReverseProxy(target).ServeHTTP(w, r)
	}))
	defer proxy.Close()
	store, _ := s3test.Store(t, s3server, func(o *blobstore.S3Options) { o.Endpoint = proxy.URL })
	r := startRegistry(t, t.TempDir(), registryOptions{store: func(so *cache.Options) { so.Blobs = store }})
	blob := make([]byte, 12<<20) // two full parts and a tail
	rand.Read(blob)
	d := oci.FromBytes(oci.SHA256, blob)

	slowDowns.Store(2)
	if resp := r.do("POST", "/v2/app/blobs/uploads/?digest="+string(d), blob); resp.StatusCode != 201 {
		t.Fatalf("push through two SlowDowns: %d %s", resp.StatusCode, resp.body)
	}
	if refused.Load() != 2 {
		t.Fatalf("%d part uploads were refused, want 2: the case proves nothing", refused.Load())
	}
	if resp := r.do("GET", "/v2/app/blobs/"+string(d), nil); resp.StatusCode != 200 || !bytes.Equal(resp.body, blob) {
		t.Errorf("the blob pushed through SlowDowns: %d, %d bytes", resp.StatusCode, len(resp.body))
	}

	slowDowns.Store(1 << 30)
	other := append([]byte("other "), blob...)
	od := oci.FromBytes(oci.SHA256, other)
	start := time.Now()
	resp := r.do("POST", "/v2/app/blobs/uploads/?digest="+string(od), other)
	if took := time.Since(start); took > 30*time.Second {
		t.Errorf("the error took %v", took)
	}
	if resp.StatusCode != 503 || !strings.Contains(string(resp.body), "blob storage") || strings.Contains(string(resp.body), srv.Secret) {
		t.Errorf("a push S3 keeps refusing: %d %s", resp.StatusCode, resp.body)
	}
	if resp := r.do("HEAD", "/v2/app/blobs/"+string(od), nil); resp.StatusCode != 404 {
		t.Errorf("the refused blob: HEAD %d", resp.StatusCode)
	}
}

// A whole blob in one request goes straight to its place in the bucket; one whose
// bytes do not match its digest leaves nothing there (no object, no multipart upload),
// and the session it closed stays open where it was.
func TestMonolithicPushesOnS3AreWholeOrNothing(t *testing.T) {
	var bucket string
	r := startRegistry(t, t.TempDir(), registryOptions{store: onS3(t, &bucket)})
	blob := make([]byte, 12<<20)
	rand.Read(blob)
	d := oci.FromBytes(oci.SHA256, blob)
	wrong := oci.FromBytes(oci.SHA256, []byte("not the bytes"))
	loc := r.startUpload("app")
	if resp := r.do("PUT", loc+"?digest="+string(wrong), blob); resp.StatusCode != 400 || !strings.Contains(string(resp.body), "DIGEST_INVALID") {
		t.Fatalf("a PUT with the wrong digest: %d %s", resp.StatusCode, resp.body)
	}
	if resp := r.do("POST", "/v2/app/blobs/uploads/?digest="+string(wrong), blob); resp.StatusCode != 400 {
		t.Fatalf("a POST ?digest= with the wrong digest: %d %s", resp.StatusCode, resp.body)
	}
	objects, multipart := bucketKeys(t, bucket, "blobs/")
	if len(objects) != 0 || len(multipart) != 0 {
		t.Fatalf("after two refused pushes the bucket holds %v and multipart uploads %v", objects, multipart)
	}
	if resp := r.do("GET", loc, nil); resp.StatusCode != 204 || resp.Header.Get("Range") != "0-0" && resp.Header.Get("Range") != "" {
		t.Errorf("the session after the refused PUT: %d Range %q", resp.StatusCode, resp.Header.Get("Range"))
	}
	if resp := r.do("PUT", loc+"?digest="+string(d), blob); resp.StatusCode != 201 {
		t.Fatalf("the same session, right digest: %d %s", resp.StatusCode, resp.body)
	}
	if resp := r.do("GET", "/v2/app/blobs/"+string(d), nil); resp.StatusCode != 200 || !bytes.Equal(resp.body, blob) {
		t.Errorf("the blob: %d, %d bytes", resp.StatusCode, len(resp.body))
	}
	if objects, _ := bucketKeys(t, bucket, "uploads/"); len(objects) != 0 {
		t.Errorf("staging left after the commit: %v", objects)
	}
}

// A purge while a monolithic push is still streaming in (it has no session) leaves it
// alone, however old its start.
func TestPurgeLeavesAMonolithicPushInProgressAlone(t *testing.T) {
	var bucket string
	r := startRegistry(t, t.TempDir(), registryOptions{store: onS3(t, &bucket)})
	blob := make([]byte, 12<<20)
	rand.Read(blob)
	d := oci.FromBytes(oci.SHA256, blob)
	pr, pw := io.Pipe()
	done := make(chan *http.Response, 1)
	go func() {
		req, _ := http.NewRequest("POST", r.url("/v2/app/blobs/uploads/?digest="+string(d)), pr)
		req.ContentLength = int64(len(blob))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Error(err)
		}
		done <- resp
	}()
	pw.Write(blob[:11<<20]) // two parts sent: a multipart upload exists
	time.Sleep(100 * time.Millisecond)
	if _, multipart := bucketKeys(t, bucket, ""); len(multipart) != 1 {
		t.Fatalf("multipart uploads while the push streams: %v, want one", multipart)
	}
	if _, err := r.store.PurgeUploads(context.Background(), time.Nanosecond); err != nil {
		t.Fatal(err)
	}
	pw.Write(blob[11<<20:])
	pw.Close()
	if resp := <-done; resp == nil || resp.StatusCode != 201 {
		t.Fatalf("the push a purge ran through: %v", resp)
	}
	if got := r.do("GET", "/v2/app/blobs/"+string(d), nil); got.StatusCode != 200 || !bytes.Equal(got.body, blob) {
		t.Errorf("the blob: %d, %d bytes", got.StatusCode, len(got.body))
	}
}
