package oci

import (
	"bytes"
	"encoding/json"
	"errors"
	"mime"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// The distribution spec's grammar, written as the spec writes it: the fuzzers check
// the hand-written parsers against these regular expressions, both ways.
var (
	specName   = regexp.MustCompile(`^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$`)
	specTag    = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)
	specDigest = regexp.MustCompile(`^[a-z0-9]+([+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$`)
	// ourDigest is the subset of the spec's digests this registry verifies.
	ourDigest = regexp.MustCompile(`^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$`)
)

// A name is accepted exactly when the spec's grammar matches it and it fits the length
// bound; an accepted name is also a repository to go-containerregistry.
func FuzzParseRepository(f *testing.F) {
	for _, s := range []string{"a", "library/ubuntu", "a/b/c", "foo--bar", "foo__bar", "a.b_c-d", "a___b", "a._b",
		"a//b", "/a", "a/", "..", "a/../b", "A", "a\x00b", strings.Repeat("a", MaxNameLength+1)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRepository(s)
		want := specName.MatchString(s) && len(s) <= MaxNameLength
		if (err == nil) != want {
			t.Fatalf("ParseRepository(%q): error %v, the spec's grammar says valid=%v", s, err, want)
		}
		if err != nil {
			if !errors.Is(err, ErrNameInvalid) {
				t.Fatalf("ParseRepository(%q): error %v, want NAME_INVALID", s, err)
			}
			return
		}
		if r.String() != s {
			t.Fatalf("ParseRepository(%q) = %q", s, r)
		}
		if _, err := name.NewRepository("registry.example/"+s, name.StrictValidation); err != nil {
			t.Fatalf("accepted %q, go-containerregistry refuses it: %v", s, err)
		}
	})
}

// A tag is accepted exactly when the spec's grammar matches it.
func FuzzParseTag(f *testing.F) {
	for _, s := range []string{"latest", "v1.2.3", "1.0-RC1", "_x", "-a", ".a", "a/b", "a:b", "é", strings.Repeat("a", 129)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tag, err := ParseTag(s)
		if want := specTag.MatchString(s); (err == nil) != want {
			t.Fatalf("ParseTag(%q): error %v, the spec's grammar says valid=%v", s, err, want)
		}
		if err != nil {
			if !errors.Is(err, ErrManifestInvalid) {
				t.Fatalf("ParseTag(%q): error %v, want MANIFEST_INVALID", s, err)
			}
			return
		}
		if tag.String() != s {
			t.Fatalf("ParseTag(%q) = %q", s, tag)
		}
		if _, err := name.NewTag("registry.example/a:"+s, name.StrictValidation); err != nil {
			t.Fatalf("accepted %q, go-containerregistry refuses it: %v", s, err)
		}
	})
}

// A digest is accepted exactly when it is a lowercase-hex sha256 or sha512 digest of
// the right length; it is one of the spec's digests, splits into its algorithm and hex
// and joins back, and go-containerregistry reads the same digest. Any content's
// digest parses.
func FuzzParseDigest(f *testing.F) {
	for _, s := range []string{"sha256:" + strings.Repeat("a", 64), "sha512:" + strings.Repeat("0", 128), "sha256:" + strings.Repeat("A", 64),
		"sha256:" + strings.Repeat("a", 63), "sha384:" + strings.Repeat("a", 96), "sha256", ":", "sha256::" + strings.Repeat("a", 63)} {
		f.Add(s, []byte("content"))
	}
	f.Fuzz(func(t *testing.T, s string, content []byte) {
		d, err := ParseDigest(s)
		if want := ourDigest.MatchString(s); (err == nil) != want {
			t.Fatalf("ParseDigest(%q): error %v, want valid=%v", s, err, want)
		}
		if err != nil {
			if !errors.Is(err, ErrDigestInvalid) {
				t.Fatalf("ParseDigest(%q): error %v, want DIGEST_INVALID", s, err)
			}
		} else {
			if !specDigest.MatchString(s) {
				t.Fatalf("accepted %q, which is not a digest by the spec's grammar", s)
			}
			if d.String() != s || string(d.Algorithm())+":"+d.Encoded() != s {
				t.Fatalf("ParseDigest(%q) = %q (%s, %s)", s, d, d.Algorithm(), d.Encoded())
			}
			h, err := v1.NewHash(s)
			if err != nil || h.String() != s {
				t.Fatalf("accepted %q, go-containerregistry reads %v, %v", s, h, err)
			}
		}
		for _, a := range []Algorithm{SHA256, SHA512} {
			fd := FromBytes(a, content)
			if back, err := ParseDigest(string(fd)); err != nil || back != fd || fd.Algorithm() != a {
				t.Fatalf("the %s digest of %q (%s) does not parse back: %v", a, content, fd, err)
			}
		}
	})
}

