package cache

import (
	"context"
	"time"

	"github.com/dockyard/dockyard/index"
	"github.com/dockyard/dockyard/oci"
)

// repoGraph is how the manifests of one repository refer to each other, as one
// snapshot saw them: indexes list children, referrers name a subject.
type repoGraph struct {
	records   map[oci.Digest]repoManifest
	parents   map[oci.Digest][]oci.Digest // child → indexes of the repository listing it
	children  map[oci.Digest][]oci.Digest // index → children
	referrers map[oci.Digest][]oci.Digest // subject → referrers
	subjects  map[oci.Digest]oci.Digest   // referrer → subject
	// refs, where read, are reference counts (accessories.go reads its candidates').
	refs map[oci.Digest]int64
}

// readGraph reads the manifests of reg/repo and how they refer to each other.
func (s *Store) readGraph(txn index.Txn, reg, repo string) (*repoGraph, error) {
	g := &repoGraph{records: map[oci.Digest]repoManifest{}, parents: map[oci.Digest][]oci.Digest{},
		children: map[oci.Digest][]oci.Digest{}, referrers: map[oci.Digest][]oci.Digest{}, subjects: map[oci.Digest]oci.Digest{}}
	err := scan(txn, prefix(kindRepoManifest, reg, repo), func(rest, v []byte) error {
		var rm repoManifest
		if err := decodeJSON(v, &rm); err != nil {
			return err
		}
		g.records[oci.Digest(rest)] = rm
		return nil
	})
	if err != nil {
		return nil, err
	}
	for d := range g.records {
		h, err := s.header(txn, d)
		if err != nil || h == nil {
			continue
		}
		for _, c := range h.Children {
			g.parents[c] = append(g.parents[c], d)
			g.children[d] = append(g.children[d], c)
		}
		if h.Subject != "" {
			g.referrers[h.Subject] = append(g.referrers[h.Subject], d)
			g.subjects[d] = h.Subject
		}
	}
	return g, nil
}

// reach marks everything reachable from the marked manifests: the children of
// indexes, the referrers of manifests.
func (g *repoGraph) reach(marked map[oci.Digest]bool) {
	queue := make([]oci.Digest, 0, len(marked))
	for d := range marked {
		queue = append(queue, d)
	}
	for len(queue) > 0 {
		d := queue[0]
		queue = queue[1:]
		for _, next := range [][]oci.Digest{g.children[d], g.referrers[d]} {
			for _, n := range next {
				if !marked[n] {
					marked[n] = true
					queue = append(queue, n)
				}
			}
		}
	}
}

// ManifestGraph is how the manifests of one repository refer to each other (indexes
// list children, referrers name a subject), and their sizes, for retention to follow.
type ManifestGraph struct {
	g     *repoGraph
	sizes map[oci.Digest]int64
}

// ManifestGraph reads the manifests of reg/repo in one snapshot, with their sizes when
// sizes (it then reads and parses every manifest).
func (s *Store) ManifestGraph(ctx context.Context, reg, repo string, sizes bool) (*ManifestGraph, error) {
	mg := &ManifestGraph{sizes: map[oci.Digest]int64{}}
	err := s.db.View(func(txn index.Txn) error {
		var err error
		if mg.g, err = s.readGraph(txn, reg, repo); err != nil || !sizes {
			return err
		}
		ds := make([]oci.Digest, 0, len(mg.g.records))
		for d := range mg.g.records {
			ds = append(ds, d)
		}
		stored, err := storedManifests(txn, ds)
		if err != nil {
			return err
		}
		own := make(map[oci.Digest]int64, len(ds))
		for i, d := range ds {
			own[d] = stored[i].size
		}
		for _, d := range ds {
			mg.sizes[d] = own[d]
			for _, c := range mg.g.children[d] {
				mg.sizes[d] += own[c]
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return mg, nil
}

// Size is the bytes a pull of manifest d transfers: the manifest, its config and
// layers, and for an index its children's (those the repository holds); 0 when the
// graph was read without sizes.
func (m *ManifestGraph) Size(d oci.Digest) int64 { return m.sizes[d] }

// PushedAt is when manifest d was pushed into the repository (zero if it is not there).
func (m *ManifestGraph) PushedAt(d oci.Digest) time.Time {
	rm, ok := m.g.records[d]
	if !ok {
		return time.Time{}
	}
	return time.Unix(0, rm.PushedAt)
}

// Referrers lists the manifests of the repository whose subject is d.
func (m *ManifestGraph) Referrers(d oci.Digest) []oci.Digest { return m.g.referrers[d] }

// Has says whether the repository holds manifest d.
func (m *ManifestGraph) Has(d oci.Digest) bool {
	_, ok := m.g.records[d]
	return ok
}

// Reach returns the manifests reachable from from (from included): children of
// indexes, referrers of manifests, recursively.
func (m *ManifestGraph) Reach(from []oci.Digest) map[oci.Digest]bool {
	marked := make(map[oci.Digest]bool, len(from))
	for _, d := range from {
		marked[d] = true
	}
	m.g.reach(marked)
	return marked
}
