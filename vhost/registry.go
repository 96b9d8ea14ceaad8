// Package vhost owns the virtual-registry model: the Registry interface every kind of
// registry serves (hosted, proxy, group), split into what every registry reads and
// what only some accept as writes, and the Router that resolves a request's host,
// repository and ns parameter to a registry. It does not parse HTTP.
package vhost

import (
	"context"
	"io"

	"github.com/dockyard/dockyard/cache"
	"github.com/dockyard/dockyard/oci"
)

// Registry is one virtual registry. Every registry reads; Writer says whether it takes
// writes (pushes and deletes) and returns what takes them.
type Registry interface {
	Name() string
	Reader
	// Writer returns what accepts the registry's writes, or a DENIED error saying why
	// the registry takes none (a proxy is a read-only cache; a group writes only
	// through its push member).
	Writer() (Writer, error)
}

// Reader reads blobs, manifests and listings.
type Reader interface {
	StatBlob(ctx context.Context, repo oci.Repository, d oci.Digest) (int64, error)
	// OpenBlob returns the blob's bytes and size (-1 if unknown). Local blobs are an
	// *os.File (sent with sendfile) and seekable; a blob still arriving from an
	// upstream is a stream.
	OpenBlob(ctx context.Context, repo oci.Repository, d oci.Digest) (io.ReadCloser, int64, error)
	// GetManifest returns a manifest for a pull (GET): lifecycle rules count it.
	GetManifest(ctx context.Context, repo oci.Repository, ref oci.Reference) (*cache.StoredManifest, error)
	// HeadManifest returns the same without counting a pull: update checkers HEAD
	// manifests all day, and that is not use.
	HeadManifest(ctx context.Context, repo oci.Repository, ref oci.Reference) (*cache.StoredManifest, error)
	Tags(ctx context.Context, repo oci.Repository, last string, n int) ([]string, bool, error)
	Catalog(ctx context.Context, last string, n int) ([]string, bool, error)
	Referrers(ctx context.Context, repo oci.Repository, d oci.Digest) ([]oci.Descriptor, error)
}

// Writer receives blobs and manifests and deletes them.
type Writer interface {
	DeleteBlob(ctx context.Context, repo oci.Repository, d oci.Digest) error
	StartUpload(ctx context.Context, repo oci.Repository, alg oci.Algorithm) (*cache.Upload, error)
	// MountBlob links a stored blob into repo; ok is false when it cannot.
	MountBlob(ctx context.Context, repo, from oci.Repository, d oci.Digest) (size int64, ok bool, err error)
	PutBlob(ctx context.Context, repo oci.Repository, d oci.Digest, r io.Reader, length int64) (int64, error)
	GetUpload(ctx context.Context, repo oci.Repository, id string) (*cache.Upload, error)
	AppendUpload(ctx context.Context, repo oci.Repository, id string, start int64, r io.Reader, length int64) (*cache.Upload, error)
	FinishUpload(ctx context.Context, repo oci.Repository, id string, d oci.Digest, start int64, r io.Reader, length int64) (int64, error)
	CancelUpload(ctx context.Context, repo oci.Repository, id string) error
	PutManifest(ctx context.Context, p ManifestPush) (*PushResult, error)
	DeleteManifest(ctx context.Context, repo oci.Repository, ref oci.Reference) error
}

// local is a registry with storage of its own: Local reads it without any upstream
// request (a group asks there first for digests).
type local interface {
	Local() *Hosted
}

// BlobLocator is a registry that can say which of its repositories hold a blob (to
// authorise a mount that names no source).
type BlobLocator interface {
	BlobRepositories(ctx context.Context, d oci.Digest) ([]oci.Repository, error)
}

var (
	_ Registry    = (*Hosted)(nil)
	_ Registry    = (*Proxy)(nil)
	_ Registry    = (*Group)(nil)
	_ Writer      = (*Hosted)(nil)
	_ BlobLocator = (*Hosted)(nil)
	_ BlobLocator = (*Group)(nil)
)

// ManifestPush is a manifest PUT.
type ManifestPush struct {
	Repo        oci.Repository
	Reference   oci.Reference
	ContentType string
	Content     []byte
	// Tags are extra tags from `tag` query parameters (push by digest).
	Tags []oci.Tag
}

// PushResult tells the client what was stored.
type PushResult struct {
	Digest    oci.Digest
	MediaType string     // the manifest's, as stored (not the request's Content-Type)
	Subject   oci.Digest // set when the manifest has a subject
	Tags      []oci.Tag  // the tags that now point at the manifest
}
