package vhost

import (
	"context"
	"errors"
	"io"
	"log/slog"
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
	log     *slog.Logger
	// accessories recognises accessory tags (nil: the built-in schemes), resolved in
	// the member holding their subject first.
	accessories *oci.Accessories
}

// SetAccessories says which tags are accessory tags (nil: the built-in schemes).
func (g *Group) SetAccessories(a *oci.Accessories) { g.accessories = a }

// NewGroup returns the group name over members; pushTo (nil for none) must be one of
// them.
func NewGroup(name string, members []Registry, pushTo Registry, log *slog.Logger) *Group {
	if log == nil {
		log = slog.Default()
	}
	return &Group{name: name, members: members, pushTo: pushTo, log: log.With("registry", name)}
}

func (g *Group) Name() string { return g.name }

// notHere reports member answers that mean "not here, ask the next member". An
// upstream refusing a repository is one of them: Docker Hub answers 401 (after granting
// an anonymous token) and ghcr.io 403 for repositories they do not have, so inside a
// group they cannot be told from "unknown".
func notHere(err error) bool {
	return errors.Is(err, oci.ErrManifestUnknown) || errors.Is(err, oci.ErrBlobUnknown) ||
		errors.Is(err, oci.ErrNameUnknown) || errors.Is(err, oci.ErrUnauthorized) ||
		errors.Is(err, oci.ErrDenied)
}

// walk asks each member in turn until one has it. Digests are asked of every member's
// local storage first, so cached content never causes an upstream request. When nobody
// has it, the first failure that is not "not here" is returned (an upstream that could
// not be asked), else unknown.
func walk[T any](g *Group, byDigest bool, unknown error, ask func(Reader) (T, error)) (T, error) {
	return walkOver(g, g.members, byDigest, unknown, ask)
}

// walkOver is walk over members in the order given.
func walkOver[T any](g *Group, members []Registry, byDigest bool, unknown error, ask func(Reader) (T, error)) (T, error) {
	var zero T
	var firstErr error
	try := func(r Reader) (T, bool) {
		v, err := ask(r)
		if err == nil {
			return v, true
		}
		if errors.Is(err, oci.ErrUnauthorized) || errors.Is(err, oci.ErrDenied) {
			g.log.Debug("member refused; asking the next", "err", err)
		}
		if !notHere(err) && firstErr == nil {
			firstErr = err
		}
		return zero, false
	}
	if byDigest {
		for _, m := range members {
			if l, ok := m.(local); ok {
				if v, ok := try(l.Local()); ok {
					return v, nil
				}
			}
		}
	}
	for _, m := range members {
		if _, hosted := m.(*Hosted); byDigest && hosted {
			continue // already asked above
		}
		if v, ok := try(m); ok {
			return v, nil
		}
	}
	if firstErr != nil {
		return zero, firstErr
	}
	return zero, unknown
}

func (g *Group) blobUnknown(d oci.Digest) error {
	return oci.ErrBlobUnknown.Withf("no member of group %q has blob %s", g.name, d)
}

func (g *Group) manifestUnknown(repo oci.Repository, ref oci.Reference) error {
	return oci.ErrManifestUnknown.Withf("no member of group %q has manifest %s of %s", g.name, ref, repo)
}

type blob struct {
	rc   io.ReadCloser
	size int64
}

func (g *Group) StatBlob(ctx context.Context, repo oci.Repository, d oci.Digest) (int64, error) {
	return walk(g, true, g.blobUnknown(d), func(r Reader) (int64, error) { return r.StatBlob(ctx, repo, d) })
}

func (g *Group) OpenBlob(ctx context.Context, repo oci.Repository, d oci.Digest) (io.ReadCloser, int64, error) {
	b, err := walk(g, true, g.blobUnknown(d), func(r Reader) (blob, error) {
		rc, size, err := r.OpenBlob(ctx, repo, d)
		return blob{rc, size}, err
	})
	return b.rc, b.size, err
}

func (g *Group) GetManifest(ctx context.Context, repo oci.Repository, ref oci.Reference) (*cache.StoredManifest, error) {
	return walkOver(g, g.order(ctx, repo, ref), ref.IsDigest(), g.manifestUnknown(repo, ref), func(r Reader) (*cache.StoredManifest, error) {
		return r.GetManifest(ctx, repo, ref)
	})
}

func (g *Group) HeadManifest(ctx context.Context, repo oci.Repository, ref oci.Reference) (*cache.StoredManifest, error) {
	return walkOver(g, g.order(ctx, repo, ref), ref.IsDigest(), g.manifestUnknown(repo, ref), func(r Reader) (*cache.StoredManifest, error) {
		return r.HeadManifest(ctx, repo, ref)
	})
}

