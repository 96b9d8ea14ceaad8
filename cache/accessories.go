package cache

import (
	"context"
	"encoding/binary"
	"slices"
	"strings"

	"github.com/dockyard/dockyard/index"
	"github.com/dockyard/dockyard/oci"
)

// Accessories of a deleted manifest go with it. A manifest's accessories are the tags
// named after its digest (oci.Accessories: cosign's signatures, attestations, SBOMs, the
// referrers tag) and its referrers. When the manifest leaves a repository (a delete
// through the API, untagged pruning, eviction), nothing removes them at once: a
// collection finds accessories whose subject the repository no longer holds, notes
// when it first saw the subject gone (kindGoneSubject), and once that is older than
// the grace, deletes the accessory tags and those accessory manifests nothing else
// needs (no tag of their own, no index listing them). A subject pushed back within the
// grace keeps them. An accessory of an accessory goes at a later collection, as its
// subject is then gone.

// kindGoneSubject: G reg 0 repo 0 subject → when a collection first found the subject
// missing while accessories named it (unix nanoseconds, 8 bytes).
const kindGoneSubject = 'G'

func goneSubjectKey(reg, repo string, d oci.Digest) []byte {
	return key(kindGoneSubject, reg, repo, string(d))
}

// accessorySettings is how accessories follow their subject (SetAccessories).
type accessorySettings struct {
	recognise  *oci.Accessories
	keepOrphan bool // lifecycle.accessories.delete_with_subject: false
}

// SetAccessories says which tags are accessories (nil: the built-in schemes) and
// whether they and referrers go once their subject is deleted
// (lifecycle.accessories.delete_with_subject; the default until set).
func (s *Store) SetAccessories(a *oci.Accessories, deleteWithSubject bool) {
	s.accessories.Store(&accessorySettings{recognise: a, keepOrphan: !deleteWithSubject})
}

func (s *Store) accessorySettings() accessorySettings {
	if a := s.accessories.Load(); a != nil {
		return *a
	}
	return accessorySettings{}
}

// orphans are the accessories of one repository whose subjects it no longer holds.
type orphans struct {
	tags      map[oci.Digest]map[string]oci.Digest // subject → accessory tag → manifest
	referrers map[oci.Digest][]oci.Digest          // subject → referrers
	since     map[oci.Digest]int64                 // subject → gone since (kindGoneSubject)
}

// subjects are the subjects o names: of accessory tags, referrers, or notes.
func (o *orphans) subjects() map[oci.Digest]bool {
	out := map[oci.Digest]bool{}
	for d := range o.tags {
		out[d] = true
	}
	for d := range o.referrers {
		out[d] = true
	}
	for d := range o.since {
		out[d] = true
	}
	return out
}

// manifests are the accessory manifests of subject: those its accessory tags point
// at, and its referrers, each once.
func (o *orphans) manifests(subject oci.Digest) []oci.Digest {
	var out []oci.Digest
	for _, d := range o.tags[subject] {
		if !slices.Contains(out, d) {
			out = append(out, d)
		}
	}
	for _, d := range o.referrers[subject] {
		if !slices.Contains(out, d) {
			out = append(out, d)
		}
	}
	return out
}

// findOrphans reads the accessories of reg/repo whose subject is missing, and the
// subjects noted as gone.
func (s *Store) findOrphans(reg, repo string, recognise *oci.Accessories) (*orphans, error) {
	o := &orphans{tags: map[oci.Digest]map[string]oci.Digest{}, referrers: map[oci.Digest][]oci.Digest{}, since: map[oci.Digest]int64{}}
	err := s.db.View(func(txn index.Txn) error {
		missing := map[oci.Digest]bool{}
		gone := func(d oci.Digest) (bool, error) {
			if m, ok := missing[d]; ok {
				return m, nil
			}
			ok, err := exists(txn, repoManifestKey(reg, repo, d))
			missing[d] = !ok
			return !ok, err
		}
		err := scan(txn, prefix(kindTag, reg, repo), func(rest, v []byte) error {
			subject, _, ok := recognise.Subject(string(rest))
			if !ok {
				return nil
			}
			if g, err := gone(subject); !g || err != nil {
				return err
			}
			if o.tags[subject] == nil {
				o.tags[subject] = map[string]oci.Digest{}
			}
			d, _ := decodeTagValue(v)
			o.tags[subject][string(rest)] = d
			return nil
		})
		if err != nil {
			return err
		}
		err = scanKeys(txn, prefix(kindReferrer, reg, repo), func(rest []byte) error {
			subject, d, ok := strings.Cut(string(rest), "\x00")
			if !ok {
				return nil
			}
			if g, err := gone(oci.Digest(subject)); !g || err != nil {
				return err
			}
			o.referrers[oci.Digest(subject)] = append(o.referrers[oci.Digest(subject)], oci.Digest(d))
			return nil
		})
		if err != nil {
			return err
		}
		return scan(txn, prefix(kindGoneSubject, reg, repo), func(rest, v []byte) error {
			if len(v) == 8 {
				o.since[oci.Digest(rest)] = int64(binary.BigEndian.Uint64(v))
			}
			return nil
		})
	})
	return o, err
}

