package vhost

import (
	"context"
	"io"

	"github.com/dockyard/dockyard/cache"
	"github.com/dockyard/dockyard/oci"
)

// HostedOptions tune a hosted registry.
type HostedOptions struct {
	// AllowSparseIndex accepts manifests whose child manifests or layers were not pushed.
	AllowSparseIndex bool
	// Immutable says whether a tag of a repository is protected: then it never moves
	// to another manifest, and it is deleted only when allowDelete. why names the rule.
	Immutable func(repo, tag string) (why string, protected, allowDelete bool)
	// Accessories recognises accessory tags (nil: the built-in schemes): they stay
	// mutable, and under Immutable point only at accessories of a protected subject.
	Accessories *oci.Accessories
}

// Hosted is a registry whose content is pushed to it and stored locally.
type Hosted struct {
	name  string
	store *cache.Store
	opts  HostedOptions
}

// NewHosted returns the hosted registry name kept in store.
func NewHosted(name string, store *cache.Store, opts HostedOptions) *Hosted {
	return &Hosted{name: name, store: store, opts: opts}
}

func (h *Hosted) Name() string { return h.name }

// Local is the registry itself: everything it has is local.
func (h *Hosted) Local() *Hosted { return h }

// Writer is the registry itself: a hosted registry takes pushes.
func (h *Hosted) Writer() (Writer, error) { return h, nil }

func (h *Hosted) StatBlob(ctx context.Context, repo oci.Repository, d oci.Digest) (int64, error) {
	return h.store.StatBlob(ctx, h.name, string(repo), d)
}

func (h *Hosted) OpenBlob(ctx context.Context, repo oci.Repository, d oci.Digest) (io.ReadCloser, int64, error) {
	return h.store.OpenBlob(ctx, h.name, string(repo), d)
}

func (h *Hosted) DeleteBlob(ctx context.Context, repo oci.Repository, d oci.Digest) error {
	return h.store.DeleteBlob(ctx, h.name, string(repo), d, h.protect(repo, "a blob it lists"))
}

func (h *Hosted) StartUpload(ctx context.Context, repo oci.Repository, alg oci.Algorithm) (*cache.Upload, error) {
	return h.store.StartUpload(ctx, h.name, string(repo), alg)
}

func (h *Hosted) MountBlob(ctx context.Context, repo, from oci.Repository, d oci.Digest) (int64, bool, error) {
	return h.store.MountBlob(ctx, h.name, string(repo), string(from), d)
}

func (h *Hosted) PutBlob(ctx context.Context, repo oci.Repository, d oci.Digest, r io.Reader, length int64) (int64, error) {
	return h.store.PutBlob(ctx, h.name, string(repo), d, r, length)
}

func (h *Hosted) GetUpload(ctx context.Context, repo oci.Repository, id string) (*cache.Upload, error) {
	return h.store.GetUpload(ctx, h.name, string(repo), id)
}

func (h *Hosted) AppendUpload(ctx context.Context, repo oci.Repository, id string, start int64, r io.Reader, length int64) (*cache.Upload, error) {
	return h.store.AppendUpload(ctx, h.name, string(repo), id, start, r, length)
}

func (h *Hosted) FinishUpload(ctx context.Context, repo oci.Repository, id string, d oci.Digest, start int64, r io.Reader, length int64) (int64, error) {
	return h.store.FinishUpload(ctx, h.name, string(repo), id, d, start, r, length)
}

func (h *Hosted) CancelUpload(ctx context.Context, repo oci.Repository, id string) error {
	return h.store.CancelUpload(ctx, h.name, string(repo), id)
}

func (h *Hosted) GetManifest(ctx context.Context, repo oci.Repository, ref oci.Reference) (*cache.StoredManifest, error) {
	return h.store.GetManifest(ctx, h.name, string(repo), ref)
}

func (h *Hosted) HeadManifest(ctx context.Context, repo oci.Repository, ref oci.Reference) (*cache.StoredManifest, error) {
	return h.store.HeadManifest(ctx, h.name, string(repo), ref)
}