// A reference is a tag or a digest, never both, and prints back as it was read.
func FuzzParseReference(f *testing.F) {
	for _, s := range []string{"latest", "sha256:" + strings.Repeat("a", 64), "sha256:abc", "a:b", "", ":", "v1@sha256:x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseReference(s)
		if err != nil {
			if !errors.Is(err, ErrManifestInvalid) && !errors.Is(err, ErrDigestInvalid) {
				t.Fatalf("ParseReference(%q): error %v, want MANIFEST_INVALID or DIGEST_INVALID", s, err)
			}
			return
		}
		if (r.Tag == "") == (r.Digest == "") {
			t.Fatalf("ParseReference(%q) = %+v: one of tag and digest", s, r)
		}
		if r.IsDigest() && !ourDigest.MatchString(string(r.Digest)) || !r.IsDigest() && !specTag.MatchString(string(r.Tag)) {
			t.Fatalf("ParseReference(%q) = %+v, outside the grammar", s, r)
		}
		if r.String() != s {
			t.Fatalf("ParseReference(%q) prints as %q", s, r)
		}
		if back, err := ParseReference(r.String()); err != nil || back != r {
			t.Fatalf("ParseReference(%q) = %+v, which reads back as %+v, %v", s, r, back, err)
		}
	})
}

