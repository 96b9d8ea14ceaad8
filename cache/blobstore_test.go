package cache

import (
	"bytes"
	"crypto/rand"
	"io"
	"testing"
)

// Uploads arrive in chunks of any size; the O_DIRECT path must write every byte where
// it belongs whatever the alignment of offsets, lengths and memory.
func TestUploadFileWritesUnalignedChunks(t *testing.T) {
	s, err := NewFSBlobStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	probe, err := s.OpenUpload("probe", 0)
	if err != nil {
		t.Fatal(err)
	}
	direct := probe.(*fsUpload).direct != nil
	probe.Close()
	if !direct {
		t.Skip("O_DIRECT is unavailable on this filesystem (tmpfs?): the aligned path cannot be exercised here")
	}
	want := make([]byte, 3*directAlign*64+123)
	rand.Read(want)
	var off int64
	sizes := []int{1, 4095, 4096, 4097, 300000, 7, 262144, 65536 + 3}
	for i := 0; off < int64(len(want)); i++ {
		n := min(sizes[i%len(sizes)], len(want)-int(off))
		f, err := s.OpenUpload("u", off) // reopened every chunk, as across PATCH requests
		if err != nil {
			t.Fatal(err)
		}
		// Write from an unaligned address half of the time.
		src := want[off : off+int64(n)]
		if i%2 == 1 {
			b := make([]byte, n+1)
			copy(b[1:], src)
			src = b[1:]
		}
		if w, err := f.Write(src); err != nil || w != n {
			t.Fatalf("write %d bytes at %d: %d, %v", n, off, w, err)
		}
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
		f.Close()
		off += int64(n)
	}
	rc, err := s.ReadUpload("u")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got, _ := io.ReadAll(rc)
	if !bytes.Equal(got, want) {
		t.Fatalf("upload file differs from what was written (%d vs %d bytes)", len(got), len(want))
	}
	// Reopening at an earlier offset drops what follows (a failed chunk is undone).
	f, err := s.OpenUpload("u", 5000)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	rc2, _ := s.ReadUpload("u")
	defer rc2.Close()
	if got, _ := io.ReadAll(rc2); !bytes.Equal(got, want[:5000]) {
		t.Fatalf("after cutting back: %d bytes", len(got))
	}
}
