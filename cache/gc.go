package cache

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/dockyard/dockyard/oci"
)

// Garbage collection is online: it runs while pushes and pulls go on. It deletes
// manifests and blobs whose reference count is zero and has been zero for longer than
// a grace period, in batches whose transaction re-checks every count (a concurrent push
// that references the content makes the transaction conflict and retry, and the
// content stays). A blob's index record (and its links) go first and its file second, under
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
	cutoff := s.now().Add(-opts.Grace).UnixNano()
	for round := 0; round < 64; round++ {
		r, err := s.collectOnce(ctx, cutoff, opts.DryRun)
		total.Manifests += r.Manifests
		total.Blobs += r.Blobs
		total.Bytes += r.Bytes
		if err != nil {
			return total, err
		}
		if opts.DryRun || r.Manifests+r.Blobs == 0 {
			break
		}
		// What this round released became unreferenced now: with a grace period it
		// waits for a later collection.
		if opts.Grace > 0 {
			break
		}
		cutoff = s.now().Add(-opts.Grace).UnixNano()
	}
	orphans, err := s.removeOrphanFiles(cutoff, opts.DryRun)
	total.OrphanFiles = orphans
	return total, err
}

// gcBatch is how many deletions share one index transaction (and one disk sync).
const gcBatch = 256

func (s *Store) collectOnce(ctx context.Context, cutoff int64, dryRun bool) (GCReport, error) {
	var r GCReport
	manifests, err := s.unreferenced(kindContentRefs, cutoff)
	if err != nil {
		return r, err
	}
	for i := 0; i < len(manifests); i += gcBatch {
		if err := ctx.Err(); err != nil {
			return r, err
		}
		batch := manifests[i:min(i+gcBatch, len(manifests))]
		if dryRun {
			r.Manifests += len(batch)
			continue
		}
		n, err := s.deleteContents(batch, cutoff)
		r.Manifests += n
		if err != nil {
			return r, err
		}
	}
	blobs, err := s.unreferenced(kindBlob, cutoff)
	if err != nil {
		return r, err
	}
	for i := 0; i < len(blobs); i += gcBatch {
		if err := ctx.Err(); err != nil {
			return r, err
		}
		batch := blobs[i:min(i+gcBatch, len(blobs))]
		if dryRun {
			r.Blobs += len(batch)
			continue
		}
		n, bytes, err := s.deleteBlobs(batch, cutoff)
		r.Blobs += n
		r.Bytes += bytes
		if err != nil {
			return r, err
		}
	}
	return r, nil
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

// deleteContents deletes manifest bytes nothing references and releases what they
// reference, in one transaction that re-checks every count.
func (s *Store) deleteContents(batch []oci.Digest, cutoff int64) (int, error) {
	var deleted []oci.Digest
	err := s.update(func(txn *badger.Txn) error {
		deleted = deleted[:0]
		for _, d := range batch {
			_, ok, err := stillUnreferenced(txn, contentRefsKey(d), cutoff)
			if err != nil {
				return err
			}
			if !ok {
				continue
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
					if err := s.unreference(txn, kindBlob, b, d); err != nil {
						return err
					}
				}
				for _, c := range h.Children {
					if err := s.unreference(txn, kindContentRefs, c, d); err != nil {
						return err
					}
				}
				if err := txn.Delete(contentKey(d)); err != nil {
					return err
				}
			}
			if err := txn.Delete(contentRefsKey(d)); err != nil {
				return err
			}
			deleted = append(deleted, d)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	for _, d := range deleted {
		s.contents.Remove(d)
	}
	return len(deleted), nil
}

// deleteBlobs deletes unreferenced blobs: their records and links first, in one
// transaction, then their files, all under the blobs' locks so that a concurrent
// upload of the same digest cannot slip a fresh file in between.
func (s *Store) deleteBlobs(batch []oci.Digest, cutoff int64) (int, int64, error) {
	sorted := append([]oci.Digest(nil), batch...)
	slices.Sort(sorted) // a fixed order: GC is the only holder of several locks
	for _, d := range sorted {
		defer s.blobLocks.lock(string(d))()
	}
	var deleted []oci.Digest
	var bytes int64
	err := s.update(func(txn *badger.Txn) error {
		deleted, bytes = deleted[:0], 0
		for _, d := range sorted {
			r, ok, err := stillUnreferenced(txn, blobKey(d), cutoff)
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
			if err := s.dropBlobRecord(txn, d); err != nil {
				return err
			}
			deleted = append(deleted, d)
			bytes += r.Size
		}
		return nil
	})
	if err != nil {
		return 0, 0, err
	}
	for _, d := range deleted {
		if err := s.blobs.Delete(d); err != nil {
			return len(deleted), bytes, err
		}
	}
	return len(deleted), bytes, nil
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
