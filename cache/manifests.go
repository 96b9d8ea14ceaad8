package cache

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/dockyard/dockyard/index"
	"github.com/dockyard/dockyard/oci"
)

// StoredManifest is a manifest as pushed: its bytes, untouched, and its media type.
type StoredManifest struct {
	Digest    oci.Digest
	MediaType string
	Content   []byte
	// Warning is set when the manifest is served from cache because its source could
	// not be asked (a proxy whose upstream is down).
	Warning string
}

// repoManifest records a manifest's presence in one repository.
type repoManifest struct {
	MediaType string
	PushedAt  int64 // unix nanoseconds
	PulledAt  int64
	Pulls     int64
	// ListedAt is when an index pushed to the repository last listed it. Conditional
	// deletes compare it: a manifest that became some index's child since a job
	// decided to delete it is not unreachable any more.
	ListedAt int64 `json:",omitempty"`
}

// contentHeader describes manifest bytes and the references they hold: the blobs and
// child manifests it lists, each counted once (or pending until it is stored).
type contentHeader struct {
	MediaType string       `json:"mediaType"`
	Blobs     []oci.Digest `json:"blobs,omitempty"`
	Children  []oci.Digest `json:"children,omitempty"`
	Subject   oci.Digest   `json:"subject,omitempty"`
}

func encodeContent(h contentHeader, data []byte) ([]byte, error) {
	hb, err := json.Marshal(h)
	if err != nil {
		return nil, err
	}
	b := binary.AppendUvarint(make([]byte, 0, len(hb)+len(data)+binary.MaxVarintLen64), uint64(len(hb)))
	b = append(b, hb...)
	return append(b, data...), nil
}

func decodeContent(v []byte) (h contentHeader, data []byte, err error) {
	n, k := binary.Uvarint(v)
	if k <= 0 || uint64(len(v)-k) < n {
		return h, nil, errors.New("cache: corrupt manifest content record")
	}
	if err := json.Unmarshal(v[k:k+int(n)], &h); err != nil {
		return h, nil, err
	}
	return h, v[k+int(n):], nil
}

// GetManifest resolves ref in reg/repo and returns the manifest bytes. Every manifest
// read counts as a pull of the manifest (and of the tag, by tag) for lifecycle rules.
func (s *Store) GetManifest(ctx context.Context, reg, repo string, ref oci.Reference) (*StoredManifest, error) {
	m, err := s.getManifest(ctx, reg, repo, ref)
	if err == nil {
		s.RecordPull(reg, repo, string(ref.Tag), m.Digest)
	}
	return m, err
}

// HeadManifest resolves ref like GetManifest without counting a pull.
func (s *Store) HeadManifest(ctx context.Context, reg, repo string, ref oci.Reference) (*StoredManifest, error) {
	return s.getManifest(ctx, reg, repo, ref)
}

func (s *Store) getManifest(ctx context.Context, reg, repo string, ref oci.Reference) (*StoredManifest, error) {
	m := &StoredManifest{Digest: ref.Digest}
	var tk []byte
	if !ref.IsDigest() {
		tk = tagKey(reg, repo, string(ref.Tag))
		if e, ok := s.tags.get(tk); ok {
			m.Digest, m.MediaType = e.digest, e.mediaType
			return s.manifestContent(reg, repo, m)
		}
	}
	gen := s.tags.generation()
	// One key, read on its own (on PostgreSQL one statement instead of a transaction's
	// three): the hot path of every pull.
	k := tk
	if ref.IsDigest() {
		k = repoManifestKey(reg, repo, ref.Digest)
	}
	v, err := index.GetOne(s.db, k)
	if errors.Is(err, index.ErrNotFound) {
		return nil, unknownManifest(false, ref)
	}
	if err != nil {
		return nil, err
	}
	if !ref.IsDigest() {
		m.Digest, m.MediaType = decodeTagValue(v)
	} else {
		var rm repoManifest
		if err := decodeJSON(v, &rm); err != nil {
			return nil, err
		}
		m.MediaType = rm.MediaType
	}
	if tk != nil {
		s.tags.fill(tk, gen, tagEntry{m.Digest, m.MediaType})
	}
	return s.manifestContent(reg, repo, m)
}

// manifestContent fills in the bytes of m, from memory when they are small and were
// read before.
func (s *Store) manifestContent(reg, repo string, m *StoredManifest) (*StoredManifest, error) {
	if c, ok := s.contents.get(m.Digest); ok {
		m.Content = c
		return m, nil
	}
	err := s.db.View(func(txn index.Txn) error {
		v, err := txn.Get(contentKey(m.Digest))
		if err != nil {
			return err
		}
		_, m.Content, err = decodeContent(v)
		return err
	})
	if errors.Is(err, index.ErrNotFound) {
		return nil, fmt.Errorf("index: manifest %s is in %s/%s but its content is missing", m.Digest, reg, repo)
	}
	if err == nil {
		s.contents.add(m.Digest, m.Content)
	}
	return m, err
}

