package vhost

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/dockyard/dockyard/cache"
	"github.com/dockyard/dockyard/oci"
)

// Search finds repositories and tags in what a registry has stored: a hosted
// registry's content, a proxy's cache, a group's members' (union, in walk order). It
// reads the index only, never an upstream and never a listing of storage.

// Stored lists the registries whose stored content reg answers from, in walk order,
// each once.
func Stored(reg Registry) []*Hosted {
	var out []*Hosted
	var walk func(Registry)
	walk = func(r Registry) {
		switch r := r.(type) {
		case *Group:
			for _, m := range r.members {
				walk(m)
			}
		case local:
			h := r.Local()
			if !slices.ContainsFunc(out, func(o *Hosted) bool { return o.name == h.name }) {
				out = append(out, h)
			}
		}
	}
	walk(reg)
	return out
}

// Bounds of one search request. A request that reaches one returns what it found with
// a cursor to continue from: keyset pages, never an unbounded walk.
const (
	// MaxSearchPage bounds the results of one page.
	MaxSearchPage = 500
	// maxScanned bounds the tag entries one request examines.
	maxScanned = 200_000
	// maxInspected bounds the tags one request reads details of to filter them (by
	// label or last pull).
	maxInspected = 5_000
	// maxRepositories bounds the repositories a repository search collects.
	maxRepositories = 100_000
)

// TagQuery selects tags. Empty fields select everything.
type TagQuery struct {
	Text     string // a case-insensitive part of "repository:tag"
	Registry string // one stored registry (a group's member, a proxy)
	Tag      string // glob over the tag ("*", "?", character classes)
	Class    string // release, rc, snapshot, other (Classify decides)
	Classify func(tag string) string
	// PushedAfter and PulledBefore compare the tag's own times (a tag never pulled
	// was pulled before any time).
	PushedAfter, PulledBefore time.Time
	Labels                    map[string]string // each must equal a config label or a manifest annotation
	// Visible says whether a repository is searched: the caller may pull it and it
	// matches the query's repository filter.
	Visible func(repo string) bool
	Cursor  string // from the previous page's Next
	Limit   int
}

// TagHit is one tag found.
type TagHit struct {
	Registry   string
	Repository string
	Tag        string
	Digest     oci.Digest
	MediaType  string
	Class      string
	PushedAt   time.Time
	cache.ImageDetails
}

// TagPage is one page of tags; Next is empty on the last.
type TagPage struct {
	Tags []TagHit
	Next string
}

// cursor is where a page ended: the last entry examined.
type cursor struct {
	Registry string `json:"g"`
	Repo     string `json:"r"`
	Tag      string `json:"t,omitempty"`
}

