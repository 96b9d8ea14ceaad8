package vhost

import (
	"context"
	"errors"
	"io"
	"slices"

	"github.com/dockyard/dockyard/cache"
	"github.com/dockyard/dockyard/oci"
)

// Group is an ordered walk over member registries, as Nexus groups are: a tag resolves
// to the first member that has it; a digest to any member that has it, local copies
// before any upstream fetch; listings are the union; pushes go to one hosted member.
type Group struct {
	name    string
	members []Registry
	pushTo  Registry // nil: pushes are denied
}

// NewGroup returns the group name over members; pushTo (nil for none) must be one of
// them.
func NewGroup(name string, members []Registry, pushTo Registry) *Group {
	return &Group{name: name, members: members, pushTo: pushTo}
}

func (g *Group) Name() string { return g.name }

// Cached is the push member's storage, where a group's own content lives.
func (g *Group) Cached() *Hosted {
	if c, ok := g.pushTo.(Cacher); ok {
		return c.Cached()
	}
	return nil
}

// isUnknown reports errors that mean "not here, ask the next member".
func isUnknown(err error) bool {
	return errors.Is(err, oci.ErrManifestUnknown) || errors.Is(err, oci.ErrBlobUnknown) ||
		errors.Is(err, oci.ErrNameUnknown)
}

// walk asks each member in turn until one answers without "unknown". Digests are asked
// of every member's local storage first, so cached content never causes an upstream
// request. The first error other than "unknown" is returned when nobody has it.
func walk[T any](g *Group, byDigest bool, ask func(Registry) (T, error)) (T, error) {
	var zero T
	var firstErr error
	try := func(r Registry) (T, bool) {
		v, err := ask(r)
		if err == nil {
			return v, true
		}
		if !isUnknown(err) && firstErr == nil {
			firstErr = err
		}
		return zero, false
	}
	if byDigest {
		for _, m := range g.members {
			if c, ok := m.(Cacher); ok {
				if v, ok := try(c.Cached()); ok {
					return v, nil
				}
			}
		}
	}
	for _, m := range g.members {
		if _, local := m.(*Hosted); byDigest && local {
			continue // already asked above
		}
		if v, ok := try(m); ok {
			return v, nil
		}
	}
	if firstErr != nil {
		return zero, firstErr
	}
	var err error
	switch any(zero).(type) {
	case *cache.StoredManifest:
		err = oci.ErrManifestUnknown.Withf("no member of group %q has it", g.name)
	default:
		err = oci.ErrBlobUnknown.Withf("no member of group %q has it", g.name)
	}
	return zero, err
}

type blob struct {
	rc   io.ReadCloser
	size int64
}

func (g *Group) StatBlob(ctx context.Context, repo oci.Repository, d oci.Digest) (int64, error) {
	return walk(g, true, func(r Registry) (int64, error) { return r.StatBlob(ctx, repo, d) })
}

func (g *Group) OpenBlob(ctx context.Context, repo oci.Repository, d oci.Digest) (io.ReadCloser, int64, error) {
	b, err := walk(g, true, func(r Registry) (blob, error) {
		rc, size, err := r.OpenBlob(ctx, repo, d)
		return blob{rc, size}, err
	})
	return b.rc, b.size, err
}

func (g *Group) GetManifest(ctx context.Context, repo oci.Repository, ref oci.Reference) (*cache.StoredManifest, error) {
	return walk(g, ref.IsDigest(), func(r Registry) (*cache.StoredManifest, error) { return r.GetManifest(ctx, repo, ref) })
}

func (g *Group) denied() error {
	return oci.ErrDenied.Withf("group %q accepts no pushes or deletes (no push_to member is configured)", g.name)
}

func (g *Group) DeleteBlob(ctx context.Context, repo oci.Repository, d oci.Digest) error {
	if g.pushTo == nil {
		return g.denied()
	}
	return g.pushTo.DeleteBlob(ctx, repo, d)
}

func (g *Group) StartUpload(ctx context.Context, repo oci.Repository, alg oci.Algorithm) (*cache.Upload, error) {
	if g.pushTo == nil {
		return nil, g.denied()
	}
	return g.pushTo.StartUpload(ctx, repo, alg)
}

// MountBlob mounts into the push member: from its own repository, or from any
// member's stored copy.
func (g *Group) MountBlob(ctx context.Context, repo, from oci.Repository, d oci.Digest) (int64, bool, error) {
	if g.pushTo == nil {
		return 0, false, g.denied()
	}
	size, ok, err := g.pushTo.MountBlob(ctx, repo, from, d)
	if ok || err != nil || from == "" {
		return size, ok, err
	}
	for _, m := range g.members {
		if c, isCacher := m.(Cacher); isCacher && m != g.pushTo {
			if _, err := c.Cached().StatBlob(ctx, from, d); err == nil {
				return g.pushTo.MountBlob(ctx, repo, "", d)
			}
		}
	}
	return 0, false, nil
}

