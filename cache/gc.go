package cache

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/dockyard/dockyard/blobstore"
	"github.com/dockyard/dockyard/index"
	"github.com/dockyard/dockyard/oci"
)

// Garbage collection is online: it runs while pushes and pulls go on. It deletes
// manifests and blobs whose reference count is zero and has been zero for longer than
// a grace period, in batches whose transaction re-checks every count (a concurrent push
// that references the content makes the transaction conflict and retry, and the
// content stays). A blob's index record (and its links) go first and its file second, under
// the blob's lock, so a crash never leaves the index pointing at a missing file; a
// file left without a record is removed by a later run. Batches are sized by the
// changes they make and split when Badger still finds them too big; a blob linked into
// more repositories than one transaction can unlink is unlinked in chunks, each
// re-checking that nothing references it.

// GCOptions tune a collection.
type GCOptions struct {
	// Grace is how long content must have been unreferenced (default 1h).
	Grace time.Duration
	// DryRun reports what would be deleted without deleting it.
	DryRun bool
}

// GCReport says what a collection did (or would do).
type GCReport struct {
	Manifests    int   `json:"manifests"`
	Blobs        int   `json:"blobs"`
	Bytes        int64 `json:"bytes"`
	OrphanFiles  int   `json:"orphanFiles"`
	Repositories int   `json:"repositories"` // emptied repositories dropped from the catalog
	// Accessories: accessory tags and manifests deleted because their subject had been
	// gone from their repository for the grace (accessories.go).
	Accessories int `json:"accessories"`
}

// CollectGarbage deletes what nothing references. Deleting a manifest releases what it
// references; those are collected once their own grace period is over (at once when
// Grace is zero: the collection repeats until nothing more goes). Repositories left
// with nothing are dropped from the catalog, and the index's value log is compacted.
func (s *Store) CollectGarbage(ctx context.Context, opts GCOptions) (GCReport, error) {
	var total GCReport
	// Accessories of deleted manifests first: the manifests among them are collected
	// with the rest (at once when Grace is zero: subjects found gone are noted, then
	// their accessories go, then theirs).
	for pass := 0; pass < 16; pass++ {
		n, noted, err := s.dropOrphanAccessories(ctx, s.now().Add(-opts.Grace).UnixNano(), opts.DryRun)
		total.Accessories += n
		if err != nil {
			return total, err
		}
		if opts.Grace > 0 || opts.DryRun || n+noted == 0 {
			break
		}
	}
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
	orphans, err := s.removeOrphanFiles(ctx, cutoff, opts.DryRun)
	total.OrphanFiles = orphans
	if err != nil {
		return total, err
	}
	if total.Repositories, err = s.pruneEmptyRepositories(ctx, opts.DryRun); err != nil {
		return total, err
	}
	if !opts.DryRun {
		s.compactValueLog()
	}
	return total, nil
}

// compactValueLog reclaims the index's space where its driver does so on request
// (Badger keeps large values, such as big manifests, in a value log it never
// reclaims by itself).
func (s *Store) compactValueLog() {
	if c, ok := s.db.(index.Compacter); ok {
		if err := c.Compact(); err != nil {
			s.log.Warn("index compaction", "err", err)
		}
	}
}

// gcBatch is how many deletions share one index transaction (and one disk sync) at
// most; maxBatchChanges bounds the keys they change, well inside what one Badger
// transaction takes with the store's memtable size.
const (
	gcBatch         = 256
	maxBatchChanges = 2000
)

// batches cuts items into runs of at most gcBatch items and maxBatchChanges changes
// (cost(i) changes for item i).
func batches[T any](items []T, cost func(T) int) [][]T {
	var out [][]T
	start, changes := 0, 0
	for i, it := range items {
		c := cost(it)
		if i > start && (i-start == gcBatch || changes+c > maxBatchChanges) {
			out = append(out, items[start:i])
			start, changes = i, 0
		}
		changes += c
	}
	if start < len(items) {
		out = append(out, items[start:])
	}
	return out
}