func (c cursor) encode() string {
	b, _ := json.Marshal(c)
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeCursor(s string) (cursor, error) {
	var c cursor
	if s == "" {
		return c, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || json.Unmarshal(b, &c) != nil || c.Registry == "" {
		return c, oci.ErrPaginationInvalid.Withf("invalid search cursor")
	}
	return c, nil
}

// inspectBatch is how many candidates are gathered before their details are read to
// filter them: one snapshot per batch, not one per tag.
const inspectBatch = 256

// SearchTags returns a page of the tags of reg's stored content that q selects, in
// (registry walk order, repository, tag) order.
func SearchTags(ctx context.Context, reg Registry, q TagQuery) (TagPage, error) {
	var page TagPage
	at, err := decodeCursor(q.Cursor)
	if err != nil {
		return page, err
	}
	regs, start, err := searchStart(reg, q.Registry, at)
	if err != nil {
		return page, err
	}
	limit := min(max(q.Limit, 1), MaxSearchPage)
	inspect := len(q.Labels) > 0 || !q.PulledBefore.IsZero()
	cheap := q.cheapFilter()
	// Only the push time filter needs the tags' values while scanning.
	keysOnly := q.PushedAfter.IsZero()
	scanned, inspected := 0, 0
	for i := start; i < len(regs); i++ {
		h := regs[i]
		after := cursor{Registry: h.name}
		if i == start && at.Registry != "" {
			after = at
		}
		for {
			if len(page.Tags) == limit {
				page.Next = cursorOf(page.Tags[limit-1]).encode()
				return page, detailsUnlessRead(ctx, regs, page.Tags, inspect)
			}
			// Gather candidates passing the filters that need only the tag entry.
			var batch []TagHit
			last := after // the last entry scanned
			stopped := false
			scan := cache.TagScan{Registry: h.name, AfterRepo: after.Repo, AfterTag: after.Tag, KeysOnly: keysOnly}
			err := h.store.ScanTags(ctx, scan, func(e cache.TagEntry) bool {
				if scanned == maxScanned || len(batch) == inspectBatch || (!inspect && len(page.Tags)+len(batch) == limit) {
					stopped = true
					return false
				}
				scanned++
				last = cursor{Registry: h.name, Repo: e.Repo, Tag: e.Tag}
				if cheap(e) {
					batch = append(batch, TagHit{Registry: h.name, Repository: e.Repo, Tag: e.Tag, Digest: e.Digest,
						MediaType: e.MediaType, PushedAt: e.PushedAt})
				}
				return true
			})
			if err != nil {
				return page, err
			}
			if keysOnly && len(batch) > 0 {
				if batch, err = fill(ctx, h.store, h.name, batch); err != nil {
					return page, err
				}
			}
			if inspect && len(batch) > 0 {
				inspected += len(batch)
				if err := pageDetails(ctx, regs, batch); err != nil {
					return page, err
				}
				batch = slices.DeleteFunc(batch, func(t TagHit) bool { return !t.matches(q) })
			}
			for _, t := range batch {
				if len(page.Tags) == limit { // the page filled within the batch: resume after its last hit
					page.Next = cursorOf(page.Tags[limit-1]).encode()
					return page, detailsUnlessRead(ctx, regs, page.Tags, inspect)
				}
				if q.Classify != nil {
					t.Class = q.Classify(t.Tag)
				}
				page.Tags = append(page.Tags, t)
			}
			if !stopped {
				break // this registry is done
			}
			if len(page.Tags) == limit || scanned == maxScanned || inspected >= maxInspected {
				page.Next = last.encode()
				return page, detailsUnlessRead(ctx, regs, page.Tags, inspect)
			}
			after = last
		}
	}
	return page, detailsUnlessRead(ctx, regs, page.Tags, inspect)
}

// fill reads the values of tags found by a keys-only scan.
func fill(ctx context.Context, s *cache.Store, reg string, hits []TagHit) ([]TagHit, error) {
	es := make([]cache.TagEntry, len(hits))
	for i, t := range hits {
		es[i] = cache.TagEntry{Repo: t.Repository, Tag: t.Tag}
	}
	es, err := s.FillTags(ctx, reg, es)
	if err != nil {
		return nil, err
	}
	out := hits[:0]
	for _, e := range es {
		out = append(out, TagHit{Registry: reg, Repository: e.Repo, Tag: e.Tag, Digest: e.Digest,
			MediaType: e.MediaType, PushedAt: e.PushedAt})
	}
	return out, nil
}

func cursorOf(t TagHit) cursor { return cursor{Registry: t.Registry, Repo: t.Repository, Tag: t.Tag} }

// cheapFilter is the part of q that a tag entry alone decides.
func (q *TagQuery) cheapFilter() func(cache.TagEntry) bool {
	text := strings.ToLower(q.Text)
	var visibleRepo, lowerRepo string
	var visible, repoHasText bool
	// The text may be in the repository's name, in the tag, or span both ("app:1.2").
	hasText := func(e cache.TagEntry) bool {
		if repoHasText || strings.Contains(strings.ToLower(e.Tag), text) {
			return true
		}
		return strings.IndexByte(text, ':') >= 0 && strings.Contains(lowerRepo+":"+strings.ToLower(e.Tag), text)
	}
	return func(e cache.TagEntry) bool {
		if e.Repo != visibleRepo {
			visibleRepo, lowerRepo = e.Repo, strings.ToLower(e.Repo)
			visible = q.Visible == nil || q.Visible(e.Repo)
			repoHasText = strings.Contains(lowerRepo, text)
		}
		switch {
		case !visible:
			return false
		case text != "" && !hasText(e):
			return false
		case q.Tag != "" && !matchTag(q.Tag, e.Tag):
			return false
		case q.Class != "" && (q.Classify == nil || q.Classify(e.Tag) != q.Class):
			return false
		case !q.PushedAfter.IsZero() && !e.PushedAt.After(q.PushedAfter):
			return false
		}
		return true
	}
}

// detailsUnlessRead reads a page's details, unless filtering read them already.
func detailsUnlessRead(ctx context.Context, regs []*Hosted, tags []TagHit, read bool) error {
	if read {
		return nil
	}
	return pageDetails(ctx, regs, tags)
}

// matches applies the filters that need a tag's details.
func (t *TagHit) matches(q TagQuery) bool {
	if !q.PulledBefore.IsZero() && !t.PulledAt.Before(q.PulledBefore) {
		return false
	}
	for k, v := range q.Labels {
		if !hasValue(t.Labels, k, v) && !hasValue(t.Annotations, k, v) {
			return false
		}
	}
	return true
}

func hasValue(m map[string]string, k, v string) bool {
	got, ok := m[k]
	return ok && got == v
}

// pageDetails reads the details of a page of tags, one snapshot per registry.
func pageDetails(ctx context.Context, regs []*Hosted, tags []TagHit) error {
	for _, h := range regs {
		var of []cache.DetailsOf
		var at []int
		for i, t := range tags {
			if t.Registry == h.name {
				of, at = append(of, cache.DetailsOf{Repo: t.Repository, Tag: t.Tag, Digest: t.Digest}), append(at, i)
			}
		}
		if len(of) == 0 {
			continue
		}
		ds, err := h.store.ImageDetails(ctx, h.name, of)
		if err != nil {
			return err
		}
		for j, i := range at {
			tags[i].ImageDetails = ds[j]
		}
	}
	return nil
}

// searchStart narrows the stored registries to one (only) and finds where the cursor
// resumes.
func searchStart(reg Registry, only string, at cursor) ([]*Hosted, int, error) {
	regs := Stored(reg)
	if only != "" {
		i := slices.IndexFunc(regs, func(h *Hosted) bool { return h.name == only })
		if i < 0 {
			return nil, 0, oci.ErrNameUnknown.Withf("registry %q is not searched from this host", only)
		}
		regs = regs[i : i+1]
	}
	if at.Registry == "" {
		return regs, 0, nil
	}
	i := slices.IndexFunc(regs, func(h *Hosted) bool { return h.name == at.Registry })
	if i < 0 {
		return nil, 0, oci.ErrPaginationInvalid.Withf("the search cursor names a registry this search does not cover")
	}
	return regs, i, nil
}

func storeOf(regs []*Hosted, name string) *cache.Store {
	for _, h := range regs {
		if h.name == name {
			return h.store
		}
	}
	return nil
}

// matchTag matches a tag glob: "*" any run of characters, "?" one, [...] a class.
func matchTag(glob, tag string) bool {
	ok, err := path.Match(glob, tag) // tags hold no "/": "*" spans the whole tag
	return err == nil && ok
}

// RepoHit is one repository found: the first stored registry (in walk order) holding
// it, and, for a page of repositories, its tag count and last push.
type RepoHit struct {
	Registry   string
	Repository string
	Tags       int
	LastPush   time.Time
}

// RepoQuery selects repositories.
type RepoQuery struct {
	Text     string // a case-insensitive part of the name
	Registry string
	Visible  func(repo string) bool // as in TagQuery
}

// MatchRepositories lists the repositories of reg's stored content that q selects,
// by name, each once (at most maxRepositories; more reports truncation).
func MatchRepositories(ctx context.Context, reg Registry, q RepoQuery) (hits []RepoHit, truncated bool, err error) {
	regs, _, err := searchStart(reg, q.Registry, cursor{})
	if err != nil {
		return nil, false, err
	}
	text := strings.ToLower(q.Text)
	seen := map[string]bool{}
	for _, h := range regs {
		last := ""
		for {
			names, more, err := h.store.ListRepositories(ctx, h.name, last, 10_000)
			if err != nil {
				return nil, false, err
			}
			for _, name := range names {
				if seen[name] || (text != "" && !strings.Contains(strings.ToLower(name), text)) ||
					(q.Visible != nil && !q.Visible(name)) {
					continue
				}
				if len(hits) == maxRepositories {
					return sortRepos(hits), true, nil
				}
				seen[name] = true
				hits = append(hits, RepoHit{Registry: h.name, Repository: name})
			}
			if !more || len(names) == 0 {
				break
			}
			last = names[len(names)-1]
		}
	}
	return sortRepos(hits), false, nil
}

func sortRepos(hits []RepoHit) []RepoHit {
	slices.SortFunc(hits, func(a, b RepoHit) int { return strings.Compare(a.Repository, b.Repository) })
	return hits
}

// maxCounted bounds the tags counted for one repository hit.
const maxCounted = 100_000

// CountTags fills in the tag count and last push of each hit, from reg's stored
// content (a group's repository: the first member holding it).
func CountTags(ctx context.Context, reg Registry, hits []RepoHit) error {
	regs := Stored(reg)
	for i := range hits {
		h := &hits[i]
		s := storeOf(regs, h.Registry)
		if s == nil {
			continue
		}
		err := s.ScanTags(ctx, cache.TagScan{Registry: h.Registry, Repo: h.Repository}, func(e cache.TagEntry) bool {
			h.Tags++
			if e.PushedAt.After(h.LastPush) {
				h.LastPush = e.PushedAt
			}
			return h.Tags < maxCounted
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// Describe returns a repository's description: the org.opencontainers.image.description
// annotation or label of its "latest" tag, if it has one.
func Describe(ctx context.Context, reg Registry, hit RepoHit) string {
	s := storeOf(Stored(reg), hit.Registry)
	if s == nil {
		return ""
	}
	m, err := s.HeadManifest(ctx, hit.Registry, hit.Repository, oci.Reference{Tag: "latest"})
	if err != nil {
		return ""
	}
	ds, err := s.ImageDetails(ctx, hit.Registry, []cache.DetailsOf{{Repo: hit.Repository, Tag: "latest", Digest: m.Digest}})
	if err != nil {
		return ""
	}
	d := ds[0]
	const key = "org.opencontainers.image.description"
	if v := d.Annotations[key]; v != "" {
		return v
	}
	return d.Labels[key]
}
