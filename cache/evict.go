package cache

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"sort"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/dockyard/dockyard/oci"
)

// EvictReport says what a proxy cache eviction removed.
type EvictReport struct {
	Manifests int   `json:"manifests"`
	Bytes     int64 `json:"bytes"` // blob bytes unlinked (reclaimed by the next collection)
}

type cachedManifest struct {
	repo     string
	digest   oci.Digest
	lastUsed int64
}

// EvictCache trims the cache of proxy registry reg: manifests not pulled within
// pulledWithin (0: no limit) go, then the least recently pulled ones until the blobs
// the registry links fit in maxBytes (0: no limit). An evicted manifest's tags go with
// it and its blobs are unlinked from the repository; garbage collection reclaims them.
func (s *Store) EvictCache(ctx context.Context, reg string, maxBytes int64, pulledWithin time.Duration) (EvictReport, error) {
	var rep EvictReport
	if err := s.FlushAccess(); err != nil {
		return rep, err
	}
	var manifests []cachedManifest
	var total int64
	err := s.db.View(func(txn *badger.Txn) error {
		mp := append([]byte{kindRepoManifest}, append([]byte(reg), 0)...)
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, Prefix: mp})
		for it.Rewind(); it.Valid(); it.Next() {
			rest := string(it.Item().Key()[len(mp):])
			repo, d := splitLast(rest)
			var rm repoManifest
			if err := it.Item().Value(func(v []byte) error { return json.Unmarshal(v, &rm) }); err != nil {
				it.Close()
				return err
			}
			manifests = append(manifests, cachedManifest{repo: repo, digest: oci.Digest(d), lastUsed: max(rm.PulledAt, rm.PushedAt)})
		}
		it.Close()
		lp := append([]byte{kindLink}, append([]byte(reg), 0)...)
		it = txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, Prefix: lp})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if err := it.Item().Value(func(v []byte) error { n, _ := binary.Varint(v); total += n; return nil }); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return rep, err
	}
	sort.Slice(manifests, func(i, j int) bool { return manifests[i].lastUsed < manifests[j].lastUsed })
	cutoff := int64(0)
	if pulledWithin > 0 {
		cutoff = s.now().Add(-pulledWithin).UnixNano()
	}
	for _, m := range manifests {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		stale := cutoff > 0 && m.lastUsed < cutoff
		over := maxBytes > 0 && total > maxBytes
		if !stale && !over {
			break
		}
		freed, err := s.evictManifest(ctx, reg, m.repo, m.digest)
		if err != nil {
			return rep, err
		}
		rep.Manifests++
		rep.Bytes += freed
		total -= freed
	}
	return rep, nil
}

// evictManifest deletes a cached manifest and unlinks the blobs it lists from its
// repository, returning the bytes unlinked.
func (s *Store) evictManifest(ctx context.Context, reg, repo string, d oci.Digest) (int64, error) {
	var blobs []oci.Digest
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(contentKey(d))
		if err != nil {
			return nil
		}
		return item.Value(func(v []byte) error {
			h, _, err := decodeContent(v)
			blobs = h.Blobs
			return err
		})
	})
	if err != nil {
		return 0, err
	}
	if err := s.DeleteManifest(ctx, reg, repo, d); err != nil && !isUnknown(err) {
		return 0, err
	}
	var freed int64
	err = s.update(func(txn *badger.Txn) error {
		freed = 0
		for _, b := range blobs {
			lk := linkKey(reg, repo, b)
			v, ok, err := getValue(txn, lk)
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
			n, _ := binary.Varint(v)
			freed += n
			if err := txn.Delete(lk); err != nil {
				return err
			}
			if err := txn.Delete(linkByDigestKey(b, reg, repo)); err != nil {
				return err
			}
		}
		return nil
	})
	return freed, err
}

// splitLast splits "a/b\x00digest" at its last separator.
func splitLast(s string) (string, string) {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == 0 {
			return s[:i], s[i+1:]
		}
	}
	return s, ""
}
