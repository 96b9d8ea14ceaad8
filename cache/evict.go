package cache

import (
	"context"
	"encoding/binary"
	"sort"
	"strings"
	"time"

	"github.com/dockyard/dockyard/index"
	"github.com/dockyard/dockyard/oci"
)

// EvictReport says what a proxy cache eviction removed.
type EvictReport struct {
	Manifests int `json:"manifests"`
	// Bytes are the blob bytes the eviction made garbage: blobs no repository links any
	// more and no manifest references, which the next collection deletes.
	Bytes int64 `json:"bytes"`
}

type cachedManifest struct {
	repo     string
	digest   oci.Digest
	lastUsed int64
	listedAt int64
	// follows is the manifest this one is an accessory of (its subject, or the digest
	// its accessory tag names), "" for others.
	follows oci.Digest
	// groupUsed is when it or any manifest it follows or follows it was last used;
	// accessory: it goes right after the manifest it follows (withAccessories).
	groupUsed int64
	accessory bool
}

// EvictCache trims the cache of proxy registry reg: manifests not pulled within
// pulledWithin (0: no limit) go, then the least recently pulled ones until the blobs
// the registry holds fit in maxBytes (0: no limit). An evicted manifest's tags go with
// it, and the blobs it lists that no other manifest of its repository lists are
// unlinked from the repository; garbage collection reclaims what nothing needs. An
// accessory (a signature, an attestation, a referrer) goes with the manifest it
// follows, never before it: they are used as one, when any of them last was.
func (s *Store) EvictCache(ctx context.Context, reg string, maxBytes int64, pulledWithin time.Duration) (EvictReport, error) {
	var rep EvictReport
	if err := s.flushAccess(true); err != nil {
		return rep, err
	}
	var manifests []cachedManifest
	held := map[oci.Digest]int64{} // distinct blobs linked anywhere in reg → size
	recognise := s.accessorySettings().recognise
	err := s.db.View(func(txn index.Txn) error {
		err := scan(txn, prefix(kindRepoManifest, reg), func(rest, v []byte) error {
			repo, d := splitLast(string(rest))
			var rm repoManifest
			if err := decodeJSON(v, &rm); err != nil {
				return err
			}
			m := cachedManifest{repo: repo, digest: oci.Digest(d), lastUsed: max(rm.PulledAt, rm.PushedAt), listedAt: rm.ListedAt}
			if h, err := s.header(txn, m.digest); err != nil {
				return err
			} else if h != nil {
				m.follows = h.Subject
			}
			manifests = append(manifests, m)
			return nil
		})
		if err != nil {
			return err
		}
		at := make(map[string]int, len(manifests))
		for i, m := range manifests {
			at[m.repo+"\x00"+string(m.digest)] = i
		}
		err = scan(txn, prefix(kindTag, reg), func(rest, v []byte) error {
			repo, tag := splitLast(string(rest))
			subject, _, ok := recognise.Subject(tag)
			if !ok {
				return nil
			}
			d, _ := decodeTagValue(v)
			if i, ok := at[repo+"\x00"+string(d)]; ok && manifests[i].follows == "" {
				manifests[i].follows = subject
			}
			return nil
		})
		if err != nil {
			return err
		}
		return scan(txn, prefix(kindLink, reg), func(rest, v []byte) error {
			_, d := splitLast(string(rest))
			held[oci.Digest(d)], _ = binary.Varint(v)
			return nil
		})
	})
	if err != nil {
		return rep, err
	}
	var total int64
	for _, n := range held {
		total += n
	}
	manifests = withAccessories(manifests)
	cutoff := int64(0)
	if pulledWithin > 0 {
		cutoff = s.now().Add(-pulledWithin).UnixNano()
	}
	// going counts, per blob, the references held by manifest contents this run made
	// garbage: a blob is freed once only those are left.
	going := map[oci.Digest]int64{}
	groupGoes := false // the manifest the accessories that come next follow was evicted
	for _, m := range manifests {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		if m.accessory && !groupGoes {
			continue // what it follows stays: so does it
		}
		if !m.accessory {
			stale := cutoff > 0 && m.groupUsed < cutoff
			over := maxBytes > 0 && total > maxBytes
			if !stale && !over {
				break
			}
		}
		r, err := s.evictManifestIf(reg, m, going)
		if err != nil {
			return rep, err
		}
		if !m.accessory {
			groupGoes = r.evicted
		}
		if !r.evicted {
			continue // pulled or pushed since the snapshot
		}
		rep.Manifests++
		rep.Bytes += r.freed
		total -= r.leftRegistry
	}
	return rep, nil
}

