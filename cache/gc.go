package cache

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/dockyard/dockyard/oci"
)

// Garbage collection is online: it runs while pushes and pulls go on. It deletes
// manifests and blobs whose reference count is zero and has been zero for longer than
// a grace period, each in its own transaction that re-checks the count (a concurrent
// push that references the content makes the transaction conflict, and the content
// stays). A blob's index record (and its links) go first and its file second, under
// the blob's lock, so a crash never leaves the index pointing at a missing file; a
// file left without a record is removed by a later run.

// GCOptions tune a collection.
type GCOptions struct {
	// Grace is how long content must have been unreferenced (default 1h).
	Grace time.Duration
	// DryRun reports what would be deleted without deleting it.
	DryRun bool
}

// GCReport says what a collection did (or would do).
type GCReport struct {
	Manifests   int   `json:"manifests"`
	Blobs       int   `json:"blobs"`
	Bytes       int64 `json:"bytes"`
	OrphanFiles int   `json:"orphanFiles"`
}

// CollectGarbage deletes what nothing references. Deleting a manifest releases what it
// references; those are collected once their own grace period is over (at once when
// Grace is zero: the collection repeats until nothing more goes).
func (s *Store) CollectGarbage(ctx context.Context, opts GCOptions) (GCReport, error) {
	var total GCReport
	for round := 0; round < 64; round++ {
		r, err := s.collectOnce(ctx, opts)
		total.Manifests += r.Manifests
		total.Blobs += r.Blobs
		total.Bytes += r.Bytes
		total.OrphanFiles += r.OrphanFiles
		if err != nil || opts.DryRun || r.Manifests+r.Blobs == 0 {
			return total, err
		}
	}
	return total, nil
}

func (s *Store) collectOnce(ctx context.Context, opts GCOptions) (GCReport, error) {
	var r GCReport
	cutoff := s.now().Add(-opts.Grace).UnixNano()
	manifests, err := s.unreferenced(kindContentRefs, cutoff)
	if err != nil {
		return r, err
	}
	for _, d := range manifests {
		if err := ctx.Err(); err != nil {
			return r, err
		}
		if opts.DryRun {
			r.Manifests++
			continue
		}
		deleted, err := s.deleteContent(d, cutoff)
		if err != nil {
			return r, err
		}
		if deleted {
			r.Manifests++
		}
	}
	blobs, err := s.unreferenced(kindBlob, cutoff)
	if err != nil {
		return r, err
	}
	for _, d := range blobs {
		if err := ctx.Err(); err != nil {
			return r, err
		}
		if opts.DryRun {
			r.Blobs++
			continue
		}
		size, deleted, err := s.deleteBlob(d, cutoff)
		if err != nil {
			return r, err
		}
		if deleted {
			r.Blobs++
			r.Bytes += size
		}
	}
	orphans, err := s.removeOrphanFiles(cutoff, opts.DryRun)
	r.OrphanFiles = orphans
	return r, err
}

// unreferenced lists the digests of records of kind whose count has been zero since
// before cutoff.
func (s *Store) unreferenced(kind byte, cutoff int64) ([]oci.Digest, error) {
	var out []oci.Digest
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, Prefix: []byte{kind}})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var r refRecord
			if err := it.Item().Value(func(v []byte) error { r = decodeRefRecord(v); return nil }); err != nil {
				return err
			}
			if r.Refs == 0 && r.ZeroSince != 0 && r.ZeroSince <= cutoff {
				out = append(out, oci.Digest(it.Item().Key()[1:]))
			}
		}
		return nil
	})
	return out, err
}

// stillUnreferenced re-reads a record inside a deleting transaction.
func stillUnreferenced(txn *badger.Txn, k []byte, cutoff int64) (refRecord, bool, error) {
	v, ok, err := getValue(txn, k)
	if !ok || err != nil {
		return refRecord{}, false, err
	}
	r := decodeRefRecord(v)
	return r, r.Refs == 0 && r.ZeroSince != 0 && r.ZeroSince <= cutoff, nil
}