func unknownManifest(found bool, ref oci.Reference) error {
	if found {
		return nil
	}
	return oci.ErrManifestUnknown.Withf("manifest %s is unknown to the repository", ref)
}

// PutManifestRequest is a validated manifest push.
type PutManifestRequest struct {
	Registry, Repo string
	Digest         oci.Digest
	Content        []byte
	Manifest       *oci.Manifest
	Tags           []oci.Tag
	// AllowSparse accepts manifests whose layers or child manifests are not all in the
	// repository (mirrors of partial images). Only what exists is counted.
	AllowSparse bool
	// Immutable names, for tags that may not move to another manifest, why not.
	Immutable map[oci.Tag]string
}

// PutManifest stores a manifest, its tags and its referrer entry in one transaction,
// after checking (unless sparse) that every blob and child manifest it references is in
// the repository.
func (s *Store) PutManifest(ctx context.Context, p PutManifestRequest) error {
	give, err := s.holdManifest(int64(len(p.Content)))
	if err != nil {
		return err
	}
	defer give()
	now := s.now().UnixNano()
	m := p.Manifest
	var changed [][]byte
	defer func() { s.tags.invalidate(changed...) }()
	return s.update(func(txn index.Txn) error {
		changed = changed[:0]
		var blobs, children []oci.Digest
		for _, b := range m.RequiredBlobs() {
			ok, err := exists(txn, linkKey(p.Registry, p.Repo, b.Digest))
			if err != nil {
				return err
			}
			if !ok && !p.AllowSparse {
				return oci.ErrManifestBlobUnknown.Withf("blob %s referenced by the manifest is not in repository %s", b.Digest, p.Repo)
			}
			if !slices.Contains(blobs, b.Digest) {
				blobs = append(blobs, b.Digest)
			}
		}
		for _, c := range m.Children {
			if slices.Contains(children, c.Digest) {
				continue
			}
			children = append(children, c.Digest)
			ck := repoManifestKey(p.Registry, p.Repo, c.Digest)
			var child repoManifest
			ok, err := getJSON(txn, ck, &child)
			if err != nil {
				return err
			}
			if !ok {
				if !p.AllowSparse {
					return oci.ErrManifestBlobUnknown.Withf("manifest %s listed by the index is not in repository %s", c.Digest, p.Repo)
				}
				continue
			}
			// A job deleting the child conditionally reads this record: writing it
			// makes that job's transaction see the new parent (or conflict).
			child.ListedAt = now
			if err := setJSON(txn, ck, child); err != nil {
				return err
			}
		}
		if err := s.putContent(txn, p, blobs, children); err != nil {
			return err
		}
		mk := repoManifestKey(p.Registry, p.Repo, p.Digest)
		var rm repoManifest
		found, err := getJSON(txn, mk, &rm)
		if err != nil {
			return err
		}
		// Back in the repository: a note that it was gone (accessories.go) no longer
		// holds. Read first, so that a push writes nothing when there is none.
		if gk := goneSubjectKey(p.Registry, p.Repo, p.Digest); !found {
			if noted, err := exists(txn, gk); err != nil {
				return err
			} else if noted {
				if err := txn.Delete(gk); err != nil {
					return err
				}
			}
		}
		if !found {
			if err := s.addRef(txn, contentRefsKey(p.Digest), int64(len(p.Content)), 1); err != nil {
				return err
			}
		}
		rm.MediaType, rm.PushedAt = m.MediaType, now
		if err := setJSON(txn, mk, rm); err != nil {
			return err
		}
		for _, t := range p.Tags {
			k := tagKey(p.Registry, p.Repo, string(t))
			v, found, err := getValue(txn, k)
			if err != nil {
				return err
			}
			if old, _ := decodeTagValue(v); found && old != p.Digest {
				if why, ok := p.Immutable[t]; ok {
					return oci.ErrDenied.Withf("tag %s:%s is immutable (%s) and already points at %s; push a new version instead", p.Repo, t, why, old)
				}
				if err := txn.Delete(tagByDigestKey(p.Registry, p.Repo, old, string(t))); err != nil {
					return err
				}
				// The tag names other content now: its pulls were the old content's.
				if err := txn.Delete(tagAccessKey(p.Registry, p.Repo, string(t))); err != nil {
					return err
				}
			}
			changed = append(changed, k)
			if err := txn.Set(k, tagValue(p.Digest, m.MediaType, now)); err != nil {
				return err
			}
			if err := txn.Set(tagByDigestKey(p.Registry, p.Repo, p.Digest, string(t)), nil); err != nil {
				return err
			}
		}
		if m.Subject != nil {
			desc := oci.Descriptor{MediaType: m.MediaType, Digest: p.Digest, Size: int64(len(p.Content)),
				ArtifactType: m.ArtifactType, Annotations: m.Annotations}
			if err := setJSON(txn, referrerKey(p.Registry, p.Repo, m.Subject.Digest, p.Digest), desc); err != nil {
				return err
			}
		}
		return s.touchRepo(txn, p.Registry, p.Repo)
	})
}

