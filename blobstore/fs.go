package blobstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"unsafe"

	"github.com/dockyard/dockyard/oci"
)

// BlockSize is the alignment O_DIRECT needs for file offsets, lengths and memory.
// Callers that copy into a Writer through buffers aligned to it, starting at a block
// boundary, let the filesystem store write past the page cache.
const BlockSize = 4096

// FS keeps blobs under root/blobs/<alg>/<first two hex>/<hex> and uploads under
// root/uploads/<id>. A commit is a rename, made durable with the directory's fsync.
// A write the filesystem has no room for fails with oci.ErrStorageFull, and what it
// wrote of an upload is dropped when its writer is closed.
type FS struct {
	root string
	// active counts the writers open in this process by upload id: WalkUploads does
	// not report them (as S3 does not).
	mu     sync.Mutex
	active map[string]int
}

// NewFS prepares the directories below root.
func NewFS(root string) (*FS, error) {
	for _, dir := range []string{"blobs", "uploads"} {
		if err := os.MkdirAll(filepath.Join(root, dir), 0o755); err != nil {
			return nil, err
		}
	}
	return &FS{root: root, active: map[string]int{}}, nil
}

func (s *FS) String() string { return "filesystem " + s.root }

func (s *FS) blobPath(d oci.Digest) string {
	enc := d.Encoded()
	return filepath.Join(s.root, "blobs", string(d.Algorithm()), enc[:2], enc)
}

func (s *FS) uploadPath(id string) string {
	return filepath.Join(s.root, "uploads", id)
}

func (s *FS) Open(_ context.Context, d oci.Digest) (io.ReadSeekCloser, int64, error) {
	f, err := os.Open(s.blobPath(d))
	if err != nil {
		return nil, 0, notExist(err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, fi.Size(), nil
}

func (s *FS) Stat(_ context.Context, d oci.Digest) (int64, error) {
	fi, err := os.Stat(s.blobPath(d))
	if err != nil {
		return 0, notExist(err)
	}
	return fi.Size(), nil
}

func (s *FS) Delete(_ context.Context, d oci.Digest) error {
	if err := os.Remove(s.blobPath(d)); err != nil && !os.IsNotExist(err) {
		return err
	}
	return nil
}

func (s *FS) Walk(ctx context.Context, fn func(Blob) error) error {
	root := filepath.Join(s.root, "blobs")
	return filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		parts := strings.Split(rel, string(filepath.Separator))
		if len(parts) != 3 {
			return nil
		}
		d, perr := oci.ParseDigest(parts[0] + ":" + parts[2])
		if perr != nil {
			return nil
		}
		info, ierr := e.Info()
		if ierr != nil {
			return nil
		}
		return fn(Blob{Digest: d, Size: info.Size(), ModTime: info.ModTime()})
	})
}

func (s *FS) WalkUploads(ctx context.Context, fn func(Upload) error) error {
	entries, err := os.ReadDir(filepath.Join(s.root, "uploads"))
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		info, err := e.Info()
		if err != nil || s.isActive(e.Name()) {
			continue
		}
		if err := fn(Upload{ID: e.Name(), ModTime: info.ModTime()}); err != nil {
			return err
		}
	}
	return nil
}

func (s *FS) NewWriter(_ context.Context, id string) (Writer, error) {
	f, err := os.OpenFile(s.uploadPath(id), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, full(err)
	}
	return s.writer(id, f, 0), nil
}