// dropOrphanAccessories deletes the accessories whose subject has been gone from their
// repository since before cutoff, and notes the subjects newly found gone. It returns
// how many accessory tags and manifests it deleted (or would), and how many subjects it
// noted.
func (s *Store) dropOrphanAccessories(ctx context.Context, cutoff int64, dryRun bool) (n, noted int, err error) {
	set := s.accessorySettings()
	if set.keepOrphan {
		return 0, 0, nil
	}
	repos, err := s.repositories()
	if err != nil {
		return 0, 0, err
	}
	for _, r := range repos {
		if err := ctx.Err(); err != nil {
			return n, noted, err
		}
		o, err := s.findOrphans(r[0], r[1], set.recognise)
		if err != nil {
			return n, noted, err
		}
		if len(o.tags)+len(o.referrers)+len(o.since) == 0 {
			continue
		}
		var graph *repoGraph
		if len(o.tags)+len(o.referrers) > 0 {
			if graph, err = s.candidatesGraph(r[0], r[1], o); err != nil {
				return n, noted, err
			}
		}
		for subject := range o.subjects() {
			since, known := o.since[subject]
			_, hasTags := o.tags[subject]
			_, hasRefs := o.referrers[subject]
			switch {
			case !hasTags && !hasRefs: // back, or its accessories gone otherwise
				if !dryRun {
					err = s.updateFreeing(func(txn index.Txn) error { return txn.Delete(goneSubjectKey(r[0], r[1], subject)) })
				}
			case !known:
				noted++
				if !dryRun {
					err = s.updateFreeing(func(txn index.Txn) error { // it leads to freeing
						v := binary.BigEndian.AppendUint64(nil, uint64(s.now().UnixNano()))
						return txn.Set(goneSubjectKey(r[0], r[1], subject), v)
					})
				}
			case since <= cutoff:
				var k int
				k, err = s.dropAccessoriesOf(r[0], r[1], subject, o, graph, set.recognise, cutoff, dryRun)
				n += k
			}
			if err != nil {
				return n, noted, err
			}
		}
	}
	return n, noted, nil
}

// candidatesGraph reads the manifests of reg/repo and, in the same snapshot, the
// reference counts of o's accessory manifests (a change since tells dropAccessoriesOf
// that something new refers to one).
func (s *Store) candidatesGraph(reg, repo string, o *orphans) (*repoGraph, error) {
	var g *repoGraph
	err := s.db.View(func(txn index.Txn) error {
		var err error
		if g, err = s.readGraph(txn, reg, repo); err != nil {
			return err
		}
		g.refs = map[oci.Digest]int64{}
		read := func(d oci.Digest) error {
			v, _, err := getValue(txn, contentRefsKey(d))
			g.refs[d] = decodeRefRecord(v).Refs
			return err
		}
		for subject := range o.subjects() {
			for _, d := range o.manifests(subject) {
				if err := read(d); err != nil {
					return err
				}
			}
		}
		return nil
	})
	return g, err
}