// putContent stores manifest bytes the first time they are seen, counting the
// references they make.
func (s *Store) putContent(txn index.Txn, p PutManifestRequest, blobs, children []oci.Digest) error {
	ck := contentKey(p.Digest)
	if ok, err := exists(txn, ck); ok || err != nil {
		return err
	}
	h := contentHeader{MediaType: p.Manifest.MediaType, Blobs: blobs, Children: children}
	if p.Manifest.Subject != nil {
		h.Subject = p.Manifest.Subject.Digest
	}
	v, err := encodeContent(h, p.Content)
	if err != nil {
		return err
	}
	if err := txn.Set(ck, v); err != nil {
		return err
	}
	if err := s.ensureRecord(txn, kindContentRefs, p.Digest, int64(len(p.Content))); err != nil {
		return err
	}
	for _, b := range blobs {
		if err := s.reference(txn, kindBlob, b, p.Digest); err != nil {
			return err
		}
	}
	for _, c := range children {
		if err := s.reference(txn, kindContentRefs, c, p.Digest); err != nil {
			return err
		}
	}
	return nil
}

// Protect is asked, inside a deleting transaction, about every tag the delete would
// remove, and about the tags of every index in the repository that lists the manifest
// (directly or through other indexes): an error refuses the delete. Asked in the
// transaction, a tag pushed while the delete runs cannot slip past it.
type Protect func(tag string) error

// DeleteManifest removes manifest d from reg/repo with every tag that points at it and
// its referrer entry. protect (nil: nothing is protected) may refuse it.
func (s *Store) DeleteManifest(ctx context.Context, reg, repo string, d oci.Digest, protect Protect) error {
	var tags [][]byte
	defer func() { s.tags.invalidate(tags...) }()
	return s.updateFreeing(func(txn index.Txn) error {
		tags = tags[:0]
		if ok, err := exists(txn, repoManifestKey(reg, repo, d)); !ok || err != nil {
			return errors.Join(err, unknownManifest(ok, oci.Reference{Digest: d}))
		}
		if protect != nil {
			if err := s.protectManifest(txn, reg, repo, d, protect); err != nil {
				return err
			}
		}
		if hookBeforeConditionalDelete != nil {
			hookBeforeConditionalDelete()
		}
		var err error
		tags, err = s.deleteManifest(txn, reg, repo, d)
		return err
	})
}

// protectManifest asks protect about the tags of d and of every index above it.
func (s *Store) protectManifest(txn index.Txn, reg, repo string, d oci.Digest, protect Protect) error {
	parents, err := s.parents(txn, reg, repo)
	if err != nil {
		return err
	}
	seen := map[oci.Digest]bool{}
	queue := []oci.Digest{d}
	for len(queue) > 0 {
		m := queue[0]
		queue = queue[1:]
		if seen[m] {
			continue
		}
		seen[m] = true
		err := scanKeys(txn, prefix(kindTagByDigest, reg, repo, string(m)), func(tag []byte) error {
			return protect(string(tag))
		})
		if err != nil {
			return err
		}
		queue = append(queue, parents[m]...)
	}
	return nil
}

// protectBlob asks protect about the tags of every manifest of reg/repo listing blob d
// (and of the indexes above them).
func (s *Store) protectBlob(txn index.Txn, reg, repo string, d oci.Digest, protect Protect) error {
	return scanKeys(txn, prefix(kindRepoManifest, reg, repo), func(rest []byte) error {
		m := oci.Digest(rest)
		h, err := s.header(txn, m)
		if err != nil || h == nil || !slices.Contains(h.Blobs, d) {
			return err
		}
		return s.protectManifest(txn, reg, repo, m, protect)
	})
}