func (s *FS) ResumeWriter(_ context.Context, id string, offset int64) (Writer, error) {
	f, err := os.OpenFile(s.uploadPath(id), os.O_WRONLY, 0o644)
	if err != nil {
		return nil, notExist(err)
	}
	fi, err := f.Stat()
	if err == nil && fi.Size() < offset {
		err = fmt.Errorf("%w: upload %s holds %d bytes, expected %d", ErrNotExist, id, fi.Size(), offset)
	}
	if err == nil && fi.Size() > offset {
		err = f.Truncate(offset)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return s.writer(id, f, offset), nil
}

func (s *FS) isActive(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.active[id] > 0
}

func (s *FS) hold(id string, delta int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.active[id] += delta; s.active[id] <= 0 {
		delete(s.active, id)
	}
}

func (s *FS) writer(id string, f *os.File, off int64) *fsWriter {
	s.hold(id, 1)
	return &fsWriter{s: s, id: id, f: f, direct: openDirect(s.uploadPath(id)), off: off, flushed: off}
}

func (s *FS) RemoveUpload(_ context.Context, id string) error {
	if err := os.Remove(s.uploadPath(id)); err != nil && !os.IsNotExist(err) {
		return err
	}
	return nil
}

// fsWriter appends to an upload file. Whole aligned blocks go through a second
// descriptor opened with O_DIRECT: they reach the disk without passing through (and
// allocating) the page cache, which on virtual machines is the slowest part of an
// upload, and the fsync that closes the upload has little left to flush. Unaligned
// heads and tails go through the ordinary descriptor, and so does data that is not
// aligned in memory: an aligned copy of it would be a buffer per upload outside the
// caller's bound on copy buffers.
type fsWriter struct {
	s      *FS
	id     string
	f      *os.File
	direct *os.File // nil when the filesystem has no O_DIRECT
	off    int64
	// flushed is what the upload holds durably (at the start, what it resumed at):
	// Close drops what lies past it, so a chunk that failed (a full disk) leaves
	// neither its bytes nor the space they take.
	flushed int64
	closed  bool
}

func (w *fsWriter) Write(p []byte) (int, error) {
	written := 0
	write := func(f *os.File, b []byte) error {
		n, err := f.WriteAt(b, w.off)
		w.off += int64(n)
		written += n
		return err
	}
	if w.direct == nil {
		return written, full(write(w.f, p))
	}
	if rem := int(w.off % BlockSize); rem != 0 {
		head := min(BlockSize-rem, len(p))
		if err := write(w.f, p[:head]); err != nil {
			return written, full(err)
		}
		p = p[head:]
	}
	if body := len(p) / BlockSize * BlockSize; body > 0 && isAligned(p) {
		if err := write(w.direct, p[:body]); err != nil {
			return written, full(err)
		}
		p = p[body:]
	}
	if len(p) > 0 {
		return written, full(write(w.f, p))
	}
	return written, nil
}

func (w *fsWriter) Size() int64 { return w.off }

func (w *fsWriter) Flush() error {
	if err := w.f.Sync(); err != nil {
		return full(err)
	}
	w.flushed = w.off
	return nil
}

func (w *fsWriter) ReadBack() (io.ReadCloser, error) {
	f, err := os.Open(w.s.uploadPath(w.id))
	if err != nil {
		return nil, notExist(err)
	}
	return f, nil
}

func (w *fsWriter) Follow() (ReaderAtCloser, error) {
	return os.Open(w.s.uploadPath(w.id))
}

func (w *fsWriter) Commit(d oci.Digest) error {
	if err := w.Flush(); err != nil {
		return err
	}
	w.Close()
	dst := w.s.blobPath(d)
	dir := filepath.Dir(dst)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return full(err)
	}
	if err := os.Rename(w.s.uploadPath(w.id), dst); err != nil {
		return full(notExist(err))
	}
	return full(syncDir(dir))
}

func (w *fsWriter) Cancel() error {
	w.Close()
	return w.s.RemoveUpload(context.Background(), w.id)
}

func (w *fsWriter) Close() error {
	if w.closed {
		return nil
	}
	w.closed = true
	w.s.hold(w.id, -1)
	if w.direct != nil {
		w.direct.Close()
	}
	if w.off > w.flushed {
		w.f.Truncate(w.flushed)
	}
	return w.f.Close()
}

// syncDir makes a rename into dir durable.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// full marks a failure for want of space (the filesystem's, or a quota) as
// ErrStorageFull.
func full(err error) error {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return fmt.Errorf("%w: %w", oci.ErrStorageFull.Withf("the registry's storage is full: no room for blob data; free some space"), err)
	}
	return err
}

func notExist(err error) error {
	if os.IsNotExist(err) {
		return fmt.Errorf("%w: %v", ErrNotExist, err)
	}
	return err
}

func isAligned(b []byte) bool {
	return len(b) == 0 || uintptr(unsafe.Pointer(&b[0]))%BlockSize == 0
}
