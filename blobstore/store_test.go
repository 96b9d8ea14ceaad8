package blobstore_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sort"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/dockyard/dockyard/blobstore"
	"github.com/dockyard/dockyard/blobstore/s3test"
	"github.com/dockyard/dockyard/oci"
)

var server *s3test.Server

func TestMain(m *testing.M) { s3test.Main(m, &server) }

// each runs a case against the filesystem store and against S3 (versitygw), with
// S3's smallest part size so that a few MiB cross part boundaries.
func each(t *testing.T, fn func(t *testing.T, s blobstore.Store)) {
	t.Run("filesystem", func(t *testing.T) {
		s, err := blobstore.NewFS(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		fn(t, s)
	})
	t.Run("s3", func(t *testing.T) {
		fn(t, newS3(t))
	})
}

func newS3(t *testing.T) *blobstore.S3 {
	s, _ := s3test.Store(t, server, func(o *blobstore.S3Options) { o.Prefix = "reg" })
	return s
}

func newWriter(t *testing.T, s blobstore.Store, id string) blobstore.Writer {
	t.Helper()
	w, err := s.NewWriter(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func resume(t *testing.T, s blobstore.Store, id string, off int64) blobstore.Writer {
	t.Helper()
	w, err := s.ResumeWriter(context.Background(), id, off)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func write(t *testing.T, w blobstore.Writer, b []byte) {
	t.Helper()
	if n, err := w.Write(b); err != nil || n != len(b) {
		t.Fatalf("write %d bytes: %d, %v", len(b), n, err)
	}
}

func random(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func read(t *testing.T, s blobstore.Store, d oci.Digest) []byte {
	t.Helper()
	rc, size, err := s.Open(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(b)) != size {
		t.Fatalf("Open said %d bytes, read %d", size, len(b))
	}
	return b
}

func uploadIDs(t *testing.T, s blobstore.Store) []string {
	t.Helper()
	var ids []string
	if err := s.WalkUploads(context.Background(), func(u blobstore.Upload) error {
		ids = append(ids, u.ID)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	sort.Strings(ids)
	return ids
}

// Chunks of the sizes clients send, each in a request of its own (a writer resumed at
// the recorded offset, written, flushed, closed), commit to the bytes sent.
func TestChunksOfAnySizeRoundTrip(t *testing.T) {
	each(t, func(t *testing.T, s blobstore.Store) {
		ctx := context.Background()
		sizes := []int{1, 1023, 3 << 20, 5 << 20, 7 << 20, 6 << 20, 6 << 20, 6 << 20, 1}
		total := 0
		for _, n := range sizes {
			total += n
		}
		want := random(total)
		w, err := s.NewWriter(ctx, "up1")
		if err != nil {
			t.Fatal(err)
		}
		w.Close()
		off := int64(0)
		for _, n := range sizes {
			w, err := s.ResumeWriter(ctx, "up1", off)
			if err != nil {
				t.Fatalf("resume at %d: %v", off, err)
			}
			if w.Size() != off {
				t.Fatalf("resumed writer has %d bytes, want %d", w.Size(), off)
			}
			chunk := want[off : off+int64(n)]
			if f, ok := w.(blobstore.Filler); ok && n%2 == 0 {
				// Every other chunk read straight into the store's buffers, in
				// small uneven reads, hashed on the way.
				h := sha256.New()
				if k, err := f.Fill(iotest.HalfReader(bytes.NewReader(chunk)), h); err != nil || k != int64(n) {
					t.Fatalf("fill %d bytes: %d, %v", n, k, err)
				}
				if want := sha256.Sum256(chunk); !bytes.Equal(h.Sum(nil), want[:]) {
					t.Fatal("Fill hashed other bytes than it stored")
				}
			} else if _, err := w.Write(chunk); err != nil {
				t.Fatal(err)
			}
			if err := w.Flush(); err != nil {
				t.Fatal(err)
			}
			w.Close()
			off += int64(n)
		}
		w, err = s.ResumeWriter(ctx, "up1", off)
		if err != nil {
			t.Fatal(err)
		}
		d := oci.FromBytes(oci.SHA256, want)
		if err := w.Commit(d); err != nil {
			t.Fatal(err)
		}
		if got := read(t, s, d); !bytes.Equal(got, want) {
			t.Fatalf("committed blob differs (%d vs %d bytes)", len(got), len(want))
		}
		if size, err := s.Stat(ctx, d); err != nil || size != int64(total) {
			t.Fatalf("Stat = %d, %v; want %d", size, err, total)
		}
		if ids := uploadIDs(t, s); len(ids) != 0 {
			t.Fatalf("uploads left after commit: %v", ids)
		}
	})
}

// A chunk that fails (written, never flushed) is dropped when the upload resumes at
// the offset its record kept, even when it had filled parts.
func TestResumingDropsWhatWasNotRecorded(t *testing.T) {
	each(t, func(t *testing.T, s blobstore.Store) {
		ctx := context.Background()
		head, lost, tail := random(2<<20), random(11<<20), random(4<<20)
		w, err := s.NewWriter(ctx, "u")
		if err != nil {
			t.Fatal(err)
		}
		write(t, w, head)
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		write(t, w, lost) // fills two parts on S3
		w.Close()
		// A crash after a flush the index never recorded: the record still says head.
		w = resume(t, s, "u", int64(len(head)))
		write(t, w, random(1<<20))
		w.Flush()
		w.Close()
		w, err = s.ResumeWriter(ctx, "u", int64(len(head)))
		if err != nil {
			t.Fatal(err)
		}
		write(t, w, tail)
		want := append(append([]byte{}, head...), tail...)
		rc, err := w.ReadBack()
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(rc)
		rc.Close()
		if !bytes.Equal(got, want) {
			t.Fatalf("read back %d bytes, want %d", len(got), len(want))
		}
		d := oci.FromBytes(oci.SHA256, want)
		if err := w.Commit(d); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(read(t, s, d), want) {
			t.Fatal("committed blob differs from head+tail")
		}
		if _, err := s.ResumeWriter(ctx, "u", int64(len(want))); !errors.Is(err, blobstore.ErrNotExist) {
			t.Fatalf("a committed upload resumed: %v", err)
		}
	})
}

// Ranged reads: a seek anywhere, then reading to the end.
func TestOpenSeeks(t *testing.T) {
	each(t, func(t *testing.T, s blobstore.Store) {
		ctx := context.Background()
		want := random(3<<20 + 17)
		w := newWriter(t, s, "x")
		write(t, w, want)
		d := oci.FromBytes(oci.SHA256, want)
		if err := w.Commit(d); err != nil {
			t.Fatal(err)
		}
		rc, size, err := s.Open(ctx, d)
		if err != nil || size != int64(len(want)) {
			t.Fatalf("Open: %d, %v", size, err)
		}
		defer rc.Close()
		for _, off := range []int64{1 << 20, 5, int64(len(want)) - 1} {
			if _, err := rc.Seek(off, io.SeekStart); err != nil {
				t.Fatal(err)
			}
			b := make([]byte, 100)
			n, err := io.ReadFull(rc, b)
			if want := min(100, int64(len(want))-off); int64(n) != want || (err != nil && err != io.ErrUnexpectedEOF) {
				t.Fatalf("read at %d: %d bytes, %v", off, n, err)
			}
			if !bytes.Equal(b[:n], want[off:off+int64(n)]) {
				t.Fatalf("bytes at %d differ", off)
			}
		}
	})
}

// Walk lists committed blobs; Delete removes them; missing content is ErrNotExist.
func TestWalkDeleteAndMissing(t *testing.T) {
	each(t, func(t *testing.T, s blobstore.Store) {
		ctx := context.Background()
		var ds []string
		for i := range 3 {
			b := random(10 + i)
			w := newWriter(t, s, fmt.Sprint("w", i))
			write(t, w, b)
			d := oci.FromBytes(oci.SHA256, b)
			if err := w.Commit(d); err != nil {
				t.Fatal(err)
			}
			ds = append(ds, string(d))
		}
		sort.Strings(ds)
		var walked []string
		s.Walk(ctx, func(b blobstore.Blob) error {
			walked = append(walked, string(b.Digest))
			if b.ModTime.IsZero() || b.Size < 10 {
				t.Errorf("blob %s: size %d, mod time %v", b.Digest, b.Size, b.ModTime)
			}
			return nil
		})
		sort.Strings(walked)
		if fmt.Sprint(walked) != fmt.Sprint(ds) {
			t.Fatalf("walked %v, want %v", walked, ds)
		}
		if err := s.Delete(ctx, oci.Digest(ds[0])); err != nil {
			t.Fatal(err)
		}
		if err := s.Delete(ctx, oci.Digest(ds[0])); err != nil {
			t.Fatalf("deleting a missing blob: %v", err)
		}
		if _, err := s.Stat(ctx, oci.Digest(ds[0])); !errors.Is(err, blobstore.ErrNotExist) {
			t.Fatalf("Stat of a deleted blob: %v", err)
		}
		if _, _, err := s.Open(ctx, oci.Digest(ds[0])); !errors.Is(err, blobstore.ErrNotExist) {
			t.Fatalf("Open of a deleted blob: %v", err)
		}
		if _, err := s.ResumeWriter(ctx, "nope", 0); !errors.Is(err, blobstore.ErrNotExist) {
			t.Fatalf("resuming an unknown upload: %v", err)
		}
	})
}

// Cancelled and removed uploads leave nothing behind, multipart uploads included.
func TestRemovedUploadsLeaveNothing(t *testing.T) {
	each(t, func(t *testing.T, s blobstore.Store) {
		ctx := context.Background()
		a := newWriter(t, s, "a")
		write(t, a, random(6<<20))
		a.Flush()
		a.Close()
		b := newWriter(t, s, "b")
		write(t, b, random(12<<20)) // parts, never flushed: only the multipart upload knows
		b.Close()
		c := newWriter(t, s, "c")
		write(t, c, random(100))
		if ids := uploadIDs(t, s); fmt.Sprint(ids) != "[a b]" {
			t.Fatalf("uploads %v, want [a b] (c is being written)", ids)
		}
		if err := c.Cancel(); err != nil {
			t.Fatal(err)
		}
		for _, id := range []string{"a", "b"} {
			if err := s.RemoveUpload(ctx, id); err != nil {
				t.Fatal(err)
			}
		}
		if ids := uploadIDs(t, s); len(ids) != 0 {
			t.Fatalf("uploads left: %v", ids)
		}
		if s3s, ok := s.(*blobstore.S3); ok {
			_ = s3s
			objects, multipart, err := server.Keys(ctx, bucketOf(t, s), "")
			if err != nil {
				t.Fatal(err)
			}
			if len(objects) != 0 || len(multipart) != 0 {
				t.Fatalf("bucket still holds %v and multipart uploads %v", objects, multipart)
			}
		}
	})
}

func bucketOf(t *testing.T, s blobstore.Store) string {
	return s.(*blobstore.S3).Bucket()
}

// Committing content already stored keeps it and drops the upload.
func TestCommitOfStoredContent(t *testing.T) {
	each(t, func(t *testing.T, s blobstore.Store) {
		b := random(7 << 20)
		d := oci.FromBytes(oci.SHA256, b)
		for _, id := range []string{"one", "two"} {
			w := newWriter(t, s, id)
			write(t, w, b)
			if err := w.Commit(d); err != nil {
				t.Fatal(err)
			}
		}
		if !bytes.Equal(read(t, s, d), b) {
			t.Fatal("blob differs")
		}
		if ids := uploadIDs(t, s); len(ids) != 0 {
			t.Fatalf("uploads left: %v", ids)
		}
	})
}

// A direct write (the digest known first) is invisible until committed, lands in place,
// and leaves nothing behind when cancelled or interrupted (the purge finds it).
func TestDirectWritesAppearWholeOrNotAtAll(t *testing.T) {
	s := newS3(t)
	ctx := context.Background()
	b := random(12 << 20) // two parts and a tail
	d := oci.FromBytes(oci.SHA256, b)
	w, err := s.NewBlobWriter(ctx, "mono-1", d)
	if err != nil {
		t.Fatal(err)
	}
	write(t, w, b)
	if _, err := s.Stat(ctx, d); !errors.Is(err, blobstore.ErrNotExist) {
		t.Fatalf("the blob is visible before its commit: %v", err)
	}
	if err := w.Commit(d); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(read(t, s, d), b) {
		t.Fatal("a direct write committed other bytes")
	}
	other := oci.FromBytes(oci.SHA256, []byte("other"))
	w, _ = s.NewBlobWriter(ctx, "mono-2", other)
	write(t, w, random(11<<20))
	if err := w.Cancel(); err != nil {
		t.Fatal(err)
	}
	w, _ = s.NewBlobWriter(ctx, "mono-3", other)
	write(t, w, random(11<<20)) // then the process dies: no Commit, no Cancel
	w.(io.Closer).Close()
	var left []string
	s.WalkUploads(ctx, func(u blobstore.Upload) error { left = append(left, u.ID); return nil })
	if len(left) != 1 {
		t.Fatalf("uploads after an interrupted direct write: %v, want the one", left)
	}
	if err := s.RemoveUpload(ctx, left[0]); err != nil {
		t.Fatal(err)
	}
	objects, multipart, err := server.Keys(ctx, s.Bucket(), "")
	if err != nil {
		t.Fatal(err)
	}
	if len(multipart) != 0 || len(objects) != 1 { // the committed blob alone
		t.Errorf("bucket holds %v and multipart uploads %v", objects, multipart)
	}
}

// Parts sent by a chunk that was never recorded, numbered past what the upload finally
// holds, are no part of the blob.
func TestStalePartsPastTheEndAreNotCommitted(t *testing.T) {
	each(t, func(t *testing.T, s blobstore.Store) {
		w := newWriter(t, s, "u")
		write(t, w, random(16<<20)) // three full 5 MiB parts sent, then the request fails
		w.Close()
		w = resume(t, s, "u", 0)
		want := random(6 << 20) // one part and a tail
		write(t, w, want)
		d := oci.FromBytes(oci.SHA256, want)
		if err := w.Commit(d); err != nil {
			t.Fatal(err)
		}
		if got := read(t, s, d); !bytes.Equal(got, want) {
			t.Fatalf("the blob holds %d bytes, want %d", len(got), len(want))
		}
	})
}

// Of indexes claiming one prefix at once, exactly one wins.
func TestOnlyOneIndexWinsARaceForAPrefix(t *testing.T) {
	s := newS3(t)
	for round := range 10 {
		prefix := fmt.Sprintf("race%d", round)
		stores := make([]*blobstore.S3, 4)
		for i := range stores {
			st, err := blobstore.NewS3(context.Background(), withPrefix(server.Options(s.Bucket()), prefix))
			if err != nil {
				t.Fatal(err)
			}
			stores[i] = st
		}
		errs := make(chan error, len(stores))
		for i, st := range stores {
			go func() { errs <- st.Claim(context.Background(), fmt.Sprint("index-", i)) }()
		}
		won := 0
		for range stores {
			if err := <-errs; err == nil {
				won++
			}
		}
		if won != 1 {
			t.Fatalf("round %d: %d of 4 indexes claimed one prefix", round, won)
		}
	}
}

func withPrefix(o blobstore.S3Options, prefix string) blobstore.S3Options {
	o.Prefix = prefix
	return o
}

// An upload whose multipart upload is gone (a commit completed it and then failed, or
// it was aborted) says so — the upload is unknown and must start again —, instead of
// asking the client to try again forever.
func TestAnUploadWhoseMultipartIsGoneIsUnknown(t *testing.T) {
	s := newS3(t)
	ctx := context.Background()
	w := newWriter(t, s, "u")
	write(t, w, random(11<<20))
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	c := server.Client()
	out, err := c.ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: aws.String(s.Bucket())})
	if err != nil || len(out.Uploads) != 1 {
		t.Fatalf("multipart uploads: %v %v", out, err)
	}
	u := out.Uploads[0]
	if _, err := c.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: aws.String(s.Bucket()), Key: u.Key, UploadId: u.UploadId}); err != nil {
		t.Fatal(err)
	}
	w = resume(t, s, "u", 11<<20)
	write(t, w, random(1<<20))
	err = w.Commit(oci.FromBytes(oci.SHA256, []byte("whatever")))
	if !errors.Is(err, blobstore.ErrNotExist) || !errors.Is(err, oci.ErrBlobUploadUnknown) {
		t.Fatalf("commit of an upload whose multipart upload is gone: %v", err)
	}
}

// When slow uploads hold every part buffer, another upload is told to come back (429)
// within the wait bound instead of hanging; once a buffer is free it proceeds.
func TestUploadsWaitForABufferOnlyAWhile(t *testing.T) {
	s, _ := s3test.Store(t, server, func(o *blobstore.S3Options) {
		o.BufferMemory = 2 * blobstore.MinPartSize // two buffers
		o.BufferWait = 200 * time.Millisecond
	})
	ctx := context.Background()
	var holders []blobstore.Writer
	for _, id := range []string{"slow1", "slow2"} {
		w, err := s.NewWriter(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		write(t, w, []byte("a trickle")) // holds a buffer while its body is slow
		holders = append(holders, w)
	}
	w, err := s.NewWriter(ctx, "third")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = w.Write([]byte("x"))
	if !errors.Is(err, oci.ErrTooManyRequests) || time.Since(start) > 10*time.Second {
		t.Fatalf("a write with every buffer held: %v after %v", err, time.Since(start))
	}
	w.Close()
	holders[0].Close()
	w, _ = s.NewWriter(ctx, "fourth")
	defer w.Close()
	if _, err := w.Write([]byte("x")); err != nil {
		t.Fatalf("a write once a buffer is free: %v", err)
	}
	holders[1].Close()
}

// S3 that stops sending in the middle of an object: the read fails within the stall
// bound instead of hanging.
func TestAStalledReadFails(t *testing.T) {
	srv := s3test.Need(t, server)
	target, _ := url.Parse(srv.Endpoint)
	release := make(chan struct{})
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == "GET" && strings.Contains(r.URL.Path, "/blobs/") {
			w = &stallingWriter{ResponseWriter: w, after: 64 << 10, release: release}
		}
		httputil.NewSingleHostReverseProxy(target).ServeHTTP(w, r)
	}))
	defer proxy.Close()
	defer close(release) // before the proxy closes: its stalled handler must end
	s, _ := s3test.Store(t, server, func(o *blobstore.S3Options) {
		o.Endpoint = proxy.URL
		o.StallTimeout = 300 * time.Millisecond
	})
	ctx := context.Background()
	b := random(1 << 20)
	d := oci.FromBytes(oci.SHA256, b)
	w := newWriter(t, s, "x")
	write(t, w, b)
	if err := w.Commit(d); err != nil {
		t.Fatal(err)
	}
	rc, _, err := s.Open(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	done := make(chan error, 1)
	go func() { _, err := io.ReadAll(rc); done <- err }()
	select {
	case err := <-done:
		if !errors.Is(err, oci.ErrStorageUnavailable) {
			t.Errorf("a stalled read: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a read of a stalled object still hangs after 20s")
	}
}

// stallingWriter sends the first after bytes of a body, then waits for release.
type stallingWriter struct {
	http.ResponseWriter
	after   int
	sent    int
	release chan struct{}
}

func (w *stallingWriter) Write(p []byte) (int, error) {
	k := min(len(p), max(w.after-w.sent, 0))
	n, err := w.ResponseWriter.Write(p[:k])
	w.sent += n
	w.ResponseWriter.(http.Flusher).Flush()
	if err != nil || k == len(p) {
		return n, err
	}
	<-w.release // the rest never comes
	return n, io.ErrClosedPipe
}

// Concurrent uploads and deletes in the same directories succeed. versitygw's posix
// backend removes a directory left empty by a delete, and a write into that directory
// racing the removal fails with 409 ExistingObjectIsDirectory: the store retries it
// (seen as a flaky storage migration test before).
func TestConcurrentWritesAndDeletesInOneDirectory(t *testing.T) {
	s := newS3(t)
	ctx := context.Background()
	const workers, rounds = 4, 25
	errs := make(chan error, workers)
	for i := range workers {
		go func() {
			errs <- func() error {
				for r := range rounds {
					id := fmt.Sprintf("w%d-%d", i, r)
					w, err := s.NewWriter(ctx, id)
					if err != nil {
						return err
					}
					b := random(1000)
					if _, err := w.Write(b); err != nil {
						return err
					}
					if err := w.Flush(); err != nil { // a state object in uploads/<id>/
						return fmt.Errorf("flush %s: %w", id, err)
					}
					d := oci.FromBytes(oci.SHA256, b)
					if err := w.Commit(d); err != nil { // uploads/<id>/ emptied and removed
						return fmt.Errorf("commit %s: %w", id, err)
					}
					if err := s.Delete(ctx, d); err != nil {
						return fmt.Errorf("delete %s: %w", d, err)
					}
				}
				return nil
			}()
		}()
	}
	for range workers {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}