// order is the members in the order a manifest reference is asked of them: an
// accessory tag (a signature's, an attestation's, the referrers tag) in the push member
// first if it has the tag (what was pushed through the group reads back: cosign adds a
// signature to the one it read), then in the member holding its subject — the
// signature of an image a later member serves is that member's, not an earlier
// member's tag of the same name —; anything else in the group's order.
func (g *Group) order(ctx context.Context, repo oci.Repository, ref oci.Reference) []Registry {
	if ref.IsDigest() {
		return g.members
	}
	subject, _, ok := g.accessories.Subject(string(ref.Tag))
	if !ok {
		return g.members
	}
	holder := -1
	if l, ok := g.pushTo.(local); ok {
		if _, err := l.Local().HeadManifest(ctx, repo, ref); err == nil {
			holder = slices.Index(g.members, g.pushTo)
		}
	}
	for i, m := range g.members { // local copies first: no upstream request
		if holder >= 0 {
			break
		}
		if l, ok := m.(local); ok {
			if _, err := l.Local().HeadManifest(ctx, repo, oci.Reference{Digest: subject}); err == nil {
				holder = i
				break
			}
		}
	}
	for i := 0; holder < 0 && i < len(g.members); i++ {
		if _, err := g.members[i].HeadManifest(ctx, repo, oci.Reference{Digest: subject}); err == nil {
			holder = i
		}
	}
	if holder <= 0 {
		return g.members
	}
	out := append([]Registry{g.members[holder]}, g.members[:holder]...)
	return append(out, g.members[holder+1:]...)
}

// Writer is the push member, with mounts that may take blobs any member stores.
func (g *Group) Writer() (Writer, error) {
	if g.pushTo == nil {
		return nil, oci.ErrDenied.Withf("group %q accepts no pushes or deletes (no push_to member is configured)", g.name)
	}
	w, err := g.pushTo.Writer()
	if err != nil {
		return nil, err
	}
	return groupWriter{Writer: w, g: g}, nil
}

// groupWriter writes through the push member.
type groupWriter struct {
	Writer
	g *Group
}

// MountBlob mounts into the push member: from its own repository, or from any
// member's stored copy.
func (w groupWriter) MountBlob(ctx context.Context, repo, from oci.Repository, d oci.Digest) (int64, bool, error) {
	size, ok, err := w.Writer.MountBlob(ctx, repo, from, d)
	if ok || err != nil || from == "" {
		return size, ok, err
	}
	for _, m := range w.g.members {
		if l, isLocal := m.(local); isLocal && m != w.g.pushTo {
			if _, err := l.Local().StatBlob(ctx, from, d); err == nil {
				return w.Writer.MountBlob(ctx, repo, "", d)
			}
		}
	}
	return 0, false, nil
}

// Tags is the sorted union of the members' tags.
func (g *Group) Tags(ctx context.Context, repo oci.Repository, last string, n int) ([]string, bool, error) {
	return g.union(func(r Reader) ([]string, error) {
		tags, _, err := r.Tags(ctx, repo, "", maxUnion)
		return tags, err
	}, last, n, oci.ErrNameUnknown.Withf("repository %s is unknown to every member of group %q", repo, g.name))
}

// Catalog is the sorted union of the members' repositories.
func (g *Group) Catalog(ctx context.Context, last string, n int) ([]string, bool, error) {
	return g.union(func(r Reader) ([]string, error) {
		repos, _, err := r.Catalog(ctx, "", maxUnion)
		return repos, err
	}, last, n, nil)
}

// maxUnion bounds what is gathered from each member for a union listing.
const maxUnion = 100000

// union merges the members' lists, then pages through the result. A member that
// cannot answer is logged and left out: one upstream down or refusing must not hide
// what the others have. unknown is returned when no member knows the name at all (nil:
// an empty list is fine).
func (g *Group) union(list func(Reader) ([]string, error), last string, n int, unknown error) ([]string, bool, error) {
	set := map[string]bool{}
	known := false
	for _, m := range g.members {
		names, err := list(m)
		if err != nil {
			if !notHere(err) {
				g.log.Warn("member left out of a listing", "member", m.Name(), "err", err)
			}
			continue
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

// Referrers is the union of the members' referrers; a member that cannot answer is
// logged and left out.
func (g *Group) Referrers(ctx context.Context, repo oci.Repository, d oci.Digest) ([]oci.Descriptor, error) {
	var lists [][]oci.Descriptor
	for _, m := range g.members {
		refs, err := m.Referrers(ctx, repo, d)
		if err != nil {
			if !notHere(err) {
				g.log.Warn("member left out of referrers", "member", m.Name(), "err", err)
			}
			continue
		}
		lists = append(lists, refs)
	}
	return mergeDescriptors(lists...), nil
}

// BlobRepositories lists the repositories of the group's members holding blob d.
func (g *Group) BlobRepositories(ctx context.Context, d oci.Digest) ([]oci.Repository, error) {
	var out []oci.Repository
	for _, m := range g.members {
		if l, ok := m.(local); ok {
			repos, err := l.Local().BlobRepositories(ctx, d)
			if err != nil {
				return nil, err
			}
			out = append(out, repos...)
		}
	}
	return out, nil
}
