package cache

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"

	"github.com/dockyard/dockyard/blobstore"
	"github.com/dockyard/dockyard/index"
	"github.com/dockyard/dockyard/oci"
)

// StatBlob returns the size of blob d as served through reg/repo: a blob linked to
// the repository, or one of the repository's manifests read as a blob.
func (s *Store) StatBlob(ctx context.Context, reg, repo string, d oci.Digest) (int64, error) {
	v, err := index.GetOne(s.db, linkKey(reg, repo, d)) // the hot path: one key alone
	if err == nil {
		size, _ := binary.Varint(v)
		return size, nil
	}
	if !errors.Is(err, index.ErrNotFound) {
		return 0, err
	}
	var size int64
	err = s.db.View(func(txn index.Txn) error {
		size, err = s.manifestAsBlobSize(txn, reg, repo, d)
		return err
	})
	return size, err
}

func (s *Store) manifestAsBlobSize(txn index.Txn, reg, repo string, d oci.Digest) (int64, error) {
	if ok, err := exists(txn, repoManifestKey(reg, repo, d)); !ok || err != nil {
		if err == nil {
			err = oci.ErrBlobUnknown.WithDetail(map[string]string{"digest": string(d)})
		}
		return 0, err
	}
	v, ok, err := getValue(txn, contentRefsKey(d))
	if !ok || err != nil {
		return 0, errors.Join(err, oci.ErrBlobUnknown)
	}
	return decodeRefRecord(v).Size, nil
}

// Redirect is what OpenBlob returns for a blob the client is to fetch from the blob
// store itself (an S3 bucket with storage.s3.redirect): a presigned URL.
type Redirect struct{ URL string }

func (Redirect) Read([]byte) (int, error)       { return 0, io.EOF }
func (Redirect) Close() error                   { return nil }
func (Redirect) Seek(int64, int) (int64, error) { return 0, nil }

// OpenBlob opens blob d for reading through reg/repo, or returns a Redirect.
func (s *Store) OpenBlob(ctx context.Context, reg, repo string, d oci.Digest) (io.ReadSeekCloser, int64, error) {
	_, err := index.GetOne(s.db, linkKey(reg, repo, d))
	linked := err == nil
	if err != nil && !errors.Is(err, index.ErrNotFound) {
		return nil, 0, err
	}
	if !linked {
		// A manifest may be fetched through the blobs endpoint too.
		m, err := s.getManifest(ctx, reg, repo, oci.Reference{Digest: d})
		if err != nil {
			return nil, 0, oci.ErrBlobUnknown.WithDetail(map[string]string{"digest": string(d)})
		}
		return nopCloser{bytes.NewReader(m.Content)}, int64(len(m.Content)), nil
	}
	if s.redirect != nil {
		u, err := s.redirect.RedirectURL(ctx, d)
		if err != nil {
			return nil, 0, err
		}
		return Redirect{URL: u}, -1, nil
	}
	rc, size, err := s.blobs.Open(ctx, d)
	if errors.Is(err, blobstore.ErrNotExist) {
		s.log.Error("index links a blob whose file is missing", "registry", reg, "repo", repo, "digest", d)
		return nil, 0, oci.ErrBlobUnknown.WithDetail(map[string]string{"digest": string(d)})
	}
	return rc, size, err
}

// DeleteBlob unlinks blob d from reg/repo. The bytes stay until garbage collection
// finds no manifest referencing them. protect (nil: nothing is protected) is asked, in
// the deleting transaction, about the tags of every manifest of the repository that
// lists the blob and of the indexes above them: an immutable release keeps its layers.
func (s *Store) DeleteBlob(ctx context.Context, reg, repo string, d oci.Digest, protect Protect) error {
	return s.updateFreeing(func(txn index.Txn) error {
		lk := linkKey(reg, repo, d)
		if ok, err := exists(txn, lk); !ok || err != nil {
			if err == nil {
				err = oci.ErrBlobUnknown.WithDetail(map[string]string{"digest": string(d)})
			}
			return err
		}
		if protect != nil {
			if err := s.protectBlob(txn, reg, repo, d, protect); err != nil {
				return err
			}
		}
		if err := txn.Delete(lk); err != nil {
			return err
		}
		return txn.Delete(linkByDigestKey(d, reg, repo))
	})
}

// MountBlob links blob d, already stored, into reg/repo. With from set the blob must be
// linked to reg/from; with from empty any stored copy will do. ok is false when there
// is nothing to mount, and the caller starts an ordinary upload instead.
func (s *Store) MountBlob(ctx context.Context, reg, repo, from string, d oci.Digest) (size int64, ok bool, err error) {
	err = s.update(func(txn index.Txn) error {
		var v []byte
		var found bool
		var err error
		if from != "" {
			v, found, err = getValue(txn, linkKey(reg, from, d))
			if found {
				size, _ = binary.Varint(v)
			}
		} else {
			v, found, err = getValue(txn, blobKey(d))
			if found {
				size = decodeRefRecord(v).Size
			}
		}
		if !found || err != nil {
			ok = false
			return err
		}
		ok = true
		return s.linkBlob(txn, reg, repo, d, size)
	})
	return size, ok, err
}