func (g *Group) PutBlob(ctx context.Context, repo oci.Repository, d oci.Digest, r io.Reader, length int64) (int64, error) {
	if g.pushTo == nil {
		return 0, g.denied()
	}
	return g.pushTo.PutBlob(ctx, repo, d, r, length)
}

func (g *Group) GetUpload(ctx context.Context, repo oci.Repository, id string) (*cache.Upload, error) {
	if g.pushTo == nil {
		return nil, g.denied()
	}
	return g.pushTo.GetUpload(ctx, repo, id)
}

func (g *Group) AppendUpload(ctx context.Context, repo oci.Repository, id string, start int64, r io.Reader, length int64) (*cache.Upload, error) {
	if g.pushTo == nil {
		return nil, g.denied()
	}
	return g.pushTo.AppendUpload(ctx, repo, id, start, r, length)
}

func (g *Group) FinishUpload(ctx context.Context, repo oci.Repository, id string, d oci.Digest, start int64, r io.Reader, length int64) (int64, error) {
	if g.pushTo == nil {
		return 0, g.denied()
	}
	return g.pushTo.FinishUpload(ctx, repo, id, d, start, r, length)
}

func (g *Group) CancelUpload(ctx context.Context, repo oci.Repository, id string) error {
	if g.pushTo == nil {
		return g.denied()
	}
	return g.pushTo.CancelUpload(ctx, repo, id)
}

func (g *Group) PutManifest(ctx context.Context, m ManifestPush) (*PushResult, error) {
	if g.pushTo == nil {
		return nil, g.denied()
	}
	return g.pushTo.PutManifest(ctx, m)
}

func (g *Group) DeleteManifest(ctx context.Context, repo oci.Repository, ref oci.Reference) error {
	if g.pushTo == nil {
		return g.denied()
	}
	return g.pushTo.DeleteManifest(ctx, repo, ref)
}

// Tags is the sorted union of the members' tags.
func (g *Group) Tags(ctx context.Context, repo oci.Repository, last string, n int) ([]string, bool, error) {
	return g.union(func(r Registry) ([]string, error) {
		tags, _, err := r.Tags(ctx, repo, "", maxUnion)
		return tags, err
	}, last, n, oci.ErrNameUnknown.Withf("repository %s is unknown to every member of group %q", repo, g.name))
}

// Catalog is the sorted union of the members' repositories.
func (g *Group) Catalog(ctx context.Context, last string, n int) ([]string, bool, error) {
	return g.union(func(r Registry) ([]string, error) {
		repos, _, err := r.Catalog(ctx, "", maxUnion)
		return repos, err
	}, last, n, nil)
}

// maxUnion bounds what is gathered from each member for a union listing.
const maxUnion = 100000

// union merges the members' lists, then pages through the result. unknown is returned
// when no member knows the name at all (nil: an empty list is fine).
func (g *Group) union(list func(Registry) ([]string, error), last string, n int, unknown error) ([]string, bool, error) {
	set := map[string]bool{}
	known := false
	for _, m := range g.members {
		names, err := list(m)
		if isUnknown(err) {
			continue
		}
		if err != nil {
			return nil, false, err
		}
		known = true
		for _, name := range names {
			set[name] = true
		}
	}
	if !known && unknown != nil {
		return nil, false, unknown
	}
	all := make([]string, 0, len(set))
	for name := range set {
		if name > last {
			all = append(all, name)
		}
	}
	slices.Sort(all)
	if len(all) > n {
		return all[:n], true, nil
	}
	return all, false, nil
}

// Referrers is the union of the members' referrers.
func (g *Group) Referrers(ctx context.Context, repo oci.Repository, d oci.Digest) ([]oci.Descriptor, error) {
	var lists [][]oci.Descriptor
	for _, m := range g.members {
		refs, err := m.Referrers(ctx, repo, d)
		if err != nil {
			return nil, err
		}
		lists = append(lists, refs)
	}
	return mergeDescriptors(lists...), nil
}

// BlobRepositories lists the repositories of the group's members holding blob d.
func (g *Group) BlobRepositories(ctx context.Context, d oci.Digest) ([]oci.Repository, error) {
	var out []oci.Repository
	for _, m := range g.members {
		if c, ok := m.(Cacher); ok {
			repos, err := c.Cached().BlobRepositories(ctx, d)
			if err != nil {
				return nil, err
			}
			out = append(out, repos...)
		}
	}
	return out, nil
}
