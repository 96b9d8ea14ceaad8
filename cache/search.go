package cache

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/dockyard/dockyard/index"
	"github.com/dockyard/dockyard/oci"
)

// What search reads of the index: tags in key order, one range scan per registry, and
// the details of the few tags a page shows. Nothing here lists storage.

// TagEntry is a tag as the index keeps it.
type TagEntry struct {
	Repo, Tag string
	Digest    oci.Digest
	MediaType string
	PushedAt  time.Time
}

// TagScan names where a scan of a registry's tags starts: after the tag
// (AfterRepo, AfterTag), both empty for the first; Repo narrows it to one repository.
type TagScan struct {
	Registry, Repo      string
	AfterRepo, AfterTag string
	// KeysOnly reads names only (Repo and Tag; FillTags reads the rest): a fraction of
	// the work on PostgreSQL, where values travel in much smaller pages.
	KeysOnly bool
}

// ScanTags calls fn with the tags of a registry in (repository, tag) byte order, from
// one snapshot, until fn returns false or ctx ends.
func (s *Store) ScanTags(ctx context.Context, at TagScan, fn func(TagEntry) bool) error {
	p := prefix(kindTag, at.Registry)
	if at.Repo != "" {
		p = prefix(kindTag, at.Registry, at.Repo)
	}
	var start []byte
	if at.AfterRepo != "" {
		// The first key after the tag's: its own key with the separator appended.
		start = append(key(kindTag, at.Registry, at.AfterRepo, at.AfterTag), 0)
		if !bytes.HasPrefix(start, p) {
			return nil
		}
	}
	base := prefix(kindTag, at.Registry)
	n := 0
	var repo string // the last repository's name, made once for all its tags
	err := s.db.View(func(txn index.Txn) error {
		return txn.Scan(p, start, at.KeysOnly, func(k, v []byte) error {
			if n++; n%1024 == 0 && ctx.Err() != nil {
				return ctx.Err()
			}
			rest := k[len(base):]
			i := bytes.IndexByte(rest, 0)
			if i < 0 {
				return nil
			}
			if string(rest[:i]) != repo {
				repo = string(rest[:i])
			}
			e := TagEntry{Repo: repo, Tag: string(rest[i+1:])}
			if at.KeysOnly {
				if !fn(e) {
					return errStop
				}
				return nil
			}
			var err error
			if e, err = filledTag(txn, at.Registry, e, v); err != nil {
				return err
			}
			if !fn(e) {
				return errStop
			}
			return nil
		})
	})
	if errors.Is(err, errStop) {
		err = nil
	}
	return err
}

// FillTags reads the digest, media type and push time of tags of reg found by a
// keys-only scan, in one snapshot; tags deleted since are left out.
func (s *Store) FillTags(ctx context.Context, reg string, es []TagEntry) ([]TagEntry, error) {
	keys := make([][]byte, len(es))
	for i, e := range es {
		keys[i] = tagKey(reg, e.Repo, e.Tag)
	}
	out := es[:0:0]
	err := s.db.View(func(txn index.Txn) error {
		vals, err := index.GetMany(txn, keys)
		if err != nil {
			return err
		}
		for i, v := range vals {
			if v == nil {
				continue
			}
			e, err := filledTag(txn, reg, es[i], v)
			if err != nil {
				return err
			}
			out = append(out, e)
		}
		return nil
	})
	return out, err
}

// filledTag fills e (its Repo and Tag set) from the tag's value v.
func filledTag(txn index.Txn, reg string, e TagEntry, v []byte) (TagEntry, error) {
	e.Digest, e.MediaType = decodeTagValue(v)
	var err error
	e.PushedAt, err = tagPushTime(txn, reg, e.Repo, e.Digest, v)
	return e, err
}

// ImageDetails is what search shows of a tagged manifest besides its tag entry.
type ImageDetails struct {
	// Size is the bytes a pull of every platform transfers: the manifest, its config
	// and layers; for an index, itself and its stored children's.
	Size         int64
	Platforms    []string // os/architecture[/variant]
	ArtifactType string
	Annotations  map[string]string
	Labels       map[string]string // the image configuration's labels (single images)
	PulledAt     time.Time         // last pull through the tag (zero: never)
	Pulls        int64             // pulls through the tag
	// Missing: the manifest is no longer stored (deleted since it was listed).
	Missing bool
}

// maxRememberedConfigs bounds the image configurations kept in memory for details.
const maxRememberedConfigs = 4096

// maxConfigSize bounds an image configuration read for its labels and platform.
const maxConfigSize = 256 << 10

// imageConfig is what details take from an image configuration blob.
type imageConfig struct {
	OS           string `json:"os"`
	Architecture string `json:"architecture"`
	Variant      string `json:"variant"`
	Config       struct {
		Labels map[string]string `json:"Labels"`
	} `json:"config"`
}