// linkBlob makes blob d servable through reg/repo. The blob's record is created the
// first time (taking over references that waited for it) and its grace period starts
// again while nothing references it, so a blob being reused is not collected under the
// client's feet.
func (s *Store) linkBlob(txn index.Txn, reg, repo string, d oci.Digest, size int64) error {
	if err := s.ensureRecord(txn, kindBlob, d, size); err != nil {
		return err
	}
	lk := linkKey(reg, repo, d)
	if ok, err := exists(txn, lk); ok || err != nil {
		return err
	}
	if err := txn.Set(lk, binary.AppendVarint(nil, size)); err != nil {
		return err
	}
	if err := txn.Set(linkByDigestKey(d, reg, repo), nil); err != nil {
		return err
	}
	return s.touchRepo(txn, reg, repo)
}

// recordKey is the key of the reference record of kind (kindBlob or kindContentRefs)
// for d.
func recordKey(kind byte, d oci.Digest) []byte { return key(kind, string(d)) }

// ensureRecord creates the reference record of kind for content d, counting the
// pending references to it, or refreshes the grace period of an unreferenced one.
func (s *Store) ensureRecord(txn index.Txn, kind byte, d oci.Digest, size int64) error {
	k := recordKey(kind, d)
	v, ok, err := getValue(txn, k)
	if err != nil {
		return err
	}
	r := refRecord{Size: size}
	if ok {
		if r = decodeRefRecord(v); r.Refs > 0 {
			return nil
		}
	} else {
		// Read the mark every new pending reference writes: a reference committed
		// after this transaction started, which the scan below cannot see, then makes
		// the transaction conflict and run again.
		mark := pendingMarkKey(kind, d)
		if _, err := exists(txn, mark); err != nil {
			return err
		}
		pending, err := keysWithPrefix(txn, prefix(pendingKind(kind), string(d)))
		if err != nil {
			return err
		}
		for _, pk := range pending {
			if err := txn.Delete(pk); err != nil {
				return err
			}
		}
		if err := txn.Delete(mark); err != nil {
			return err
		}
		r.Refs = int64(len(pending))
	}
	r.ZeroSince = 0
	if r.Refs == 0 {
		r.ZeroSince = s.now().UnixNano()
	}
	if hookBeforeRecordCommit != nil {
		hookBeforeRecordCommit(d)
	}
	return txn.Set(k, r.encode())
}

// hookBeforeRecordCommit, set by tests only, runs inside the transaction creating a
// content record, after it has counted the pending references.
var hookBeforeRecordCommit func(d oci.Digest)

// reference counts one more reference from manifest `from` to content d (a record of
// kind kindBlob or kindContentRefs), or records it as pending when d is not stored yet.
func (s *Store) reference(txn index.Txn, kind byte, d, from oci.Digest) error {
	ok, err := exists(txn, recordKey(kind, d))
	if err != nil {
		return err
	}
	if ok {
		return s.addRef(txn, recordKey(kind, d), 0, 1)
	}
	pk := pendingKey(kind, d, from)
	if ok, err := exists(txn, pk); ok || err != nil {
		return err
	}
	if err := txn.Set(pk, nil); err != nil {
		return err
	}
	return s.movePendingMark(txn, kind, d, 1)
}

// unreference drops what reference counted.
func (s *Store) unreference(txn index.Txn, kind byte, d, from oci.Digest) error {
	pk := pendingKey(kind, d, from)
	ok, err := exists(txn, pk)
	if err != nil {
		return err
	}
	if ok {
		if err := txn.Delete(pk); err != nil {
			return err
		}
		return s.movePendingMark(txn, kind, d, -1)
	}
	return s.addRef(txn, recordKey(kind, d), 0, -1)
}

// movePendingMark moves the count of pending references to d kept in its mark.
func (s *Store) movePendingMark(txn index.Txn, kind byte, d oci.Digest, delta int64) error {
	mk := pendingMarkKey(kind, d)
	v, _, err := getValue(txn, mk)
	if err != nil {
		return err
	}
	n, _ := binary.Varint(v)
	if n += delta; n <= 0 {
		return txn.Delete(mk)
	}
	return txn.Set(mk, binary.AppendVarint(nil, n))
}

type nopCloser struct{ io.ReadSeeker }

func (nopCloser) Close() error { return nil }

// HasBlob reports whether blob d is stored, whichever repositories link it.
func (s *Store) HasBlob(d oci.Digest) (size int64, ok bool, err error) {
	err = s.db.View(func(txn index.Txn) error {
		v, found, err := getValue(txn, blobKey(d))
		if found {
			size, ok = decodeRefRecord(v).Size, true
		}
		return err
	})
	return size, ok, err
}

// BlobRepositories lists the repositories of reg that blob d is linked to.
func (s *Store) BlobRepositories(ctx context.Context, reg string, d oci.Digest) ([]string, error) {
	var out []string
	err := s.db.View(func(txn index.Txn) error {
		p := prefix(kindLinkByDigest, string(d), reg)
		keys, err := keysWithPrefix(txn, p)
		for _, k := range keys {
			out = append(out, string(k[len(p):]))
		}
		return err
	})
	return out, err
}
