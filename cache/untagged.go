package cache

import (
	"context"
	"encoding/json"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/dockyard/dockyard/oci"
)

// PruneUntagged deletes, in the repositories of reg that include admits (nil: all),
// manifests that no tag reaches (directly, as a child of a tagged index, or as a
// referrer of a kept manifest) and that were pushed before the grace period. Garbage
// collection then takes what they alone referenced. It returns how many manifests it
// deleted (or would delete).
func (s *Store) PruneUntagged(ctx context.Context, reg string, include func(repo string) bool, grace time.Duration, dryRun bool) (int, error) {
	repos, _, err := s.ListRepositories(ctx, reg, "", 1<<30)
	if err != nil {
		return 0, err
	}
	cutoff := s.now().Add(-grace).UnixNano()
	n := 0
	for _, repo := range repos {
		if include != nil && !include(repo) {
			continue
		}
		victims, err := s.untagged(reg, repo, cutoff)
		if err != nil {
			return n, err
		}
		for _, d := range victims {
			if err := ctx.Err(); err != nil {
				return n, err
			}
			if !dryRun {
				if err := s.DeleteManifest(ctx, reg, repo, d); err != nil && !isUnknown(err) {
					return n, err
				}
			}
			n++
		}
	}
	return n, nil
}

func isUnknown(err error) bool {
	e, ok := oci.AsError(err)
	return ok && e.Code == oci.ErrManifestUnknown
}

// untagged computes the unreachable manifests of one repository.
func (s *Store) untagged(reg, repo string, cutoff int64) ([]oci.Digest, error) {
	pushed := map[oci.Digest]int64{}
	kept := map[oci.Digest]bool{}
	children := map[oci.Digest][]oci.Digest{}
	referrers := map[oci.Digest][]oci.Digest{} // subject → referrers
	err := s.db.View(func(txn *badger.Txn) error {
		mp := prefix(kindRepoManifest, reg, repo)
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, Prefix: mp})
		for it.Rewind(); it.Valid(); it.Next() {
			d := oci.Digest(it.Item().Key()[len(mp):])
			var rm repoManifest
			if err := it.Item().Value(func(v []byte) error { return json.Unmarshal(v, &rm) }); err != nil {
				it.Close()
				return err
			}
			pushed[d] = rm.PushedAt
		}
		it.Close()
		tp := prefix(kindTag, reg, repo)
		it = txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, Prefix: tp})
		for it.Rewind(); it.Valid(); it.Next() {
			if err := it.Item().Value(func(v []byte) error { d, _ := decodeTagValue(v); kept[d] = true; return nil }); err != nil {
				it.Close()
				return err
			}
		}
		it.Close()
		for d := range pushed {
			item, err := txn.Get(contentKey(d))
			if err != nil {
				continue
			}
			var h contentHeader
			if err := item.Value(func(v []byte) (err error) { h, _, err = decodeContent(v); return err }); err != nil {
				return err
			}
			children[d] = h.Children
			if h.Subject != "" {
				referrers[h.Subject] = append(referrers[h.Subject], d)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	// Everything reachable from a tag stays: children of kept indexes, referrers of
	// kept manifests.
	queue := make([]oci.Digest, 0, len(kept))
	for d := range kept {
		queue = append(queue, d)
	}
	for len(queue) > 0 {
		d := queue[0]
		queue = queue[1:]
		for _, next := range append(append([]oci.Digest{}, children[d]...), referrers[d]...) {
			if !kept[next] {
				kept[next] = true
				queue = append(queue, next)
			}
		}
	}
	var out []oci.Digest
	for d, at := range pushed {
		if !kept[d] && at <= cutoff {
			out = append(out, d)
		}
	}
	return out, nil
}
