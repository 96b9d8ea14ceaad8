package cache

import (
	"context"
	"crypto/sha256"
	"io"
	"runtime"
	"strings"
	"testing"

	"github.com/dockyard/dockyard/oci"
)

// zeros is a body of n zero bytes.
type zeros struct{ left int }

func (z *zeros) Read(p []byte) (int, error) {
	if z.left == 0 {
		return 0, io.EOF
	}
	n := min(len(p), z.left)
	clear(p[:n])
	z.left -= n
	return n, nil
}

// allocated is how many bytes fn allocates.
func allocated(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// A chunk that starts in the middle of a disk block (the previous chunk had an odd
// size) copies through the pooled buffers like any other: it takes no buffer of its
// own outside the pool's bound.
func TestAChunkAtAnOddOffsetTakesNoMemoryOutsideThePool(t *testing.T) {
	s := testStore(t, nil)
	ctx := context.Background()
	u, err := s.StartUpload(ctx, "dev", "app", oci.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if u, err = s.AppendUpload(ctx, "dev", "app", u.ID, 0, strings.NewReader("x"), 1); err != nil {
		t.Fatal(err)
	}
	// The first chunk through the pool makes its buffers; later ones reuse them.
	if u, err = s.AppendUpload(ctx, "dev", "app", u.ID, u.Offset, &zeros{4 << 20}, -1); err != nil {
		t.Fatal(err)
	}
	n := allocated(func() {
		if u, err = s.AppendUpload(ctx, "dev", "app", u.ID, u.Offset, &zeros{4 << 20}, -1); err != nil {
			t.Fatal(err)
		}
	})
	if n > 128<<10 {
		t.Errorf("a 4 MiB chunk at offset %d allocated %d KiB", u.Offset-4<<20, n>>10)
	}
}

// writeSizes records the size of every write.
type writeSizes []int

func (w *writeSizes) Write(p []byte) (int, error) {
	*w = append(*w, len(p))
	return len(p), nil
}

// A chunk starting mid-block first reads up to the block boundary, so every later
// buffer lands whole and aligned in the file and goes to the disk directly.
func TestAChunkAtAnOddOffsetReadsUpToTheBlockBoundaryFirst(t *testing.T) {
	s := testStore(t, nil)
	var w writeSizes
	if _, err := s.copyHashing(&w, sha256.New(), &zeros{1 << 20}, directAlign-1); err != nil {
		t.Fatal(err)
	}
	if len(w) < 2 || w[0] != directAlign-1 {
		t.Fatalf("writes %v, want %d bytes first", w, directAlign-1)
	}
	for _, n := range w[1 : len(w)-1] {
		if n%directAlign != 0 {
			t.Fatalf("writes %v: a middle write is not whole blocks", w)
		}
	}
}
