//go:build linux

package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dockyard/dockyard/index"
	"github.com/dockyard/dockyard/oci"
)

// fakeDisk is a filesystem of capacity bytes holding the store's directory: its free
// space is what the files under the directory leave of it (the blocks they take: the
// unwritten parts of Badger's sparse files take none).
type fakeDisk struct {
	dir      string
	capacity atomic.Int64
}

func newFakeDisk(dir string) *fakeDisk {
	d := &fakeDisk{dir: dir}
	d.capacity.Store(1 << 40)
	return d
}

func (d *fakeDisk) used() int64 {
	var used int64
	filepath.WalkDir(d.dir, func(_ string, e fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if fi, err := e.Info(); err == nil {
			used += fi.Sys().(*syscall.Stat_t).Blocks * 512
		}
		return nil
	})
	return used
}

func (d *fakeDisk) free() (int64, error) { return d.capacity.Load() - d.used(), nil }

// leave makes the disk's capacity what is used now and room more.
func (d *fakeDisk) leave(room int64) { d.capacity.Store(d.used() + room) }

// paddedManifest is an image manifest over base's config and layers with an
// annotation of pad bytes, its own for each i.
func paddedManifest(t *testing.T, base []byte, i, pad int) []byte {
	t.Helper()
	m, err := oci.ParseManifest("", base)
	if err != nil {
		t.Fatal(err)
	}
	padding := fmt.Sprintf("%06d", i) + strings.Repeat("x", pad)
	return imageManifest(desc(mtConfig, m.Config.Digest, int(m.Config.Size)),
		desc(mtLayer, m.Layers[0].Digest, int(m.Layers[0].Size))+`],"annotations":{"padding":"`+padding+`"},"x":[`)
}