// An accepted manifest is one JSON value, of a manifest media type agreeing with the
// Content-Type it was pushed with, shaped as its type says (an index lists manifests,
// an image has a config), whose every descriptor has a valid digest, a size and a media
// type; go-containerregistry reads the same descriptors from it, and parsing it again
// gives the same result.
func FuzzParseManifest(f *testing.F) {
	cfg := `{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:` + strings.Repeat("a", 64) + `","size":2}`
	layer := `{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:` + strings.Repeat("b", 64) + `","size":3}`
	foreign := `{"mediaType":"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip","digest":"sha256:` + strings.Repeat("c", 64) + `","size":3,"urls":["https://example.com/l"]}`
	child := `{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha512:` + strings.Repeat("d", 128) + `","size":300,"platform":{"os":"linux","architecture":"arm64"}}`
	seeds := []struct{ ct, body string }{
		{MediaTypeOCIManifest, `{"schemaVersion":2,"mediaType":"` + MediaTypeOCIManifest + `","config":` + cfg + `,"layers":[` + layer + `,` + foreign + `]}`},
		{MediaTypeDockerManifest + "; charset=utf-8", `{"schemaVersion":2,"mediaType":"` + MediaTypeDockerManifest + `","config":` + cfg + `,"layers":[]}`},
		{"", `{"schemaVersion":2,"config":` + cfg + `,"subject":` + child + `,"artifactType":"application/x.sig","annotations":{"a":"b"}}`},
		{MediaTypeOCIIndex, `{"schemaVersion":2,"mediaType":"` + MediaTypeOCIIndex + `","manifests":[` + child + `]}`},
		{MediaTypeDockerList, `{"schemaVersion":2,"manifests":[]}`},
		{"", `{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2,"data":"e30="}}`},
		{MediaTypeOCIManifest, `{"schemaVersion":1,"mediaType":"` + MediaTypeDockerSchema1 + `"}`},
		{MediaTypeOCIIndex, `{"schemaVersion":2,"mediaType":"` + MediaTypeOCIManifest + `","config":` + cfg + `}`},
		{"", `[1,2]`},
		// Regressions: stored, and unreadable by clients (go-containerregistry fails).
		{MediaTypeOCIIndex, `{"schemaVersion":2,"manifests":[` + strings.Replace(child, `"platform":{`, `"platform":{"os":1,`, 1) + `]}`},
		{"", `{"schemaVersion":2,"config":` + strings.Replace(cfg, `"size":2`, `"size":2,"data":"!!"`, 1) + `}`},
		{"", `{"schemaVersion":2,"config":` + cfg + `} {}`},
	}
	for _, s := range seeds {
		f.Add(s.ct, []byte(s.body))
	}
	f.Fuzz(func(t *testing.T, contentType string, body []byte) {
		m, err := ParseManifest(contentType, body)
		if err != nil {
			if !errors.Is(err, ErrManifestInvalid) {
				t.Fatalf("error %v, want MANIFEST_INVALID", err)
			}
			return
		}
		if !json.Valid(body) {
			t.Fatalf("accepted a manifest that is not one JSON value: %q", body)
		}
		if !IsManifestType(m.MediaType) {
			t.Fatalf("accepted media type %q", m.MediaType)
		}
		if ct, _, err := mime.ParseMediaType(contentType); err == nil && IsManifestType(ct) && ct != m.MediaType {
			t.Fatalf("pushed as %q, recorded as %q", ct, m.MediaType)
		}
		var descs []Descriptor
		if m.IsIndex() {
			if m.Config != nil || len(m.Layers) > 0 {
				t.Fatalf("an index with a config or layers: %+v", m)
			}
			descs = append(descs, m.Children...)
		} else {
			if m.Config == nil || len(m.Children) > 0 {
				t.Fatalf("an image without a config, or with child manifests: %+v", m)
			}
			descs = append(append(descs, *m.Config), m.Layers...)
		}
		if m.Subject != nil {
			descs = append(descs, *m.Subject)
		}
		for _, d := range descs {
			if _, err := ParseDigest(string(d.Digest)); err != nil || d.Size < 0 || d.MediaType == "" {
				t.Fatalf("accepted descriptor %+v", d)
			}
		}
		for _, d := range m.RequiredBlobs() {
			if len(d.URLs) > 0 {
				t.Fatalf("a foreign layer is required: %+v", d)
			}
		}
		// go-containerregistry reads the same references.
		var ggcr []v1.Descriptor
		if m.IsIndex() {
			im, err := v1.ParseIndexManifest(bytes.NewReader(body))
			if err != nil {
				t.Fatalf("accepted an index go-containerregistry cannot read: %v", err)
			}
			ggcr = im.Manifests
		} else {
			im, err := v1.ParseManifest(bytes.NewReader(body))
			if err != nil {
				t.Fatalf("accepted a manifest go-containerregistry cannot read: %v", err)
			}
			ggcr = append([]v1.Descriptor{im.Config}, im.Layers...)
		}
		ours := descs[:len(descs)-btoi(m.Subject != nil)]
		if len(ggcr) != len(ours) {
			t.Fatalf("%d descriptors, go-containerregistry reads %d", len(ours), len(ggcr))
		}
		for i := range ours {
			if ggcr[i].Digest.String() != string(ours[i].Digest) || ggcr[i].Size != ours[i].Size || string(ggcr[i].MediaType) != ours[i].MediaType {
				t.Fatalf("descriptor %d: %+v, go-containerregistry reads %+v", i, ours[i], ggcr[i])
			}
		}
		again, err := ParseManifest(contentType, body)
		if err != nil || !reflect.DeepEqual(again, m) {
			t.Fatalf("parsed again: %+v, %v; first %+v", again, err, m)
		}
	})
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