// dropAccessoriesOf deletes, in one transaction that checks the subject is still gone
// (since before cutoff), the accessory tags naming subject and the accessory manifests
// (tagged only by accessory tags of gone subjects, or referrers of it) that nothing else
// keeps: a tag of their own, or an index of the repository listing them that is not
// going too (the referrers tag's index goes with its referrers). A manifest whose
// reference count changed since g was read (an index pushed meanwhile lists it) stays.
func (s *Store) dropAccessoriesOf(reg, repo string, subject oci.Digest, o *orphans, g *repoGraph, recognise *oci.Accessories, cutoff int64, dryRun bool) (int, error) {
	candidates := o.manifests(subject)
	candidate, isReferrer := map[oci.Digest]bool{}, map[oci.Digest]bool{}
	for _, d := range candidates {
		candidate[d] = true
	}
	for _, d := range o.referrers[subject] {
		isReferrer[d] = true
	}
	var removed [][]byte
	defer func() { s.tags.invalidate(removed...) }()
	n := 0
	err := s.updateFreeing(func(txn index.Txn) error {
		n, removed = 0, removed[:0]
		if ok, err := exists(txn, repoManifestKey(reg, repo, subject)); ok || err != nil {
			return err // pushed back
		}
		v, ok, err := getValue(txn, goneSubjectKey(reg, repo, subject))
		if err != nil || !ok || len(v) != 8 || int64(binary.BigEndian.Uint64(v)) > cutoff {
			return err
		}
		for tag, d := range o.tags[subject] {
			tv, ok, err := getValue(txn, tagKey(reg, repo, tag))
			if err != nil {
				return err
			}
			if now, _ := decodeTagValue(tv); !ok || now != d {
				continue // moved or gone meanwhile
			}
			n++
			if dryRun {
				continue
			}
			if err := deleteTag(txn, reg, repo, tag, d); err != nil {
				return err
			}
			removed = append(removed, tagKey(reg, repo, tag))
		}
		// Which candidates stay: present, and kept by a tag of their own, an index that
		// stays, or a change since the snapshot.
		present, kept := map[oci.Digest]bool{}, map[oci.Digest]bool{}
		for _, d := range candidates {
			ok, err := exists(txn, repoManifestKey(reg, repo, d))
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
			present[d] = true
			own, err := s.ownTags(txn, reg, repo, d, recognise)
			if err != nil {
				return err
			}
			rv, _, err := getValue(txn, contentRefsKey(d))
			if err != nil {
				return err
			}
			kept[d] = own || decodeRefRecord(rv).Refs != g.refs[d]
		}
		for changed := true; changed; {
			changed = false
			for _, d := range candidates {
				if !present[d] || kept[d] {
					continue
				}
				for _, p := range g.parents[d] {
					if !candidate[p] || present[p] && kept[p] {
						kept[d], changed = true, true
						break
					}
				}
			}
		}
		for _, d := range candidates {
			if !present[d] || kept[d] {
				// A referrer kept leaves the gone subject's list of referrers (and a
				// stale entry goes).
				if isReferrer[d] && !dryRun {
					if err := txn.Delete(referrerKey(reg, repo, subject, d)); err != nil {
						return err
					}
				}
				continue
			}
			n++
			if dryRun {
				continue
			}
			tags, err := s.deleteManifest(txn, reg, repo, d)
			if err != nil {
				return err
			}
			removed = append(removed, tags...)
		}
		if dryRun {
			return nil
		}
		return txn.Delete(goneSubjectKey(reg, repo, subject))
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}

// ownTags says whether manifest d of reg/repo has a tag other than accessory tags of
// subjects the repository no longer holds (such a tag keeps it).
func (s *Store) ownTags(txn index.Txn, reg, repo string, d oci.Digest, recognise *oci.Accessories) (bool, error) {
	own := false
	err := scanKeys(txn, prefix(kindTagByDigest, reg, repo, string(d)), func(rest []byte) error {
		subject, _, ok := recognise.Subject(string(rest))
		if !ok {
			own = true
			return errStop
		}
		if present, err := exists(txn, repoManifestKey(reg, repo, subject)); present || err != nil {
			own = present
			if err == nil {
				err = errStop
			}
			return err
		}
		return nil
	})
	if err == errStop {
		err = nil
	}
	return own, err
}

// repositories lists every repository of every registry.
func (s *Store) repositories() ([][2]string, error) {
	var repos [][2]string
	err := s.db.View(func(txn index.Txn) error {
		return scanKeys(txn, []byte{kindRepo}, func(rest []byte) error {
			reg, repo, ok := strings.Cut(string(rest), "\x00")
			if ok {
				repos = append(repos, [2]string{reg, repo})
			}
			return nil
		})
	})
	return repos, err
}
