package cache

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"

	"github.com/dgraph-io/badger/v4"

	"github.com/dockyard/dockyard/oci"
)

// StatBlob returns the size of blob d as served through reg/repo: a blob linked to
// the repository, or one of the repository's manifests read as a blob.
func (s *Store) StatBlob(ctx context.Context, reg, repo string, d oci.Digest) (int64, error) {
	var size int64
	err := s.db.View(func(txn *badger.Txn) error {
		v, ok, err := getValue(txn, linkKey(reg, repo, d))
		if err != nil {
			return err
		}
		if ok {
			size, _ = binary.Varint(v)
			return nil
		}
		size, err = s.manifestAsBlobSize(txn, reg, repo, d)
		return err
	})
	return size, err
}

func (s *Store) manifestAsBlobSize(txn *badger.Txn, reg, repo string, d oci.Digest) (int64, error) {
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

// OpenBlob opens blob d for reading through reg/repo.
func (s *Store) OpenBlob(ctx context.Context, reg, repo string, d oci.Digest) (io.ReadSeekCloser, int64, error) {
	var linked bool
	err := s.db.View(func(txn *badger.Txn) (err error) {
		linked, err = exists(txn, linkKey(reg, repo, d))
		return err
	})
	if err != nil {
		return nil, 0, err
	}
	if !linked {
		// A manifest may be fetched through the blobs endpoint too.
		m, err := s.GetManifest(ctx, reg, repo, oci.Reference{Digest: d})
		if err != nil {
			return nil, 0, oci.ErrBlobUnknown.WithDetail(map[string]string{"digest": string(d)})
		}
		return nopCloser{bytes.NewReader(m.Content)}, int64(len(m.Content)), nil
	}
	rc, size, err := s.blobs.Open(d)
	if errors.Is(err, ErrNotExist) {
		s.log.Error("index links a blob whose file is missing", "registry", reg, "repo", repo, "digest", d)
		return nil, 0, oci.ErrBlobUnknown.WithDetail(map[string]string{"digest": string(d)})
	}
	return rc, size, err
}

// DeleteBlob unlinks blob d from reg/repo. The bytes stay until garbage collection
// finds no reference left.
func (s *Store) DeleteBlob(ctx context.Context, reg, repo string, d oci.Digest) error {
	return s.update(func(txn *badger.Txn) error {
		lk := linkKey(reg, repo, d)
		if ok, err := exists(txn, lk); !ok || err != nil {
			if err == nil {
				err = oci.ErrBlobUnknown.WithDetail(map[string]string{"digest": string(d)})
			}
			return err
		}
		if err := txn.Delete(lk); err != nil {
			return err
		}
		return s.addRef(txn, blobKey(d), 0, -1)
	})
}

// MountBlob links blob d, already stored, into reg/repo. With from set the blob must be
// linked to reg/from; with from empty any stored copy will do. ok is false when there
// is nothing to mount, and the caller starts an ordinary upload instead.
func (s *Store) MountBlob(ctx context.Context, reg, repo, from string, d oci.Digest) (size int64, ok bool, err error) {
	err = s.update(func(txn *badger.Txn) error {
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

// linkBlob makes blob d servable through reg/repo, counting the new reference.
func (s *Store) linkBlob(txn *badger.Txn, reg, repo string, d oci.Digest, size int64) error {
	lk := linkKey(reg, repo, d)
	if ok, err := exists(txn, lk); ok || err != nil {
		return err
	}
	if err := txn.Set(lk, binary.AppendVarint(nil, size)); err != nil {
		return err
	}
	if err := s.addRef(txn, blobKey(d), size, 1); err != nil {
		return err
	}
	return s.touchRepo(txn, reg, repo)
}

type nopCloser struct{ io.ReadSeeker }

func (nopCloser) Close() error { return nil }

// HasBlob reports whether blob d is stored, whichever repositories link it.
func (s *Store) HasBlob(d oci.Digest) (size int64, ok bool, err error) {
	err = s.db.View(func(txn *badger.Txn) error {
		v, found, err := getValue(txn, blobKey(d))
		if found {
			size, ok = decodeRefRecord(v).Size, true
		}
		return err
	})
	return size, ok, err
}