// splitUpdate runs apply on items [lo, hi) in one transaction (one that frees space,
// s.updateFreeing, when freeing), or, when the index finds it too big, or it
// conflicted with concurrent writes on each of a few attempts, on each half in turn;
// commit is told which ranges committed. apply must build its results afresh on every
// call (a transaction runs again on a conflict). A single item too big for a
// transaction is returned as index.ErrTxnTooBig; a single item is retried as long as
// any write is.
func (s *Store) splitUpdate(freeing bool, lo, hi int, apply func(txn index.Txn, lo, hi int) error, commit func(lo, hi int)) error {
	attempts := index.Attempts
	if hi-lo > 1 {
		attempts = splitAttempts
	}
	err := index.TryUpdate(s.db, func(txn index.Txn) error { return apply(txn, lo, hi) }, freeing, attempts)
	if (errors.Is(err, index.ErrTxnTooBig) || errors.Is(err, index.ErrContended)) && hi-lo > 1 {
		mid := (lo + hi) / 2
		if err := s.splitUpdate(freeing, lo, mid, apply, commit); err != nil {
			return err
		}
		return s.splitUpdate(freeing, mid, hi, apply, commit)
	}
	if err == nil {
		commit(lo, hi)
	}
	return err
}

// splitAttempts is how often a transaction of several items runs before it is split:
// a big transaction that reads what pushes change (reference counts of shared layers;
// on PostgreSQL, whole tables once its predicate locks are coarsened) conflicts more
// often the longer it runs, and can conflict on every attempt while pushes go on.
const splitAttempts = 4

