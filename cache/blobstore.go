package cache

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/dockyard/dockyard/oci"
)

// ErrNotExist is returned by a BlobStore for content it does not hold.
var ErrNotExist = errors.New("cache: content does not exist")

// BlobStore keeps blob bytes by digest and the files of uploads in progress. Writes are
// two-phase: an upload file is written and synced, then committed into place
// atomically. It is deliberately small so that an object-store implementation can
// stand beside the filesystem one.
type BlobStore interface {
	// Open returns the blob's bytes and size. The filesystem store returns an *os.File
	// so the HTTP layer can send it with sendfile.
	Open(d oci.Digest) (io.ReadSeekCloser, int64, error)
	// Stat returns the size of a stored blob.
	Stat(d oci.Digest) (int64, error)
	// Delete removes a blob; removing a missing blob is not an error.
	Delete(d oci.Digest) error
	// OpenUpload opens the upload file id for appending at offset, creating it when
	// offset is 0 and dropping anything past offset.
	OpenUpload(id string, offset int64) (UploadFile, error)
	// ReadUpload reads an upload file from the start (to re-hash it).
	ReadUpload(id string) (io.ReadCloser, error)
	// Commit moves a finished, synced upload into place as blob d.
	Commit(id string, d oci.Digest) error
	// RemoveUpload deletes an upload file; a missing one is not an error.
	RemoveUpload(id string) error
}

// UploadFile is an upload being appended to.
type UploadFile interface {
	io.Writer
	// Sync makes what was written durable.
	Sync() error
	// Truncate drops everything past size (to undo a failed chunk).
	Truncate(size int64) error
	Close() error
}

// FSBlobStore keeps blobs under root/blobs/<alg>/<first two hex>/<hex> and uploads
// under root/uploads/<id>.
type FSBlobStore struct {
	root string
}

// NewFSBlobStore prepares the directories below root.
func NewFSBlobStore(root string) (*FSBlobStore, error) {
	for _, dir := range []string{"blobs", "uploads"} {
		if err := os.MkdirAll(filepath.Join(root, dir), 0o755); err != nil {
			return nil, err
		}
	}
	return &FSBlobStore{root: root}, nil
}

func (s *FSBlobStore) blobPath(d oci.Digest) string {
	enc := d.Encoded()
	return filepath.Join(s.root, "blobs", string(d.Algorithm()), enc[:2], enc)
}

func (s *FSBlobStore) uploadPath(id string) string {
	return filepath.Join(s.root, "uploads", id)
}

func (s *FSBlobStore) Open(d oci.Digest) (io.ReadSeekCloser, int64, error) {
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

func (s *FSBlobStore) Stat(d oci.Digest) (int64, error) {
	fi, err := os.Stat(s.blobPath(d))
	if err != nil {
		return 0, notExist(err)
	}
	return fi.Size(), nil
}

func (s *FSBlobStore) Delete(d oci.Digest) error {
	if err := os.Remove(s.blobPath(d)); err != nil && !os.IsNotExist(err) {
		return err
	}
	return nil
}

func (s *FSBlobStore) OpenUpload(id string, offset int64) (UploadFile, error) {
	flags := os.O_WRONLY
	if offset == 0 {
		flags |= os.O_CREATE
	}
	f, err := os.OpenFile(s.uploadPath(id), flags, 0o644)
	if err != nil {
		return nil, notExist(err)
	}
	fi, err := f.Stat()
	if err == nil && fi.Size() < offset {
		err = fmt.Errorf("cache: upload %s holds %d bytes, expected %d", id, fi.Size(), offset)
	}
	if err == nil && fi.Size() > offset {
		err = f.Truncate(offset)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return &fsUpload{f: f, direct: openDirect(s.uploadPath(id)), off: offset}, nil
}

// fsUpload appends to an upload file. Whole aligned blocks go through a second
// descriptor opened with O_DIRECT: they reach the disk without passing through (and
// allocating) the page cache, which on virtual machines is the slowest part of an
// upload, and the fsync that closes the upload has little left to flush. Unaligned
// heads and tails go through the ordinary descriptor, and so does data that is not
// aligned in memory: an aligned copy of it would be a buffer per upload outside the
// shared pool's bound. Uploads copy through pooled buffers, aligned in memory, and
// read up to a block boundary first (copyHashing), so their writes stay direct.
type fsUpload struct {
	f      *os.File
	direct *os.File // nil when the filesystem has no O_DIRECT
	off    int64
}

func (u *fsUpload) Write(p []byte) (int, error) {
	written := 0
	write := func(f *os.File, b []byte) error {
		n, err := f.WriteAt(b, u.off)
		u.off += int64(n)
		written += n
		return err
	}
	if u.direct == nil {
		return written, write(u.f, p)
	}
	if rem := int(u.off % directAlign); rem != 0 {
		head := min(directAlign-rem, len(p))
		if err := write(u.f, p[:head]); err != nil {
			return written, err
		}
		p = p[head:]
	}
	if body := len(p) / directAlign * directAlign; body > 0 && isAligned(p) {
		if err := write(u.direct, p[:body]); err != nil {
			return written, err
		}
		p = p[body:]
	}
	if len(p) > 0 {
		return written, write(u.f, p)
	}
	return written, nil
}

func (u *fsUpload) Sync() error               { return u.f.Sync() }
func (u *fsUpload) Truncate(size int64) error { return u.f.Truncate(size) }

func (u *fsUpload) Close() error {
	if u.direct != nil {
		u.direct.Close()
	}
	return u.f.Close()
}

func (s *FSBlobStore) ReadUpload(id string) (io.ReadCloser, error) {
	f, err := os.Open(s.uploadPath(id))
	if err != nil {
		return nil, notExist(err)
	}
	return f, nil
}

func (s *FSBlobStore) Commit(id string, d oci.Digest) error {
	dst := s.blobPath(d)
	dir := filepath.Dir(dst)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := os.Rename(s.uploadPath(id), dst); err != nil {
		return err
	}
	return syncDir(dir)
}

func (s *FSBlobStore) RemoveUpload(id string) error {
	if err := os.Remove(s.uploadPath(id)); err != nil && !os.IsNotExist(err) {
		return err
	}
	return nil
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

func notExist(err error) error {
	if os.IsNotExist(err) {
		return fmt.Errorf("%w: %v", ErrNotExist, err)
	}
	return err
}
