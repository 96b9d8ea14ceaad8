package cache

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dockyard/dockyard/index"
	"github.com/dockyard/dockyard/oci"
)

func openWith(t *testing.T, dir string, o Options) *Store {
	t.Helper()
	o.Dir = dir
	o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// slowReader sends a little, then says it is waiting and sends the rest once
// released: a slow client in the middle of its body.
type slowReader struct {
	left    int
	waiting chan<- struct{}
	release <-chan struct{}
	sent    int
}

func (r *slowReader) Read(p []byte) (int, error) {
	if r.left == 0 {
		return 0, io.EOF
	}
	if r.sent > 0 && r.waiting != nil {
		r.waiting <- struct{}{}
		r.waiting = nil
		<-r.release
	}
	n := min(len(p), r.left, 1000)
	for i := range n {
		p[i] = 'x'
	}
	r.left -= n
	r.sent += n
	return n, nil
}

// Copy buffers come from a bounded pool: more slow uploads than it can serve, all in
// the middle of their bodies at once, hold no more than its bound (the rest copy
// through a small buffer of their own), and all complete.
func TestUploadBuffersAreBounded(t *testing.T) {
	s := openWith(t, t.TempDir(), Options{UploadBuffers: 4 * copyBufSize}) // one upload's worth
	defer s.Close()
	ctx := context.Background()
	const uploads = 8
	waiting, release := make(chan struct{}), make(chan struct{})
	errs := make(chan error, uploads)
	for range uploads {
		go func() {
			u, err := s.StartUpload(ctx, "dev", "app", oci.SHA256)
			if err == nil {
				_, err = s.AppendUpload(ctx, "dev", "app", u.ID, 0, &slowReader{left: 3 << 20, waiting: waiting, release: release}, -1)
			}
			errs <- err
		}()
	}
	for range uploads {
		<-waiting
	}
	s.buffers.mu.Lock()
	made := s.buffers.made
	s.buffers.mu.Unlock()
	if inUse := s.buffers.inUse(); inUse != 4 || made > 4 {
		t.Errorf("with %d uploads copying: %d pooled buffers in use, %d made; bound 4", uploads, inUse, made)
	}
	close(release)
	for range uploads {
		if err := <-errs; err != nil {
			t.Errorf("an upload failed: %v", err)
		}
	}
	if inUse := s.buffers.inUse(); inUse != 0 {
		t.Errorf("%d pooled buffers still taken after every upload ended", inUse)
	}
}

// failingWriter fails every write.
type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk gone") }

// countingReader counts what was read from it.
type countingReader struct{ n, max int64 }

func (r *countingReader) Read(p []byte) (int, error) {
	if r.n >= r.max {
		return 0, io.EOF
	}
	k := min(int64(len(p)), r.max-r.n)
	r.n += k
	return int(k), nil
}

// A copy whose writes fail stops reading the client's body.
func TestACopyStopsReadingAtTheFirstWriteError(t *testing.T) {
	s := testStore(t, nil)
	r := &countingReader{max: 256 << 20}
	if _, err := s.copyHashing(failingWriter{}, sha256.New(), r, 0); err == nil {
		t.Fatal("the copy succeeded")
	}
	if r.n > 8*copyBufSize {
		t.Errorf("read %d bytes after the first write failed", r.n)
	}
}

// The manifest cache holds at most its size in bytes.
func TestManifestCacheIsBoundedInBytes(t *testing.T) {
	c := newManifestCache(100 << 10)
	for i := range 50 {
		b := []byte(strings.Repeat(string(rune('a'+i%26)), 30<<10))
		c.add(oci.FromBytes(oci.SHA256, append(b, byte(i))), b)
		if c.size() > 100<<10 {
			t.Fatalf("%d bytes held after %d entries, bound %d", c.size(), i+1, 100<<10)
		}
	}
	if c.len() != 3 {
		t.Errorf("%d entries of 30 KiB held in 100 KiB", c.len())
	}
}

// Each client may have a bounded number of uploads open; finishing or cancelling one
// frees a slot, and the count survives a restart.
func TestOpenUploadsPerClientAreBounded(t *testing.T) {
	dir := t.TempDir()
	s := openWith(t, dir, Options{MaxSessionsPerClient: 2})
	alice, bob := WithClient(context.Background(), "user alice"), WithClient(context.Background(), "user bob")
	u1, err := s.StartUpload(alice, "dev", "app", oci.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.StartUpload(alice, "dev", "app", oci.SHA256); err != nil {
		t.Fatal(err)
	}
	tooMany := func(err error) bool { return errors.Is(err, oci.ErrTooManyRequests) }
	if _, err := s.StartUpload(alice, "dev", "app", oci.SHA256); !tooMany(err) {
		t.Errorf("alice's third upload: %v, want TOOMANYREQUESTS", err)
	}
	if _, err := s.PutBlob(alice, "dev", "app", oci.FromBytes(oci.SHA256, []byte("x")), strings.NewReader("x"), 1); !tooMany(err) {
		t.Errorf("alice's monolithic upload at the limit: %v", err)
	}
	if _, err := s.StartUpload(bob, "dev", "app", oci.SHA256); err != nil {
		t.Errorf("bob: %v", err)
	}
	s.Close()
	s = openWith(t, dir, Options{MaxSessionsPerClient: 2})
	defer s.Close()
	if _, err := s.StartUpload(alice, "dev", "app", oci.SHA256); !tooMany(err) {
		t.Errorf("alice's third upload after a restart: %v", err)
	}
	if err := s.CancelUpload(alice, "dev", "app", u1.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.StartUpload(alice, "dev", "app", oci.SHA256); err != nil {
		t.Errorf("alice after cancelling one: %v", err)
	}
}

// Under the free-space reserve uploads are refused, and a chunk crossing it stops and
// leaves its session as it was; with room again, uploads go on.
func TestUploadsStopAtTheFreeSpaceReserve(t *testing.T) {
	var free atomic.Int64
	free.Store(1 << 40)
	s := openWith(t, t.TempDir(), Options{MinFreeSpace: 1 << 30, FreeSpace: func() (int64, error) { return free.Load(), nil }})
	defer s.Close()
	ctx := context.Background()
	full := func(err error) bool { return errors.Is(err, oci.ErrStorageFull) }
	u, err := s.StartUpload(ctx, "dev", "app", oci.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	// The disk fills while a 40 MiB chunk is written.
	r := &countingReader{max: 40 << 20}
	filling := io.TeeReader(r, writerFunc(func(p []byte) (int, error) {
		if r.n > 20<<20 {
			free.Store(1 << 20)
		}
		return len(p), nil
	}))
	if _, err := s.AppendUpload(ctx, "dev", "app", u.ID, 0, filling, -1); !full(err) {
		t.Fatalf("a chunk crossing the reserve: %v", err)
	}
	if got, _ := s.GetUpload(ctx, "dev", "app", u.ID); got.Offset != 0 {
		t.Errorf("the failed chunk left the upload at %d bytes", got.Offset)
	}
	if _, err := s.StartUpload(ctx, "dev", "app", oci.SHA256); !full(err) {
		t.Errorf("a new upload under the reserve: %v", err)
	}
	if _, err := s.PutBlob(ctx, "dev", "app", oci.FromBytes(oci.SHA256, []byte("x")), strings.NewReader("x"), 1); !full(err) {
		t.Errorf("a monolithic upload under the reserve: %v", err)
	}
	free.Store(1 << 40)
	if _, err := s.AppendUpload(ctx, "dev", "app", u.ID, 0, strings.NewReader("room again"), 10); err != nil {
		t.Errorf("with room again: %v", err)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// A client's slot is freed when its upload is finished or purged, not only cancelled.
func TestAFinishedOrPurgedUploadFreesItsSlot(t *testing.T) {
	c := &clock{now: time.Unix(1e9, 0)}
	s := openWith(t, t.TempDir(), Options{MaxSessionsPerClient: 1, Now: c.Now})
	defer s.Close()
	alice := WithClient(context.Background(), "user alice")
	tooMany := func(err error) bool { return errors.Is(err, oci.ErrTooManyRequests) }
	u, err := s.StartUpload(alice, "dev", "app", oci.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.StartUpload(alice, "dev", "app", oci.SHA256); !tooMany(err) {
		t.Fatalf("a second upload over the limit of 1: %v", err)
	}
	body := "the blob"
	if _, err := s.FinishUpload(alice, "dev", "app", u.ID, oci.FromBytes(oci.SHA256, []byte(body)), 0, strings.NewReader(body), int64(len(body))); err != nil {
		t.Fatal(err)
	}
	if _, err := s.StartUpload(alice, "dev", "app", oci.SHA256); err != nil {
		t.Fatalf("after finishing the first: %v", err)
	}
	c.Add(25 * time.Hour)
	if n, err := s.PurgeUploads(context.Background(), 24*time.Hour); err != nil || n != 1 {
		t.Fatalf("purge: %d %v", n, err)
	}
	if _, err := s.StartUpload(alice, "dev", "app", oci.SHA256); err != nil {
		t.Errorf("after the open one was purged: %v", err)
	}
}

// A monolithic upload counts as one of its client's uploads while it runs.
func TestAMonolithicUploadCountsWhileItRuns(t *testing.T) {
	s := openWith(t, t.TempDir(), Options{MaxSessionsPerClient: 1})
	defer s.Close()
	alice := WithClient(context.Background(), "user alice")
	waiting, release := make(chan struct{}), make(chan struct{})
	body := &slowReader{left: 5000, waiting: waiting, release: release}
	put := make(chan error, 1)
	go func() {
		_, err := s.PutBlob(alice, "dev", "app", oci.FromBytes(oci.SHA256, []byte(strings.Repeat("x", 5000))), body, 5000)
		put <- err
	}()
	<-waiting
	if _, err := s.StartUpload(alice, "dev", "app", oci.SHA256); !errors.Is(err, oci.ErrTooManyRequests) {
		t.Errorf("an upload while the monolithic one runs: %v, want TOOMANYREQUESTS", err)
	}
	close(release)
	if err := <-put; err != nil {
		t.Fatal(err)
	}
	if _, err := s.StartUpload(alice, "dev", "app", oci.SHA256); err != nil {
		t.Errorf("after the monolithic upload: %v", err)
	}
}

// A Badger index on the data directory's filesystem needs room there (a full disk
// under it kills the process): uploads stop at twice its reserve, even with no
// storage.min_free_space, so that it keeps room for the deletes that free space.
func TestUploadsLeaveTheIndexItsRoom(t *testing.T) {
	var free atomic.Int64
	free.Store(1 << 40)
	s := openWith(t, t.TempDir(), Options{MemTableSize: 1 << 20, FreeSpace: func() (int64, error) { return free.Load(), nil }})
	defer s.Close()
	ctx := context.Background()
	free.Store(2*4<<20 - 1) // twice four 1 MiB memtables, less a byte
	if _, err := s.StartUpload(ctx, "dev", "app", oci.SHA256); !errors.Is(err, oci.ErrStorageFull) || !strings.Contains(err.Error(), "kept for the index") {
		t.Fatalf("an upload into the index's room: %v", err)
	}
	free.Store(2 * 4 << 20)
	if _, err := s.StartUpload(ctx, "dev", "app", oci.SHA256); err != nil {
		t.Errorf("an upload above the index's room: %v", err)
	}
}

// A chunk the blob store took but the index had no room to record is dropped at once:
// its bytes would hold the space that is short until the upload resumed or was
// purged. Sent again with room, it is taken.
func TestAChunkTheIndexCannotRecordGivesItsSpaceBack(t *testing.T) {
	dir := t.TempDir()
	var indexFree atomic.Int64
	indexFree.Store(1 << 40)
	db, err := index.OpenBadger(index.BadgerOptions{Dir: filepath.Join(dir, "index"), MemTableSize: 1 << 20,
		FreeSpace: func() (int64, error) { return indexFree.Load(), nil }})
	if err != nil {
		t.Fatal(err)
	}
	s := openWith(t, dir, Options{Index: db})
	defer s.Close()
	ctx := context.Background()
	u, err := s.StartUpload(ctx, "dev", "app", oci.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	chunk := strings.Repeat("a chunk ", 128<<10)
	indexFree.Store(0)
	if _, err := s.AppendUpload(ctx, "dev", "app", u.ID, 0, strings.NewReader(chunk), int64(len(chunk))); !errors.Is(err, oci.ErrStorageFull) {
		t.Fatalf("a chunk the index cannot record: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "uploads", u.ID)); err != nil || fi.Size() != 0 {
		t.Fatalf("the upload's file after the refused chunk: %v bytes, %v", fi.Size(), err)
	}
	indexFree.Store(1 << 40)
	if _, err := s.AppendUpload(ctx, "dev", "app", u.ID, 0, strings.NewReader(chunk), int64(len(chunk))); err != nil {
		t.Fatalf("the chunk sent again: %v", err)
	}
	if _, err := s.FinishUpload(ctx, "dev", "app", u.ID, oci.FromBytes(oci.SHA256, []byte(chunk)), -1, nil, -1); err != nil {
		t.Fatal(err)
	}
}