func (s *Store) collectOnce(ctx context.Context, cutoff int64, dryRun bool) (GCReport, error) {
	var r GCReport
	manifests, err := s.unreferenced(kindContentRefs, cutoff)
	if err != nil {
		return r, err
	}
	costs, err := s.contentCosts(manifests)
	if err != nil {
		return r, err
	}
	for _, batch := range batches(manifests, func(d oci.Digest) int { return costs[d] }) {
		if err := ctx.Err(); err != nil {
			return r, err
		}
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
	links, err := s.linkCounts(blobs)
	if err != nil {
		return r, err
	}
	for _, batch := range batches(blobs, func(d oci.Digest) int { return 1 + 2*links[d] }) {
		if err := ctx.Err(); err != nil {
			return r, err
		}
		if dryRun {
			r.Blobs += len(batch)
			continue
		}
		n, bytes, err := s.deleteBlobs(ctx, batch, cutoff)
		r.Blobs += n
		r.Bytes += bytes
		if err != nil {
			return r, err
		}
	}
	return r, nil
}

// contentCosts estimates the keys deleting each manifest's content changes.
func (s *Store) contentCosts(ds []oci.Digest) (map[oci.Digest]int, error) {
	out := make(map[oci.Digest]int, len(ds))
	err := s.db.View(func(txn index.Txn) error {
		for _, d := range ds {
			h, err := s.header(txn, d)
			if err != nil {
				return err
			}
			out[d] = 2
			if h != nil {
				out[d] += 2 * (len(h.Blobs) + len(h.Children))
			}
		}
		return nil
	})
	return out, err
}

// linkCounts counts the repositories each blob is linked to.
func (s *Store) linkCounts(ds []oci.Digest) (map[oci.Digest]int, error) {
	out := make(map[oci.Digest]int, len(ds))
	err := s.db.View(func(txn index.Txn) error {
		for _, d := range ds {
			err := scanKeys(txn, prefix(kindLinkByDigest, string(d)), func([]byte) error { out[d]++; return nil })
			if err != nil {
				return err
			}
		}
		return nil
	})
	return out, err
}

// unreferenced lists the digests of records of kind whose count has been zero since
// before cutoff.
func (s *Store) unreferenced(kind byte, cutoff int64) ([]oci.Digest, error) {
	var out []oci.Digest
	err := s.db.View(func(txn index.Txn) error {
		return scan(txn, []byte{kind}, func(rest, v []byte) error {
			if r := decodeRefRecord(v); r.Refs == 0 && r.ZeroSince != 0 && r.ZeroSince <= cutoff {
				out = append(out, oci.Digest(rest))
			}
			return nil
		})
	})
	return out, err
}

// stillUnreferenced re-reads a record inside a deleting transaction.
func stillUnreferenced(txn index.Txn, k []byte, cutoff int64) (refRecord, bool, error) {
	v, ok, err := getValue(txn, k)
	if !ok || err != nil {
		return refRecord{}, false, err
	}
	r := decodeRefRecord(v)
	return r, r.Refs == 0 && r.ZeroSince != 0 && r.ZeroSince <= cutoff, nil
}

// deleteContents deletes manifest bytes nothing references and releases what they
// reference, in transactions that re-check every count.
func (s *Store) deleteContents(batch []oci.Digest, cutoff int64) (int, error) {
	var deleted, attempt []oci.Digest
	err := s.splitUpdate(true, 0, len(batch), func(txn index.Txn, lo, hi int) error {
		attempt = attempt[:0]
		for _, d := range batch[lo:hi] {
			_, ok, err := stillUnreferenced(txn, contentRefsKey(d), cutoff)
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
			h, err := s.header(txn, d)
			if err != nil {
				return err
			}
			if h != nil {
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
			attempt = append(attempt, d)
		}
		return nil
	}, func(lo, hi int) { deleted = append(deleted, attempt...) })
	for _, d := range deleted {
		s.contents.remove(d)
	}
	return len(deleted), err
}

// deleteBlobs deletes unreferenced blobs: their records and links first, then their
// files, all under the blobs' locks so that a concurrent upload of the same digest
// cannot slip a fresh file in between.
func (s *Store) deleteBlobs(ctx context.Context, batch []oci.Digest, cutoff int64) (int, int64, error) {
	sorted := append([]oci.Digest(nil), batch...)
	slices.Sort(sorted)             // a fixed order: GC is the only holder of several locks
	sorted = slices.Compact(sorted) // and a lock is taken once
	var held []context.Context
	for _, d := range sorted {
		h, unlock, err := s.lockBlob(ctx, d)
		if err != nil {
			return 0, 0, err
		}
		defer unlock()
		held = append(held, h)
	}
	lost := func() bool { return !s.locks.Holds(held...) }
	var deleted []oci.Digest
	var bytes int64
	type gone struct {
		d    oci.Digest
		size int64
	}
	var attempt []gone
	commit := func(lo, hi int) {
		for _, g := range attempt {
			deleted = append(deleted, g.d)
			bytes += g.size
		}
	}
	var apply func(txn index.Txn, lo, hi int) error
	apply = func(txn index.Txn, lo, hi int) error {
		attempt = attempt[:0]
		for _, d := range sorted[lo:hi] {
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
			attempt = append(attempt, gone{d, r.Size})
		}
		return nil
	}
	// The records of deleted go first; their files then, also when a later part of
	// the batch failed (a split batch commits its halves apart).
	err := s.dropBlobRecords(sorted, cutoff, apply, commit, func(d oci.Digest, size int64) {
		deleted, bytes = append(deleted, d), bytes+size
	})
	for _, d := range deleted {
		if fileDeleteDelay > 0 {
			time.Sleep(fileDeleteDelay)
		}
		if lost() {
			// A commit elsewhere may be putting these bytes back: leave the files to
			// the next collection, which deletes them as orphans if still unrecorded.
			return len(deleted), bytes, oci.ErrIndexUnavailable.Withf("blob locks lost while deleting")
		}
		if err := s.blobs.Delete(context.Background(), d); err != nil {
			return len(deleted), bytes, err
		}
	}
	return len(deleted), bytes, err
}

// dropBlobRecords deletes the records of the unreferenced blobs among sorted, in
// transactions of as many as fit (apply and commit: deleteBlobs'); a blob too big alone
// is unlinked in chunks (gone tells of it), then the rest goes on after it.
func (s *Store) dropBlobRecords(sorted []oci.Digest, cutoff int64, apply func(txn index.Txn, lo, hi int) error, commit func(lo, hi int), gone func(oci.Digest, int64)) error {
	for lo := 0; lo < len(sorted); {
		hi := len(sorted)
		err := s.splitUpdate(true, lo, hi, apply, commit)
		if err == nil || !errors.Is(err, index.ErrTxnTooBig) {
			return err
		}
		big := s.firstTooBig(sorted, lo, hi, apply, commit)
		if big < 0 {
			return err
		}
		size, ok, err := s.dropBigBlob(sorted[big], cutoff)
		if err != nil {
			return err
		}
		if ok {
			gone(sorted[big], size)
		}
		lo = big + 1
	}
	return nil
}

// fileDeleteDelay slows the deletion of blob files; only an end-to-end test build sets
// it (e2ehooks.go), so that a test can kill a collection in the middle of its deletes.
var fileDeleteDelay time.Duration

// firstTooBig finds the first item of [lo, hi) that is too big for a transaction on
// its own, committing the items before it; -1 if none is.
func (s *Store) firstTooBig(items []oci.Digest, lo, hi int, apply func(txn index.Txn, lo, hi int) error, commit func(lo, hi int)) int {
	for i := lo; i < hi; i++ {
		if err := s.splitUpdate(true, i, i+1, apply, commit); errors.Is(err, index.ErrTxnTooBig) {
			return i
		}
	}
	return -1
}

// linkChunk is how many links of a blob one transaction removes when the blob has too
// many for one.
const linkChunk = 500

// dropBigBlob deletes the record of a blob with too many links for one transaction:
// its links in chunks, each in a transaction that re-checks nothing references the
// blob (a push referencing it meanwhile stops the deletion), then the record.
func (s *Store) dropBigBlob(d oci.Digest, cutoff int64) (size int64, deleted bool, err error) {
	for {
		more := false
		err := s.updateFreeing(func(txn index.Txn) error {
			r, ok, err := stillUnreferenced(txn, blobKey(d), cutoff)
			if err != nil || !ok {
				deleted, more = false, false
				return err
			}
			size = r.Size
			n, err := s.dropLinks(txn, d, linkChunk)
			if err != nil {
				return err
			}
			more = n == linkChunk
			if !more {
				deleted = true
				return txn.Delete(blobKey(d))
			}
			return nil
		})
		if err != nil || !more {
			return size, deleted, err
		}
	}
}

// pruneEmptyRepositories drops from the catalog the repositories with no manifest, tag
// or blob left. Writers blind-write a repository's key (touchRepo), and the pruning
// transaction reads it: a push into the repository while it is pruned makes one of
// them conflict, so a repository with content never loses its catalog entry.
func (s *Store) pruneEmptyRepositories(ctx context.Context, dryRun bool) (int, error) {
	repos, err := s.repositories()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, r := range repos {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		pruned := false
		err := s.updateFreeing(func(txn index.Txn) error {
			pruned = false
			if ok, err := exists(txn, repoKey(r[0], r[1])); !ok || err != nil {
				return err
			}
			for _, kind := range []byte{kindRepoManifest, kindTag, kindLink} {
				found := false
				if err := scanKeys(txn, prefix(kind, r[0], r[1]), func([]byte) error { found = true; return errStop }); err != nil && !errors.Is(err, errStop) {
					return err
				}
				if found {
					return nil
				}
			}
			pruned = true
			if dryRun {
				return nil
			}
			if hookBeforeConditionalDelete != nil {
				hookBeforeConditionalDelete()
			}
			return txn.Delete(repoKey(r[0], r[1]))
		})
		if err != nil {
			return n, err
		}
		if pruned {
			n++
		}
	}
	return n, nil
}

// errStop ends a scan early.
var errStop = errors.New("stop")

// removeOrphanFiles deletes stored blobs without an index record (left by a crash
// between the two steps of a deletion, or of a commit) once they are older than the
// grace period. The store lists them a page at a time.
func (s *Store) removeOrphanFiles(ctx context.Context, cutoff int64, dryRun bool) (int, error) {
	n := 0
	err := s.blobs.Walk(ctx, func(b blobstore.Blob) error {
		if b.ModTime.UnixNano() > cutoff {
			return nil
		}
		held, unlock, err := s.lockBlob(ctx, b.Digest)
		if err != nil {
			return err
		}
		defer unlock()
		has, err := s.hasRecord(blobKey(b.Digest))
		if err != nil || has {
			return err
		}
		if !s.locks.Holds(held) {
			return oci.ErrIndexUnavailable.Withf("blob lock lost while removing orphan files")
		}
		n++
		if !dryRun {
			return s.blobs.Delete(ctx, b.Digest)
		}
		return nil
	})
	return n, err
}

func (s *Store) hasRecord(k []byte) (ok bool, err error) {
	err = s.db.View(func(txn index.Txn) error {
		ok, err = exists(txn, k)
		return err
	})
	return ok, err
}

// PurgeUploads drops upload sessions unused (no chunk received) for maxAge, and upload
// files no session owns that are older than that. It returns how many were removed.
// A session is checked again under its lock: a chunk arriving while the purge runs
// keeps it.
func (s *Store) PurgeUploads(ctx context.Context, maxAge time.Duration) (int, error) {
	cutoff := s.now().Add(-maxAge)
	live := map[string]bool{}
	var stale []string
	err := s.db.View(func(txn index.Txn) error {
		return scan(txn, []byte{kindUpload}, func(_, v []byte) error {
			var u Upload
			if err := decodeJSON(v, &u); err != nil {
				return err
			}
			live[u.ID] = true
			if u.lastActivity().Before(cutoff) {
				stale = append(stale, u.ID)
			}
			return nil
		})
	})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, id := range stale {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		purged, err := s.purgeUpload(id, cutoff)
		if err != nil {
			return n, err
		}
		if purged {
			n++
		}
	}
	// Upload data no session owns: sessions purged before their data was removed,
	// monolithic uploads and fetches a crash interrupted, multipart uploads left
	// behind in a bucket.
	var orphans []string
	err = s.blobs.WalkUploads(ctx, func(u blobstore.Upload) error {
		if !live[u.ID] && u.ModTime.Before(cutoff) {
			orphans = append(orphans, u.ID)
		}
		return nil
	})
	if err != nil {
		return n, err
	}
	for _, id := range orphans {
		if s.blobs.RemoveUpload(ctx, id) == nil {
			n++
		}
	}
	return n, nil
}

// purgeUpload drops session id if, under its lock, it is still unused since cutoff.
func (s *Store) purgeUpload(id string, cutoff time.Time) (bool, error) {
	if s.beforePurgeLock != nil {
		s.beforePurgeLock(id)
	}
	_, unlock, ok, err := s.locks.TryLock(context.Background(), uploadLock(id))
	if err != nil || !ok {
		return false, err // busy: in use, so not stale
	}
	defer unlock()
	purged := false
	var u Upload
	err = s.updateFreeing(func(txn index.Txn) error {
		ok, err := getJSON(txn, uploadKey(id), &u)
		if !ok || err != nil || !u.lastActivity().Before(cutoff) {
			purged = false
			return err
		}
		purged = true
		return deleteKeys(txn, sessionKeys(&u))
	})
	if err != nil || !purged {
		return false, err
	}
	s.releaseSession(&u)
	return true, s.blobs.RemoveUpload(context.Background(), id)
}