// PutManifest validates and stores a pushed manifest. Pushed by digest, the bytes must
// hash to it; pushed by tag, the digest is the sha256 of the bytes.
func (h *Hosted) PutManifest(ctx context.Context, p ManifestPush) (*PushResult, error) {
	m, err := oci.ParseManifest(p.ContentType, p.Content)
	if err != nil {
		return nil, err
	}
	res := &PushResult{Digest: oci.FromBytes(oci.SHA256, p.Content), Tags: p.Tags, MediaType: m.MediaType}
	if p.Reference.IsDigest() {
		if got := oci.FromBytes(p.Reference.Digest.Algorithm(), p.Content); got != p.Reference.Digest {
			return nil, oci.ErrDigestInvalid.Withf("manifest digest is %s, pushed as %s", got, p.Reference.Digest)
		}
		res.Digest = p.Reference.Digest
	} else {
		res.Tags = append([]oci.Tag{p.Reference.Tag}, p.Tags...)
	}
	if m.Subject != nil {
		res.Subject = m.Subject.Digest
	}
	var immutable map[oci.Tag]string
	if h.opts.Immutable != nil {
		for _, t := range res.Tags {
			if subject, scheme, ok := h.opts.Accessories.Subject(string(t)); ok {
				if err := h.guardAccessory(ctx, p.Repo, t, subject, scheme, m); err != nil {
					return nil, err
				}
				continue // accessory tags stay mutable
			}
			if why, ok, _ := h.opts.Immutable(string(p.Repo), string(t)); ok {
				if immutable == nil {
					immutable = map[oci.Tag]string{}
				}
				immutable[t] = why
			}
		}
	}
	err = h.store.PutManifest(ctx, cache.PutManifestRequest{
		Registry: h.name, Repo: string(p.Repo), Digest: res.Digest, Content: p.Content,
		Manifest: m, Tags: res.Tags, AllowSparse: h.opts.AllowSparseIndex, Immutable: immutable,
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// protect refuses deletes that would take something (what) from an immutable release
// of repo; nil when no release is immutable.
func (h *Hosted) protect(repo oci.Repository, what string) cache.Protect {
	if h.opts.Immutable == nil {
		return nil
	}
	return func(tag string) error {
		// An accessory tag of a protected release (its signature, attestation) is
		// protected with it: deleting it would fail every deploy gated on signatures.
		if subject, _, ok := h.opts.Accessories.Subject(tag); ok {
			why, err := h.protectedRelease(context.Background(), repo, subject, true)
			if err != nil {
				return err
			}
			if why != "" {
				return oci.ErrDenied.Withf("tag %s:%s is an accessory of %s, an immutable release (%s); deleting it, or %s, is not allowed", repo, tag, subject, why, what)
			}
			return nil
		}
		if why, ok, allowDelete := h.opts.Immutable(string(repo), tag); ok && !allowDelete {
			return oci.ErrDenied.Withf("tag %s:%s is an immutable release (%s); deleting it, or %s, is not allowed", repo, tag, why, what)
		}
		return nil
	}
}

// DeleteManifest deletes a manifest (by digest, with its tags) or a tag. Immutable
// releases refuse it, checked in the deleting transaction: the manifest's own tags and
// those of every index listing it.
func (h *Hosted) DeleteManifest(ctx context.Context, repo oci.Repository, ref oci.Reference) error {
	protect := h.protect(repo, "a manifest it lists")
	if ref.IsDigest() {
		return h.store.DeleteManifest(ctx, h.name, string(repo), ref.Digest, protect)
	}
	return h.store.DeleteTag(ctx, h.name, string(repo), ref.Tag, protect)
}

func (h *Hosted) Tags(ctx context.Context, repo oci.Repository, last string, n int) ([]string, bool, error) {
	return h.store.ListTags(ctx, h.name, string(repo), last, n)
}

func (h *Hosted) Catalog(ctx context.Context, last string, n int) ([]string, bool, error) {
	return h.store.ListRepositories(ctx, h.name, last, n)
}

func (h *Hosted) Referrers(ctx context.Context, repo oci.Repository, d oci.Digest) ([]oci.Descriptor, error) {
	return h.store.Referrers(ctx, h.name, string(repo), d)
}

// BlobRepositories lists the repositories holding blob d.
func (h *Hosted) BlobRepositories(ctx context.Context, d oci.Digest) ([]oci.Repository, error) {
	names, err := h.store.BlobRepositories(ctx, h.name, d)
	out := make([]oci.Repository, len(names))
	for i, n := range names {
		out[i] = oci.Repository(n)
	}
	return out, err
}