// parents maps each manifest of reg/repo to the indexes of the repository listing it.
// Reading every manifest record puts them in the transaction's read set: an index
// tagged meanwhile makes the transaction conflict.
func (s *Store) parents(txn index.Txn, reg, repo string) (map[oci.Digest][]oci.Digest, error) {
	out := map[oci.Digest][]oci.Digest{}
	err := scanKeys(txn, prefix(kindRepoManifest, reg, repo), func(rest []byte) error {
		idx := oci.Digest(rest)
		h, err := s.header(txn, idx)
		if err != nil || h == nil {
			return err
		}
		for _, c := range h.Children {
			out[c] = append(out[c], idx)
		}
		return nil
	})
	return out, err
}

// header reads the content header of manifest d (nil when its content is gone).
func (s *Store) header(txn index.Txn, d oci.Digest) (*contentHeader, error) {
	v, err := txn.Get(contentKey(d))
	if errors.Is(err, index.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	h, _, err := decodeContent(v)
	return &h, err
}

// deleteManifest removes d from reg/repo inside txn: its record (releasing the
// repository's reference), every tag pointing at it with their pull records, and its
// referrer entry. It returns the tag keys removed, for the tag cache.
func (s *Store) deleteManifest(txn index.Txn, reg, repo string, d oci.Digest) ([][]byte, error) {
	if err := txn.Delete(repoManifestKey(reg, repo, d)); err != nil {
		return nil, err
	}
	if err := s.addRef(txn, contentRefsKey(d), 0, -1); err != nil {
		return nil, err
	}
	bp := prefix(kindTagByDigest, reg, repo, string(d))
	byDigest, err := keysWithPrefix(txn, bp)
	if err != nil {
		return nil, err
	}
	var tags [][]byte
	for _, bk := range byDigest {
		tag := string(bk[len(bp):])
		k := tagKey(reg, repo, tag)
		tags = append(tags, k)
		for _, dk := range [][]byte{k, bk, tagAccessKey(reg, repo, tag)} {
			if err := txn.Delete(dk); err != nil {
				return nil, err
			}
		}
	}
	h, err := s.header(txn, d)
	if err != nil {
		return nil, err
	}
	if h != nil && h.Subject != "" {
		if err := txn.Delete(referrerKey(reg, repo, h.Subject, d)); err != nil {
			return nil, err
		}
	}
	return tags, nil
}

// DeleteTag removes a tag; the manifest stays. protect (nil: nothing is protected)
// may refuse it.
func (s *Store) DeleteTag(ctx context.Context, reg, repo string, tag oci.Tag, protect Protect) error {
	k := tagKey(reg, repo, string(tag))
	defer s.tags.invalidate(k)
	return s.updateFreeing(func(txn index.Txn) error {
		v, ok, err := getValue(txn, k)
		if !ok || err != nil {
			return errors.Join(err, unknownManifest(ok, oci.Reference{Tag: tag}))
		}
		if protect != nil {
			if err := protect(string(tag)); err != nil {
				return err
			}
		}
		d, _ := decodeTagValue(v)
		return deleteTag(txn, reg, repo, string(tag), d)
	})
}

func deleteTag(txn index.Txn, reg, repo, tag string, d oci.Digest) error {
	for _, k := range [][]byte{tagKey(reg, repo, tag), tagByDigestKey(reg, repo, d, tag), tagAccessKey(reg, repo, tag)} {
		if err := txn.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// DeleteTagIf removes a tag only if it still points at d and was not pushed after
// pushedBefore: what a retention job decided from a snapshot still holds when it acts.
// deleted is false when the tag is gone or changed.
func (s *Store) DeleteTagIf(ctx context.Context, reg, repo string, tag oci.Tag, d oci.Digest, pushedBefore time.Time) (deleted bool, err error) {
	k := tagKey(reg, repo, string(tag))
	defer s.tags.invalidate(k)
	err = s.updateFreeing(func(txn index.Txn) error {
		deleted = false
		v, ok, err := getValue(txn, k)
		if !ok || err != nil {
			return err
		}
		if now, _ := decodeTagValue(v); now != d || tagPushedAt(v) > pushedBefore.UnixNano() {
			return nil
		}
		if hookBeforeConditionalDelete != nil {
			hookBeforeConditionalDelete()
		}
		deleted = true
		return deleteTag(txn, reg, repo, string(tag), d)
	})
	return deleted, err
}

// hookBeforeConditionalDelete, set by tests only, runs inside conditional deletes after
// the condition was checked and before the transaction commits.
var hookBeforeConditionalDelete func()

// ListTags returns up to n tags of reg/repo after last, in byte order, and whether
// more follow.
func (s *Store) ListTags(ctx context.Context, reg, repo, last string, n int) ([]string, bool, error) {
	var tags []string
	var more bool
	err := s.db.View(func(txn index.Txn) error {
		ok, err := exists(txn, repoKey(reg, repo))
		if err != nil {
			return err
		}
		if !ok {
			return oci.ErrNameUnknown.Withf("repository %s is unknown", repo)
		}
		tags, more, err = list(txn, prefix(kindTag, reg, repo), last, n)
		return err
	})
	return tags, more, err
}

// ListRepositories returns up to n repository names of reg after last.
func (s *Store) ListRepositories(ctx context.Context, reg, last string, n int) ([]string, bool, error) {
	var repos []string
	var more bool
	err := s.db.View(func(txn index.Txn) (err error) {
		repos, more, err = list(txn, prefix(kindRepo, reg), last, n)
		return err
	})
	return repos, more, err
}

// list pages through the names below p in key order.
func list(txn index.Txn, p []byte, last string, n int) (names []string, more bool, err error) {
	start := append(bytes.Clone(p), last...)
	err = txn.Scan(p, start, true, func(k, _ []byte) error {
		name := string(k[len(p):])
		if last != "" && name <= last {
			return nil
		}
		if len(names) == n {
			more = true
			return errStop
		}
		names = append(names, name)
		return nil
	})
	if errors.Is(err, errStop) {
		err = nil
	}
	return names, more, err
}

// Referrers lists the manifests in reg/repo whose subject is d.
func (s *Store) Referrers(ctx context.Context, reg, repo string, d oci.Digest) ([]oci.Descriptor, error) {
	out := []oci.Descriptor{}
	err := s.db.View(func(txn index.Txn) error {
		return scan(txn, prefix(kindReferrer, reg, repo, string(d)), func(_, v []byte) error {
			var desc oci.Descriptor
			if err := json.Unmarshal(v, &desc); err != nil {
				return err
			}
			out = append(out, desc)
			return nil
		})
	})
	return out, err
}

// tagPushTime is when the tag whose value is v was pushed; a tag recorded before tags
// had their own push time has its manifest's.
func tagPushTime(txn index.Txn, reg, repo string, d oci.Digest, v []byte) (time.Time, error) {
	pushed := tagPushedAt(v)
	if pushed == 0 {
		var rm repoManifest
		if _, err := getJSON(txn, repoManifestKey(reg, repo, d), &rm); err != nil {
			return time.Time{}, err
		}
		pushed = rm.PushedAt
	}
	return time.Unix(0, pushed), nil
}

// TagInfo is what lifecycle rules know of a tag.
type TagInfo struct {
	Tag      string
	Digest   oci.Digest
	PushedAt time.Time // when the tag was last pushed
	PulledAt time.Time // zero: never pulled
}

// TagInfos lists the tags of reg/repo with their push and pull times. It writes the
// pulls gathered first, as a write that frees space: retention asks, to delete tags.
func (s *Store) TagInfos(ctx context.Context, reg, repo string) ([]TagInfo, error) {
	if err := s.flushAccess(true); err != nil {
		return nil, err
	}
	var out []TagInfo
	err := s.db.View(func(txn index.Txn) error {
		return scan(txn, prefix(kindTag, reg, repo), func(tag, v []byte) error {
			ti := TagInfo{Tag: string(tag)}
			ti.Digest, _ = decodeTagValue(v)
			var err error
			if ti.PushedAt, err = tagPushTime(txn, reg, repo, ti.Digest, v); err != nil {
				return err
			}
			var a Access
			if _, err := getJSON(txn, tagAccessKey(reg, repo, ti.Tag), &a); err != nil {
				return err
			}
			if a.PulledAt != 0 {
				ti.PulledAt = time.Unix(0, a.PulledAt)
			}
			out = append(out, ti)
			return nil
		})
	})
	return out, err
}

// TagsOf lists the tags of reg/repo pointing at manifest d.
func (s *Store) TagsOf(ctx context.Context, reg, repo string, d oci.Digest) ([]string, error) {
	var tags []string
	err := s.db.View(func(txn index.Txn) error {
		return scanKeys(txn, prefix(kindTagByDigest, reg, repo, string(d)), func(rest []byte) error {
			tags = append(tags, string(rest))
			return nil
		})
	})
	return tags, err
}

// CheckProtected asks protect about the tags of manifest d of reg/repo and of every
// index of the repository listing it (directly or through other indexes), as a delete
// of d does; its error, if any, is returned.
func (s *Store) CheckProtected(ctx context.Context, reg, repo string, d oci.Digest, protect Protect) error {
	return s.db.View(func(txn index.Txn) error { return s.protectManifest(txn, reg, repo, d, protect) })
}