// Manifests obey the floor uploads do (storage.min_free_space, and the room kept for an
// index on the filesystem): pushed one after another, they stop there, and the writes
// that free space — deleting tags, manifests and blobs, collecting garbage,
// cancelling and purging uploads — go on. Manifests used to go on to the index's own
// reserve, where the index refused every write, those that free space included.
func TestManifestsLeaveTheIndexRoomForTheWritesThatFreeSpace(t *testing.T) {
	dir := t.TempDir()
	disk := newFakeDisk(dir)
	c := &clock{now: time.Unix(1e9, 0)}
	// The index keeps 4 MiB (four 1 MiB memtables): new content stops at 8 MiB free.
	db, err := index.OpenBadger(index.BadgerOptions{Dir: filepath.Join(dir, "index"), MemTableSize: 1 << 20, FreeSpace: disk.free})
	if err != nil {
		t.Fatal(err)
	}
	s := openWith(t, dir, Options{Index: db, FreeSpace: disk.free, Now: c.Now})
	defer s.Close()
	ctx := context.Background()
	base := image(t, s, "dev", "app", "base")
	putManifest(t, s, "dev", "app", base, false, "base")
	cancelled, err := s.StartUpload(ctx, "dev", "app", oci.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.StartUpload(ctx, "dev", "app", oci.SHA256); err != nil {
		t.Fatal(err)
	}
	disk.leave(16 << 20)
	var pushed []oci.Digest
	for i := 0; ; i++ {
		// 256 KiB each: in Badger's value log.
		d, err := tryPutManifest(s, "dev", "app", paddedManifest(t, base, i, 256<<10), false, oci.Tag(fmt.Sprint("t", i)))
		if errors.Is(err, oci.ErrStorageFull) {
			t.Logf("%d manifests pushed; the next: %v", i, err)
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if pushed = append(pushed, d); i == 100 {
			t.Fatal("100 manifests of 256 KiB pushed on 16 MiB")
		}
	}
	if free, _ := disk.free(); free < 8<<20-512<<10 {
		t.Errorf("%d KiB free after the manifests: they went past the floor of 8 MiB", free>>10)
	}
	if err := s.DeleteTag(ctx, "dev", "app", "t0", nil); err != nil {
		t.Errorf("delete a tag: %v", err)
	}
	for _, d := range pushed[1:] {
		if err := s.DeleteManifest(ctx, "dev", "app", d, nil); err != nil {
			t.Fatalf("delete a manifest: %v", err)
		}
	}
	if err := s.CancelUpload(ctx, "dev", "app", cancelled.ID); err != nil {
		t.Errorf("cancel an upload: %v", err)
	}
	c.Add(48 * time.Hour)
	if n, err := s.PurgeUploads(ctx, 24*time.Hour); err != nil || n != 1 {
		t.Errorf("purge an upload: %d %v", n, err)
	}
	if err := s.DeleteManifest(ctx, "dev", "app", pushed[0], nil); err != nil {
		t.Errorf("delete a manifest: %v", err)
	}
	rep, err := s.CollectGarbage(ctx, GCOptions{})
	if err != nil || rep.Manifests != len(pushed) {
		t.Errorf("collect: %+v %v, want %d manifests", rep, err, len(pushed))
	}
	if got := tagOf(t, s, "dev", "app", "base"); got == "" {
		t.Errorf("the image kept is gone")
	}
	clean(t, s)
}

// gatedReader says when it is first read, then waits for its gate to open.
type gatedReader struct {
	r     io.Reader
	first sync.Once
	read  func()
	gate  <-chan struct{}
}

func (g *gatedReader) Read(p []byte) (int, error) {
	g.first.Do(func() { g.read(); <-g.gate })
	return g.r.Read(p)
}

// Uploads written at once stop at the floor together: each holds the room it writes
// into, a MiB ahead of its writes, so chunks arriving together cannot take the
// filesystem under the floor that each alone keeps. A chunk of less than a MiB was
// checked once, before its first byte, and a burst of them went far under it.
func TestConcurrentUploadsStopAtTheFloorTogether(t *testing.T) {
	dir := t.TempDir()
	disk := newFakeDisk(dir)
	// The index keeps 4 MiB (four 1 MiB memtables) on the filesystem: uploads stop at
	// 8 MiB free.
	s := openWith(t, dir, Options{MemTableSize: 1 << 20, FreeSpace: disk.free})
	defer s.Close()
	ctx := context.Background()
	const uploads, chunk, room = 48, 1<<20 - 1, 8<<20 + 12<<20
	var ids []string
	for range uploads {
		u, err := s.StartUpload(ctx, "dev", "app", oci.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, u.ID)
	}
	disk.leave(room)
	var reading, done sync.WaitGroup
	reading.Add(uploads)
	gate := make(chan struct{})
	errs := make([]error, uploads)
	for i, id := range ids {
		done.Add(1)
		go func() {
			defer done.Done()
			body := &gatedReader{r: strings.NewReader(strings.Repeat("x", chunk)), read: reading.Done, gate: gate}
			_, errs[i] = s.AppendUpload(ctx, "dev", "app", id, 0, body, chunk)
		}()
	}
	reading.Wait() // every chunk past the check before its first byte
	close(gate)
	done.Wait()
	taken := 0
	for _, err := range errs {
		switch {
		case err == nil:
			taken++
		case !errors.Is(err, oci.ErrStorageFull):
			t.Errorf("a chunk: %v", err)
		}
	}
	free, _ := disk.free()
	t.Logf("%d of %d chunks of a MiB taken with 12 MiB over the floor; %d KiB free", taken, uploads, free>>10)
	if free < 8<<20-512<<10 {
		t.Errorf("%d KiB free after the chunks: they went past the floor of 8 MiB", free>>10)
	}
	if taken == 0 {
		t.Errorf("no chunk taken")
	}
}

// The jobs that free space go on under the index's reserve too, down to its floor:
// retention (which writes the pulls it decides on first) and the eviction of a proxy's
// cache; the periodic write of pulls, which frees nothing, waits for room.
func TestRetentionAndEvictionGoOnUnderTheIndexReserve(t *testing.T) {
	dir := t.TempDir()
	var free atomic.Int64
	free.Store(1 << 40)
	db, err := index.OpenBadger(index.BadgerOptions{Dir: filepath.Join(dir, "index"), MemTableSize: 1 << 20,
		FreeSpace: func() (int64, error) { return free.Load(), nil }})
	if err != nil {
		t.Fatal(err)
	}
	c := &clock{now: time.Unix(1e9, 0)}
	s := openWith(t, dir, Options{Index: db, Now: c.Now})
	defer s.Close()
	ctx := context.Background()
	d := putManifest(t, s, "dev", "app", image(t, s, "dev", "app", "kept"), false, "1.0")
	putManifest(t, s, "up", "lib", image(t, s, "up", "lib", "cached"), false, "latest")
	s.RecordPull("dev", "app", "1.0", d)
	free.Store(db.Reserve() - 1)
	if err := s.FlushAccess(); !errors.Is(err, oci.ErrStorageFull) {
		t.Errorf("the periodic write of pulls under the reserve: %v", err)
	}
	infos, err := s.TagInfos(ctx, "dev", "app")
	if err != nil || len(infos) != 1 || infos[0].PulledAt.IsZero() {
		t.Fatalf("retention's view under the reserve: %+v %v", infos, err)
	}
	c.Add(time.Hour)
	if deleted, err := s.DeleteTagIf(ctx, "dev", "app", "1.0", d, c.Now()); err != nil || !deleted {
		t.Errorf("retention's delete under the reserve: %v %v", deleted, err)
	}
	if rep, err := s.EvictCache(ctx, "up", 0, time.Minute); err != nil || rep.Manifests != 1 {
		t.Errorf("eviction under the reserve: %+v %v", rep, err)
	}
}
