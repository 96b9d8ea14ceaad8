package cache

import (
	"context"
	"time"

	"github.com/dockyard/dockyard/index"
	"github.com/dockyard/dockyard/oci"
)

// PruneUntagged deletes, in the repositories of reg that include admits (nil: all),
// manifests that nothing keeps: no tag reaches them (directly, as a child of a tagged
// index, or as a referrer of a kept manifest) and neither does a manifest pushed within
// the grace period. Garbage collection then takes what they alone referenced. It
// returns how many manifests it deleted (or would delete).
//
// It decides from a snapshot and deletes each manifest in a transaction that checks
// the decision still holds: the manifest was not pushed or listed by a new index since,
// has no tag, and the indexes listing it and its subject are gone (they are deleted
// first). A push during the run wins.
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
		if hookAfterSnapshot != nil {
			hookAfterSnapshot()
		}
		for _, v := range victims {
			if err := ctx.Err(); err != nil {
				return n, err
			}
			if dryRun {
				n++
				continue
			}
			deleted, err := s.deleteUntaggedIf(reg, repo, v)
			if err != nil {
				return n, err
			}
			if deleted {
				n++
			}
		}
	}
	return n, nil
}

// hookAfterSnapshot, set by tests only, runs between a job's snapshot and its deletes.
var hookAfterSnapshot func()

func isUnknown(err error) bool {
	e, ok := oci.AsError(err)
	return ok && e.Code == oci.ErrManifestUnknown
}

// victim is an unreachable manifest as the snapshot saw it.
type victim struct {
	digest  oci.Digest
	seen    repoManifest
	parents []oci.Digest // indexes of the repository listing it (unreachable too)
	subject oci.Digest   // the manifest it refers to, if any
}

// untagged computes the unreachable manifests of one repository, each after the
// indexes listing it and after its subject.
func (s *Store) untagged(reg, repo string, cutoff int64) ([]victim, error) {
	var g *repoGraph
	kept := map[oci.Digest]bool{}
	err := s.db.View(func(txn index.Txn) error {
		var err error
		if g, err = s.readGraph(txn, reg, repo); err != nil {
			return err
		}
		return scan(txn, prefix(kindTag, reg, repo), func(_, v []byte) error {
			d, _ := decodeTagValue(v)
			kept[d] = true
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	for d, rm := range g.records {
		if rm.PushedAt > cutoff {
			kept[d] = true // within its grace period
		}
	}
	// Everything reachable from a kept manifest stays: children of kept indexes,
	// referrers of kept manifests.
	g.reach(kept)
	records, parents, subjects := g.records, g.parents, g.subjects
	var out []victim
	visited := map[oci.Digest]bool{}
	var visit func(d oci.Digest)
	visit = func(d oci.Digest) {
		if visited[d] {
			return
		}
		visited[d] = true
		v := victim{digest: d, seen: records[d], subject: subjects[d]}
		for _, p := range parents[d] {
			if _, inRepo := records[p]; inRepo {
				v.parents = append(v.parents, p)
				visit(p)
			}
		}
		if _, inRepo := records[v.subject]; inRepo && v.subject != "" {
			visit(v.subject)
		}
		out = append(out, v)
	}
	for d := range records {
		if !kept[d] {
			visit(d)
		}
	}
	return out, nil
}

// deleteUntaggedIf deletes a victim if the snapshot's decision still holds.
func (s *Store) deleteUntaggedIf(reg, repo string, v victim) (deleted bool, err error) {
	var tags [][]byte
	defer func() { s.tags.invalidate(tags...) }()
	err = s.updateFreeing(func(txn index.Txn) error {
		deleted, tags = false, nil
		var rm repoManifest
		ok, err := getJSON(txn, repoManifestKey(reg, repo, v.digest), &rm)
		if !ok || err != nil {
			return err
		}
		if rm.PushedAt != v.seen.PushedAt || rm.ListedAt != v.seen.ListedAt {
			return nil // pushed again, or listed by a new index
		}
		tagged := false
		err = scanKeys(txn, prefix(kindTagByDigest, reg, repo, string(v.digest)), func([]byte) error { tagged = true; return nil })
		if err != nil || tagged {
			return err
		}
		for _, d := range append(append([]oci.Digest{}, v.parents...), v.subject) {
			if d == "" {
				continue
			}
			if present, err := exists(txn, repoManifestKey(reg, repo, d)); present || err != nil {
				return err // an index listing it, or its subject, survived
			}
		}
		if hookBeforeConditionalDelete != nil {
			hookBeforeConditionalDelete()
		}
		deleted = true
		tags, err = s.deleteManifest(txn, reg, repo, v.digest)
		return err
	})
	return deleted, err
}
