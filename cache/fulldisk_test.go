//go:build linux

package cache

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

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
