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

// maxAccessoryPayload bounds the signature or attestation layer read to find the
// digest it names.
const maxAccessoryPayload = 1 << 20

// guardAccessory refuses tag (an accessory tag of subject) pointing at manifest m
// (its bytes content) when subject is a protected release of repo and m is not its
// accessory. why names the rule protecting it.
func (h *Hosted) guardAccessory(ctx context.Context, repo oci.Repository, tag oci.Tag, subject oci.Digest, m *oci.Manifest) error {
	tags, err := h.store.TagsOf(ctx, h.name, string(repo), subject)
	if err != nil {
		return err
	}
	why := ""
	for _, t := range tags {
		if w, ok, _ := h.opts.Immutable(string(repo), t); ok {
			why = w + " protects " + t
			break
		}
	}
	if why == "" {
		return nil
	}
	ok, err := h.accessoryOf(ctx, repo, m, subject, 0)
	if err != nil || ok {
		return err
	}
	return oci.ErrDenied.Withf("tag %s names %s, a protected release (%s): only its signatures, attestations and referrers may be pushed to it", tag, subject, why)
}

// accessoryOf says whether m belongs to subject: its subject field names it, a layer
// (a cosign signature's payload, an in-toto attestation's envelope) names its digest,
// or, for an index, every manifest it lists does.
func (h *Hosted) accessoryOf(ctx context.Context, repo oci.Repository, m *oci.Manifest, subject oci.Digest, depth int) (bool, error) {
	if m.Subject != nil {
		return m.Subject.Digest == subject, nil
	}
	if m.IsIndex() {
		if len(m.Children) == 0 || depth > 0 {
			return false, nil
		}
		for _, c := range m.Children {
			sm, err := h.store.GetManifest(ctx, h.name, string(repo), oci.Reference{Digest: c.Digest})
			if err != nil {
				return false, err
			}
			cm, err := oci.ParseManifest(sm.MediaType, sm.Content)
			if err != nil {
				return false, err
			}
			if ok, err := h.accessoryOf(ctx, repo, cm, subject, depth+1); !ok || err != nil {
				return false, err
			}
		}
		return true, nil
	}
	for _, l := range m.Layers {
		if l.Size > maxAccessoryPayload {
			continue
		}
		names, err := h.layerNames(ctx, repo, l)
		if err != nil {
			return false, err
		}
		if slices.Contains(names, subject) {
			return true, nil
		}
	}
	return false, nil
}

// layerNames returns the digests a signature or attestation layer names (none for any
// other layer).
func (h *Hosted) layerNames(ctx context.Context, repo oci.Repository, l oci.Descriptor) ([]oci.Digest, error) {
	switch l.MediaType {
	case "application/vnd.dev.cosign.simplesigning.v1+json", "application/vnd.dsse.envelope.v1+json":
	default:
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