// withAccessories orders manifests for eviction: each manifest with its accessories
// (recursively) right after it, the groups by when any of their members was last used.
func withAccessories(manifests []cachedManifest) []cachedManifest {
	type key struct {
		repo string
		d    oci.Digest
	}
	at := map[key]int{}
	for i, m := range manifests {
		at[key{m.repo, m.digest}] = i
	}
	// root: the manifest a chain of accessories ends at (one present in the
	// repository that follows nothing present); a cycle is cut where it is found.
	root := func(i int) int {
		seen := map[int]bool{}
		for !seen[i] {
			seen[i] = true
			j, ok := at[key{manifests[i].repo, manifests[i].follows}]
			if manifests[i].follows == "" || !ok {
				return i
			}
			i = j
		}
		return i
	}
	groups := map[int][]int{}
	for i := range manifests {
		r := root(i)
		groups[r] = append(groups[r], i)
	}
	type group struct {
		members  []int
		lastUsed int64
	}
	var order []group
	for r, members := range groups {
		g := group{lastUsed: manifests[r].lastUsed}
		g.members = append(g.members, r)
		for _, i := range members {
			g.lastUsed = max(g.lastUsed, manifests[i].lastUsed)
			if i != r {
				g.members = append(g.members, i)
			}
		}
		order = append(order, g)
	}
	sort.Slice(order, func(i, j int) bool {
		if order[i].lastUsed != order[j].lastUsed {
			return order[i].lastUsed < order[j].lastUsed
		}
		return order[i].members[0] < order[j].members[0]
	})
	out := make([]cachedManifest, 0, len(manifests))
	for _, g := range order {
		for k, i := range g.members {
			m := manifests[i]
			m.groupUsed, m.accessory = g.lastUsed, k > 0
			out = append(out, m)
		}
	}
	return out
}

type eviction struct {
	evicted      bool
	freed        int64 // bytes of blobs that became garbage
	leftRegistry int64 // bytes of blobs no repository of the registry links any more
}

// evictManifestIf deletes a cached manifest, if it was not used since the snapshot,
// and in the same transaction unlinks the blobs it lists that no other manifest of its
// repository lists.
func (s *Store) evictManifestIf(reg string, m cachedManifest, going map[oci.Digest]int64) (eviction, error) {
	var r eviction
	var tags [][]byte
	var goes []oci.Digest // blobs whose referencing content goes, once committed
	defer func() { s.tags.invalidate(tags...) }()
	err := s.updateFreeing(func(txn index.Txn) error {
		r, tags, goes = eviction{}, nil, nil
		var rm repoManifest
		ok, err := getJSON(txn, repoManifestKey(reg, m.repo, m.digest), &rm)
		if !ok || err != nil {
			return err
		}
		if max(rm.PulledAt, rm.PushedAt) != m.lastUsed || rm.ListedAt != m.listedAt {
			return nil
		}
		h, err := s.header(txn, m.digest)
		if err != nil {
			return err
		}
		content, _, err := getValue(txn, contentRefsKey(m.digest))
		if err != nil {
			return err
		}
		contentGoes := decodeRefRecord(content).Refs <= 1 // this repository was its last holder
		if tags, err = s.deleteManifest(txn, reg, m.repo, m.digest); err != nil {
			return err
		}
		r.evicted = true
		if h == nil {
			return nil
		}
		if contentGoes {
			goes = h.Blobs
		}
		// Blobs still listed by the repository's other manifests stay linked.
		listed := map[oci.Digest]bool{}
		err = scanKeys(txn, prefix(kindRepoManifest, reg, m.repo), func(rest []byte) error {
			other, err := s.header(txn, oci.Digest(rest))
			if err != nil || other == nil {
				return err
			}
			for _, b := range other.Blobs {
				listed[b] = true
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, b := range h.Blobs {
			if listed[b] {
				continue
			}
			lk := linkKey(reg, m.repo, b)
			v, ok, err := getValue(txn, lk)
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
			size, _ := binary.Varint(v)
			if err := txn.Delete(lk); err != nil {
				return err
			}
			if err := txn.Delete(linkByDigestKey(b, reg, m.repo)); err != nil {
				return err
			}
			inRegistry, anywhere := false, false
			err = scanKeys(txn, prefix(kindLinkByDigest, string(b)), func(rest []byte) error {
				anywhere = true
				inRegistry = inRegistry || strings.HasPrefix(string(rest), reg+"\x00")
				return nil
			})
			if err != nil {
				return err
			}
			if !inRegistry {
				r.leftRegistry += size
			}
			blobRefs, _, err := getValue(txn, blobKey(b))
			if err != nil {
				return err
			}
			left := decodeRefRecord(blobRefs).Refs - going[b]
			if contentGoes {
				left--
			}
			if !anywhere && left <= 0 {
				r.freed += size
			}
		}
		return nil
	})
	if err == nil {
		for _, b := range goes {
			going[b]++
		}
	}
	return r, err
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
