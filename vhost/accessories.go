package vhost

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"slices"
	"strings"

	"github.com/dockyard/dockyard/oci"
)

// Accessory tags (oci.Accessories) stay mutable under immutability rules — cosign
// pushes a .sig tag again to add a signature —, but an accessory tag naming a
// protected release may only point at an accessory of that release: a manifest whose
// subject it is, a cosign signature or in-toto attestation that names its digest, or
// an index of such (the referrers tag).

// Bounds of the guard's work for one push: a signature or attestation layer read is at
// most maxAccessoryPayload bytes, at most maxGuardReads distinct layers are read, and a
// referrers-tag index may list at most maxGuardChildren manifests.
const (
	maxAccessoryPayload = 1 << 20
	maxGuardReads       = 16
	maxGuardChildren    = 64
)

// protectedRelease says why subject is protected in repo — a protected tag of its own
// or of an index listing it —, "" when it is not.
func (h *Hosted) protectedRelease(ctx context.Context, repo oci.Repository, subject oci.Digest, forDelete bool) (string, error) {
	var why string
	errProtected := errors.New("protected")
	err := h.store.CheckProtected(ctx, h.name, string(repo), subject, func(tag string) error {
		if w, ok, allowDelete := h.opts.Immutable(string(repo), tag); ok && !(forDelete && allowDelete) {
			why = w + " protects " + tag
			return errProtected
		}
		return nil
	})
	if errors.Is(err, errProtected) {
		return why, nil
	}
	return "", err
}

// guardAccessory refuses tag (an accessory tag of subject, by scheme) pointing at
// manifest m when subject is a protected release of repo and m is not its accessory.
func (h *Hosted) guardAccessory(ctx context.Context, repo oci.Repository, tag oci.Tag, subject oci.Digest, scheme string, m *oci.Manifest) error {
	why, err := h.protectedRelease(ctx, repo, subject, false)
	if err != nil || why == "" {
		return err
	}
	g := &guard{h: h, ctx: ctx, repo: repo, subject: subject, read: map[oci.Digest][]oci.Digest{}}
	ok, err := g.accessory(m, scheme == "referrers tag")
	if err != nil || ok {
		return err
	}
	return oci.ErrDenied.Withf("tag %s names %s, a protected release (%s): only its signatures, attestations and referrers may be pushed to it", tag, subject, why)
}

// guard checks, within bounds, that manifests belong to subject.
type guard struct {
	h       *Hosted
	ctx     context.Context
	repo    oci.Repository
	subject oci.Digest
	read    map[oci.Digest][]oci.Digest // layer → the digests it names
}

// accessory says whether m belongs to the subject: its subject field names it, or a
// layer (a cosign signature's payload, an in-toto attestation's envelope) names its
// digest; an index only where index is true (the referrers tag), listing such manifests
// alone.
func (g *guard) accessory(m *oci.Manifest, index bool) (bool, error) {
	if m.IsIndex() {
		if !index || len(m.Children) == 0 || len(m.Children) > maxGuardChildren {
			return false, nil
		}
		for _, c := range m.Children {
			sm, err := g.h.store.GetManifest(g.ctx, g.h.name, string(g.repo), oci.Reference{Digest: c.Digest})
			if err != nil {
				if errors.Is(err, oci.ErrManifestUnknown) {
					return false, nil
				}
				return false, err
			}
			cm, err := oci.ParseManifest(sm.MediaType, sm.Content)
			if err != nil {
				return false, nil
			}
			if ok, err := g.accessory(cm, false); !ok || err != nil {
				return false, err
			}
		}
		return true, nil
	}
	if m.Subject != nil {
		return m.Subject.Digest == g.subject, nil
	}
	for _, l := range m.Layers {
		if l.Size > maxAccessoryPayload || !isSignatureLayer(l.MediaType) {
			continue
		}
		names, seen := g.read[l.Digest]
		if !seen {
			if len(g.read) >= maxGuardReads {
				return false, nil
			}
			if err := g.ctx.Err(); err != nil {
				return false, err
			}
			var err error
			if names, err = g.h.layerNames(g.ctx, g.repo, l); err != nil {
				return false, err
			}
			g.read[l.Digest] = names
		}
		if slices.Contains(names, g.subject) {
			return true, nil
		}
	}
	return false, nil
}

func isSignatureLayer(mt string) bool {
	return mt == "application/vnd.dev.cosign.simplesigning.v1+json" || mt == "application/vnd.dsse.envelope.v1+json"
}

// layerNames returns the digests a signature or attestation layer names (none for any
// other layer).
func (h *Hosted) layerNames(ctx context.Context, repo oci.Repository, l oci.Descriptor) ([]oci.Digest, error) {
	if !isSignatureLayer(l.MediaType) {
		return nil, nil
	}
	rc, _, err := h.store.OpenBlob(ctx, h.name, string(repo), l.Digest)
	if err != nil {
		if errors.Is(err, oci.ErrBlobUnknown) {
			return nil, nil
		}
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, maxAccessoryPayload))
	if err != nil {
		return nil, err
	}
	if l.MediaType == "application/vnd.dev.cosign.simplesigning.v1+json" {
		var p struct {
			Critical struct {
				Image struct {
					Digest string `json:"docker-manifest-digest"`
				} `json:"image"`
			} `json:"critical"`
		}
		if json.Unmarshal(b, &p) != nil {
			return nil, nil
		}
		return []oci.Digest{oci.Digest(p.Critical.Image.Digest)}, nil
	}
	var env struct {
		Payload string `json:"payload"`
	}
	if json.Unmarshal(b, &env) != nil {
		return nil, nil
	}
	payload, err := base64.StdEncoding.DecodeString(env.Payload)
	if err != nil {
		return nil, nil
	}
	var st struct {
		Subject []struct {
			Digest map[string]string `json:"digest"`
		} `json:"subject"`
	}
	if json.Unmarshal(payload, &st) != nil || len(st.Subject) == 0 {
		return nil, nil
	}
	var out []oci.Digest
	for _, sub := range st.Subject {
		for alg, hex := range sub.Digest {
			if d, err := oci.ParseDigest(strings.ToLower(alg) + ":" + hex); err == nil {
				out = append(out, d)
			}
		}
	}
	return out, nil
}