// maxChildren bounds the children of an index whose own details are read.
const maxChildren = 256

// DetailsOf names a tagged manifest whose details are asked for.
type DetailsOf struct {
	Repo, Tag string // Tag "" when read by digest: the pulls are then the manifest's
	Digest    oci.Digest
}

// ImageDetails reads the details of manifests in reg, in one snapshot and a few
// reads: the manifests, their children, the pull records.
func (s *Store) ImageDetails(ctx context.Context, reg string, of []DetailsOf) ([]ImageDetails, error) {
	out := make([]ImageDetails, len(of))
	type parsed struct {
		m    *oci.Manifest
		size int64 // with the stored children's
	}
	manifests := map[oci.Digest]*parsed{}
	err := s.db.View(func(txn index.Txn) error {
		var ds []oci.Digest
		for _, o := range of {
			if _, ok := manifests[o.Digest]; !ok {
				manifests[o.Digest] = nil
				ds = append(ds, o.Digest)
			}
		}
		read, err := storedManifests(txn, ds)
		if err != nil {
			return err
		}
		var children []oci.Digest
		for i, d := range ds {
			if read[i].m == nil {
				continue // deleted since it was listed: Missing
			}
			manifests[d] = &parsed{m: read[i].m, size: read[i].size}
			for j, c := range read[i].m.Children {
				if j < maxChildren {
					children = append(children, c.Digest)
				}
			}
		}
		slices.Sort(children)
		children = slices.Compact(children)
		sizes, err := storedManifests(txn, children)
		if err != nil {
			return err
		}
		for _, p := range manifests {
			if p == nil {
				continue
			}
			for j, c := range p.m.Children {
				if j == maxChildren {
					break
				}
				if i, ok := slices.BinarySearch(children, c.Digest); ok && sizes[i].m != nil {
					p.size += sizes[i].size
				} else {
					p.size += c.Size // not stored (a sparse index, a proxy's partial copy)
				}
			}
		}
		keys := make([][]byte, len(of))
		for i, o := range of {
			if o.Tag != "" {
				keys[i] = tagAccessKey(reg, o.Repo, o.Tag)
			} else {
				keys[i] = repoManifestKey(reg, o.Repo, o.Digest)
			}
		}
		vals, err := index.GetMany(txn, keys)
		if err != nil {
			return err
		}
		for i, o := range of {
			d, v := &out[i], vals[i]
			if v != nil {
				var a struct{ PulledAt, Pulls int64 } // Access and repoManifest share these
				if err := json.Unmarshal(v, &a); err != nil {
					return err
				}
				d.Pulls, d.PulledAt = a.Pulls, unixNanos(a.PulledAt)
			}
			if o.Tag == "" && v == nil {
				d.Missing = true // not in the repository any more
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for i, o := range of {
		p, d := manifests[o.Digest], &out[i]
		if p == nil {
			d.Missing = true
			continue
		}
		d.Size, d.Annotations = p.size, p.m.Annotations
		if c := p.m.Config; c == nil || p.m.ArtifactType != c.MediaType || !isImageConfig(c.MediaType) {
			d.ArtifactType = p.m.ArtifactType // an artifact's, not an image's config type
		}
		if p.m.IsIndex() {
			for _, c := range p.m.Children {
				if pl := platformOf(c.Platform); pl != "" {
					d.Platforms = append(d.Platforms, pl)
				}
			}
			continue
		}
		if c := s.imageConfig(ctx, p.m); c != nil {
			d.Labels = c.Config.Labels
			if pl := platformString(c.OS, c.Architecture, c.Variant); pl != "" {
				d.Platforms = []string{pl}
			}
		}
	}
	return out, nil
}

// sizedManifest is a stored manifest parsed, with the size a pull of it transfers
// (manifest, config, layers); m is nil when it is not stored.
type sizedManifest struct {
	m    *oci.Manifest
	size int64
}

// storedManifests reads and parses stored manifests.
func storedManifests(txn index.Txn, ds []oci.Digest) ([]sizedManifest, error) {
	keys := make([][]byte, len(ds))
	for i, d := range ds {
		keys[i] = contentKey(d)
	}
	vals, err := index.GetMany(txn, keys)
	if err != nil {
		return nil, err
	}
	out := make([]sizedManifest, len(ds))
	for i, v := range vals {
		if v == nil {
			continue
		}
		h, data, err := decodeContent(v)
		if err != nil {
			return nil, err
		}
		m, err := oci.ParseManifest(h.MediaType, data)
		if err != nil {
			return nil, err
		}
		size := int64(len(data))
		if m.Config != nil {
			size += m.Config.Size
		}
		for _, l := range m.Layers {
			size += l.Size
		}
		out[i] = sizedManifest{m, size}
	}
	return out, nil
}

// imageConfig reads the image configuration of m when it is one (small, and stored
// here), remembering it by digest; nil when there is none to read.
func (s *Store) imageConfig(ctx context.Context, m *oci.Manifest) *imageConfig {
	c := m.Config
	if c == nil || c.Size > maxConfigSize || !isImageConfig(c.MediaType) {
		return nil
	}
	if v, ok := s.configs.Get(c.Digest); ok {
		return v
	}
	r, _, err := s.blobs.Open(ctx, c.Digest)
	if err != nil {
		return nil // not stored (a proxy that never fetched it) or unreadable: no details
	}
	defer r.Close()
	var ic imageConfig
	if err := json.NewDecoder(io.LimitReader(r, maxConfigSize)).Decode(&ic); err != nil {
		return nil
	}
	ic.Config.Labels = boundLabels(ic.Config.Labels)
	s.configs.Add(c.Digest, &ic)
	return &ic
}

// maxLabelBytes bounds the labels kept of one image configuration (in memory, and in
// every result showing them): the standard ones, then the smallest, until the bound.
const maxLabelBytes = 16 << 10

func boundLabels(m map[string]string) map[string]string {
	size := 0
	for k, v := range m {
		size += len(k) + len(v)
	}
	if size <= maxLabelBytes {
		return m
	}
	keys := slices.Collect(maps.Keys(m))
	// The standard annotations first (a description, a source, a version), then the
	// smallest.
	std := func(k string) bool { return strings.HasPrefix(k, "org.opencontainers.image.") }
	slices.SortFunc(keys, func(a, b string) int {
		if std(a) != std(b) {
			if std(a) {
				return -1
			}
			return 1
		}
		return (len(a) + len(m[a])) - (len(b) + len(m[b]))
	})
	out, used := map[string]string{}, 0
	for _, k := range keys {
		if used+len(k)+len(m[k]) > maxLabelBytes {
			break
		}
		used += len(k) + len(m[k])
		out[k] = m[k]
	}
	return out
}

func isImageConfig(mt string) bool {
	return mt == "application/vnd.oci.image.config.v1+json" || mt == "application/vnd.docker.container.image.v1+json"
}

// platformOf formats an index entry's platform.
func platformOf(raw json.RawMessage) string {
	var p struct {
		OS           string `json:"os"`
		Architecture string `json:"architecture"`
		Variant      string `json:"variant"`
	}
	if len(raw) == 0 || json.Unmarshal(raw, &p) != nil {
		return ""
	}
	return platformString(p.OS, p.Architecture, p.Variant)
}

func platformString(os, arch, variant string) string {
	if os == "" && arch == "" {
		return ""
	}
	if variant != "" {
		return os + "/" + arch + "/" + variant
	}
	return os + "/" + arch
}

func unixNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// RegistryBytes sums, for each registry, the sizes of the blobs linked into its
// repositories, each blob once per registry (a layer several repositories share counts
// once; one several registries share counts in each). Manifests are not counted. It
// walks the links in digest order, a bounded batch of blobs at a time.
func (s *Store) RegistryBytes(ctx context.Context) (map[string]int64, error) {
	out := map[string]int64{}
	const batch = 1000
	type blob struct {
		d    string
		regs []string
	}
	var pending []blob
	flush := func(txn index.Txn) error {
		keys := make([][]byte, len(pending))
		for i, b := range pending {
			keys[i] = blobKey(oci.Digest(b.d))
		}
		vals, err := index.GetMany(txn, keys)
		if err != nil {
			return err
		}
		for i, v := range vals {
			if v == nil {
				continue
			}
			size := decodeRefRecord(v).Size
			for _, reg := range pending[i].regs {
				out[reg] += size
			}
		}
		pending = pending[:0]
		return ctx.Err()
	}
	err := s.db.View(func(txn index.Txn) error {
		err := txn.Scan([]byte{kindLinkByDigest}, nil, true, func(k, _ []byte) error {
			parts := bytes.SplitN(k[1:], []byte{0}, 3) // digest, registry, repository
			if len(parts) != 3 {
				return nil
			}
			if n := len(pending); n == 0 || pending[n-1].d != string(parts[0]) {
				if n == batch {
					if err := flush(txn); err != nil {
						return err
					}
				}
				pending = append(pending, blob{d: string(parts[0])})
			}
			b := &pending[len(pending)-1]
			if !slices.Contains(b.regs, string(parts[1])) {
				b.regs = append(b.regs, string(parts[1]))
			}
			return nil
		})
		if err != nil || len(pending) == 0 {
			return err
		}
		return flush(txn)
	})
	return out, err
}
