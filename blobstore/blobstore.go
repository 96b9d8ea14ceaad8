// Package blobstore keeps blob bytes by digest, and the bytes of uploads in progress,
// on the local filesystem (FS) or in an S3-compatible bucket (S3). It knows nothing
// of repositories, tags, reference counts or HTTP: what is stored, linked and
// collected is decided by package cache, which keeps the index.
//
// Writes are two-phase. A Writer receives an upload's bytes, is made durable up to
// its Size by Flush (so that a later request, after a restart or on another instance
// sharing the store, resumes it with ResumeWriter), and is moved into place as a blob
// by Commit, which only the caller's verification of the digest may call.
package blobstore

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/dockyard/dockyard/oci"
)

// ErrNotExist is returned for a blob or upload the store does not hold.
var ErrNotExist = errors.New("blobstore: content does not exist")

// Store is a blob store.
type Store interface {
	// Stat returns the size of a stored blob.
	Stat(ctx context.Context, d oci.Digest) (int64, error)
	// Open returns the blob's bytes and size. The reader seeks (for range requests);
	// the filesystem store returns an *os.File, which the HTTP layer sends with
	// sendfile.
	Open(ctx context.Context, d oci.Digest) (io.ReadSeekCloser, int64, error)
	// Delete removes a blob; removing a missing blob is not an error.
	Delete(ctx context.Context, d oci.Digest) error
	// Walk calls fn for every stored blob, a page at a time (never the whole listing
	// in memory).
	Walk(ctx context.Context, fn func(Blob) error) error
	// WalkUploads calls fn for every upload the store holds data for, including
	// data no session owns any more (left by a crash), but not the uploads a writer
	// of this process has open (a purge must not remove what is being written).
	WalkUploads(ctx context.Context, fn func(Upload) error) error
	// NewWriter starts upload id, empty and durable at once.
	NewWriter(ctx context.Context, id string) (Writer, error)
	// ResumeWriter continues upload id at offset, which is where the caller's record
	// says it stands (what a Flush made durable): anything written past it is
	// dropped. It returns ErrNotExist when the upload is gone or cannot continue at
	// offset.
	ResumeWriter(ctx context.Context, id string, offset int64) (Writer, error)
	// RemoveUpload deletes an upload's data; a missing upload is not an error.
	RemoveUpload(ctx context.Context, id string) error
	// String names the store in errors and logs (never with credentials).
	String() string
}

// Writer is an upload being written.
type Writer interface {
	io.Writer
	// Size is how many bytes the upload holds, written or resumed.
	Size() int64
	// Flush makes the upload durable up to Size.
	Flush() error
	// ReadBack returns the bytes written so far, to hash them again (a client may
	// finish with another algorithm than the upload was hashed with). After it, the
	// writer may only Commit, Cancel or Close.
	ReadBack() (io.ReadCloser, error)
	// Commit moves the upload into place as blob d; the caller has verified that its
	// bytes are d. The upload's data is gone afterwards.
	Commit(d oci.Digest) error
	// Cancel deletes the upload and its data.
	Cancel() error
	// Close releases the writer. What was written since the last Flush may be lost.
	Close() error
}

// Blob describes a stored blob.
type Blob struct {
	Digest  oci.Digest
	Size    int64
	ModTime time.Time
}

// Upload describes the stored data of an upload.
type Upload struct {
	ID string
	// ModTime is when the upload's data last changed.
	ModTime time.Time
}

// Follower is implemented by writers whose bytes can be read back while they are
// written: the proxy cache serves a blob being fetched to its readers from the file
// the fetch writes, without a copy of its own.
type Follower interface {
	// Follow opens the writer's file for reading.
	Follow() (ReaderAtCloser, error)
}

// ReaderAtCloser reads a file at offsets.
type ReaderAtCloser interface {
	io.ReaderAt
	io.ReadSeekCloser
}

// Filler is implemented by writers that read their input straight into buffers of
// their own (S3's parts): Fill copies r onto the writer, writing every byte to h (the
// caller's hash) as it arrives, with no buffer of the caller's in between.
type Filler interface {
	Fill(r io.Reader, h io.Writer) (int64, error)
}

// Direct is implemented by stores that can write an upload whose digest is known
// before its bytes (a monolithic push) straight to the blob's place, saving the copy
// a commit otherwise makes (S3: the multipart upload is made at the blob's own key and
// becomes visible only when completed). The writer cannot Flush or ReadBack; Commit
// takes only d; Cancel drops what it wrote and leaves upload id's other data alone.
type Direct interface {
	NewBlobWriter(ctx context.Context, id string, d oci.Digest) (Writer, error)
}

// Claimer is implemented by stores that other processes may reach (a bucket): Claim
// records that the store belongs to the index owner names, or fails when it already
// belongs to another. An index collects what it does not know as garbage, so two
// indexes over one store — or an empty index over the blobs of one that was lost —
// would delete each other's content.
type Claimer interface {
	Claim(ctx context.Context, owner string) error
}

// Limiter is implemented by readers Open returns that fetch what they read over the
// network: Limit says the reader will be read n bytes further and no more (a range),
// so that it asks for exactly those. Readers end (io.EOF) at the limit.
type Limiter interface {
	Limit(n int64)
}

// Redirector is implemented by stores that can let clients fetch a blob themselves,
// from a URL valid for a while.
type Redirector interface {
	// Redirects tells whether the store is configured to hand out URLs.
	Redirects() bool
	RedirectURL(ctx context.Context, d oci.Digest) (string, error)
}