// deleteContent deletes manifest bytes nothing references and releases what they
// reference.
func (s *Store) deleteContent(d oci.Digest, cutoff int64) (bool, error) {
	var deleted bool
	err := s.update(func(txn *badger.Txn) error {
		deleted = false
		_, ok, err := stillUnreferenced(txn, contentRefsKey(d), cutoff)
		if !ok || err != nil {
			return err
		}
		item, err := txn.Get(contentKey(d))
		if err != nil && !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		if err == nil {
			var h contentHeader
			if err := item.Value(func(v []byte) (err error) { h, _, err = decodeContent(v); return err }); err != nil {
				return err
			}
			for _, b := range h.Blobs {
				if err := s.unreference(txn, blobKey(b), b, d); err != nil {
					return err
				}
			}
			for _, c := range h.Children {
				if err := s.unreference(txn, contentRefsKey(c), c, d); err != nil {
					return err
				}
			}
			if err := txn.Delete(contentKey(d)); err != nil {
				return err
			}
		}
		deleted = true
		return txn.Delete(contentRefsKey(d))
	})
	if deleted {
		s.contents.Remove(d)
	}
	return deleted, err
}

// deleteBlob deletes an unreferenced blob: its record and links first, then its file,
// under the blob's lock so that a concurrent upload of the same digest cannot slip a
// fresh file in between.
func (s *Store) deleteBlob(d oci.Digest, cutoff int64) (int64, bool, error) {
	defer s.blobLocks.lock(string(d))()
	var size int64
	var deleted bool
	err := s.update(func(txn *badger.Txn) error {
		deleted = false
		r, ok, err := stillUnreferenced(txn, blobKey(d), cutoff)
		if !ok || err != nil {
			return err
		}
		links, err := keysWithPrefix(txn, prefix(kindLinkByDigest, string(d)))
		if err != nil {
			return err
		}
		for _, lk := range links {
			reg, repo, _ := strings.Cut(string(lk[len(prefix(kindLinkByDigest, string(d))):]), "\x00")
			if err := txn.Delete(linkKey(reg, repo, d)); err != nil {
				return err
			}
			if err := txn.Delete(lk); err != nil {
				return err
			}
		}
		size, deleted = r.Size, true
		return txn.Delete(blobKey(d))
	})
	if err != nil || !deleted {
		return 0, false, err
	}
	return size, true, s.blobs.Delete(d)
}

// removeOrphanFiles deletes blob files without an index record (left by a crash
// between the two steps of a deletion, or of a commit) once they are older than the
// grace period.
func (s *Store) removeOrphanFiles(cutoff int64, dryRun bool) (int, error) {
	fsStore, ok := s.blobs.(*FSBlobStore)
	if !ok {
		return 0, nil
	}
	n := 0
	root := filepath.Join(fsStore.root, "blobs")
	err := filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return nil
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
		if ierr != nil || info.ModTime().UnixNano() > cutoff {
			return nil
		}
		unlock := s.blobLocks.lock(string(d))
		defer unlock()
		has, herr := s.hasRecord(blobKey(d))
		if herr != nil || has {
			return herr
		}
		n++
		if !dryRun {
			return os.Remove(path)
		}
		return nil
	})
	return n, err
}

func (s *Store) hasRecord(k []byte) (ok bool, err error) {
	err = s.db.View(func(txn *badger.Txn) error {
		ok, err = exists(txn, k)
		return err
	})
	return ok, err
}

// PurgeUploads drops upload sessions started before maxAge ago and upload files no
// session owns that are older than that. It returns how many were removed.
func (s *Store) PurgeUploads(ctx context.Context, maxAge time.Duration) (int, error) {
	cutoff := s.now().Add(-maxAge)
	live := map[string]bool{}
	var stale []string
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, Prefix: []byte{kindUpload}})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var u Upload
			if err := it.Item().Value(func(v []byte) error { return json.Unmarshal(v, &u) }); err != nil {
				return err
			}
			if u.StartedAt.Before(cutoff) {
				stale = append(stale, u.ID)
			} else {
				live[u.ID] = true
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, id := range stale {
		unlock := s.uploadLocks.lock(id)
		err := s.update(func(txn *badger.Txn) error { return txn.Delete(uploadKey(id)) })
		if err == nil {
			err = s.blobs.RemoveUpload(id)
		}
		unlock()
		if err != nil {
			return n, err
		}
		n++
	}
	fsStore, ok := s.blobs.(*FSBlobStore)
	if !ok {
		return n, nil
	}
	entries, err := os.ReadDir(filepath.Join(fsStore.root, "uploads"))
	if err != nil {
		return n, err
	}
	for _, e := range entries {
		info, err := e.Info()
		if err != nil || live[e.Name()] || info.ModTime().After(cutoff) {
			continue
		}
		if os.Remove(filepath.Join(fsStore.root, "uploads", e.Name())) == nil {
			n++
		}
	}
	return n, nil
}
