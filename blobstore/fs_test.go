package blobstore

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/dockyard/dockyard/oci"
)

// Uploads arrive in chunks of any size; the O_DIRECT path must write every byte where
// it belongs whatever the alignment of offsets, lengths and memory.
func TestUploadFileWritesUnalignedChunks(t *testing.T) {
	ctx := context.Background()
	s, err := NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	w, err := s.NewWriter(ctx, "u")
	if err != nil {
		t.Fatal(err)
	}
	direct := w.(*fsWriter).direct != nil
	w.Close()
	if !direct {
		t.Skip("O_DIRECT is unavailable on this filesystem (tmpfs?): the aligned path cannot be exercised here")
	}
	want := make([]byte, 3*BlockSize*64+123)
	rand.Read(want)
	var off int64
	sizes := []int{1, 4095, 4096, 4097, 300000, 7, 262144, 65536 + 3}
	for i := 0; off < int64(len(want)); i++ {
		n := min(sizes[i%len(sizes)], len(want)-int(off))
		w, err := s.ResumeWriter(ctx, "u", off) // reopened every chunk, as across PATCH requests
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
		if k, err := w.Write(src); err != nil || k != n {
			t.Fatalf("write %d bytes at %d: %d, %v", n, off, k, err)
		}
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		w.Close()
		off += int64(n)
	}
	readBack := func(off int64) []byte {
		w, err := s.ResumeWriter(ctx, "u", off)
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		rc, err := w.ReadBack()
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		got, _ := io.ReadAll(rc)
		return got
	}
	if got := readBack(off); !bytes.Equal(got, want) {
		t.Fatalf("upload file differs from what was written (%d vs %d bytes)", len(got), len(want))
	}
	// Resuming at an earlier offset drops what follows (a failed chunk is undone).
	if got := readBack(5000); !bytes.Equal(got, want[:5000]) {
		t.Fatalf("after cutting back: %d bytes", len(got))
	}
}

// A writer closed without a flush keeps only what was flushed: the bytes of a chunk
// that failed (a full disk) do not go on taking space until the upload resumes or is
// purged.
func TestClosingDropsWhatWasNotFlushed(t *testing.T) {
	ctx := context.Background()
	s, err := NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	w, err := s.NewWriter(ctx, "u")
	if err != nil {
		t.Fatal(err)
	}
	head := make([]byte, 5000)
	w.Write(head)
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	w.Write(make([]byte, 3<<20))
	w.Close()
	if fi, err := os.Stat(s.uploadPath("u")); err != nil || fi.Size() != int64(len(head)) {
		t.Fatalf("upload file after a close: %v, %v; want the %d flushed bytes", fi.Size(), err, len(head))
	}
	w, err = s.ResumeWriter(ctx, "u", int64(len(head)))
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("tail"))
	d := oci.FromBytes(oci.SHA256, append(head, "tail"...))
	if err := w.Commit(d); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Stat(ctx, d); err != nil || n != int64(len(head))+4 {
		t.Fatalf("committed blob: %d bytes, %v", n, err)
	}
}

// A write the filesystem has no room for fails as the registry's storage being full
// (507 to clients), not as an internal error. /dev/full answers every write with
// ENOSPC.
func TestAWriteWithoutRoomIsStorageFull(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full here")
	}
	ctx := context.Background()
	s, err := NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/dev/full", filepath.Join(s.root, "uploads", "u")); err != nil {
		t.Fatal(err)
	}
	w, err := s.ResumeWriter(ctx, "u", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := w.Write(make([]byte, 3*BlockSize)); !errors.Is(err, oci.ErrStorageFull) {
		t.Fatalf("a write into a full filesystem: %v, want the storage-full error", err)
	}
}
