package oci

import (
	"errors"
	"strings"
	"testing"
)

func TestParseRepository(t *testing.T) {
	valid := []string{"a", "library/ubuntu", "a/b/c/d", "foo-bar", "foo--bar", "foo.bar", "foo_bar", "foo__bar",
		"a0/b1.c2_d3-e4", strings.Repeat("a", MaxNameLength)}
	for _, s := range valid {
		if _, err := ParseRepository(s); err != nil {
			t.Errorf("%q: %v", s, err)
		}
	}
	invalid := []string{"", "A", "a/B", "-a", "a-", ".a", "a.", "a..b", "a___b", "a._b", "a/", "/a", "a//b", "..", "a/../b",
		"a b", "a:b", "a@b", strings.Repeat("a", MaxNameLength+1)}
	for _, s := range invalid {
		_, err := ParseRepository(s)
		if !errors.Is(err, ErrNameInvalid) {
			t.Errorf("%q: got %v, want NAME_INVALID", s, err)
		}
	}
}

func TestParseDigest(t *testing.T) {
	sha256 := "sha256:" + strings.Repeat("a", 64)
	sha512 := "sha512:" + strings.Repeat("0", 128)
	for _, s := range []string{sha256, sha512} {
		d, err := ParseDigest(s)
		if err != nil || string(d) != s {
			t.Errorf("%q: %v", s, err)
		}
	}
	for _, s := range []string{"", "sha256", "sha256:", ":abc", "sha256:" + strings.Repeat("A", 64),
		"sha256:" + strings.Repeat("a", 63), "sha512:" + strings.Repeat("a", 64), "md5:" + strings.Repeat("a", 32),
		"sha256:" + strings.Repeat("g", 64)} {
		if _, err := ParseDigest(s); !errors.Is(err, ErrDigestInvalid) {
			t.Errorf("%q: got %v, want DIGEST_INVALID", s, err)
		}
	}
	if d := FromBytes(SHA512, nil); d.Algorithm() != SHA512 || len(d.Encoded()) != 128 {
		t.Errorf("sha512 of nothing: %s", d)
	}
}

func TestParseTag(t *testing.T) {
	for _, s := range []string{"latest", "v1.2.3", "1.0-RC1", "_x", "A", strings.Repeat("a", 128)} {
		if _, err := ParseTag(s); err != nil {
			t.Errorf("%q: %v", s, err)
		}
	}
	for _, s := range []string{"", "-a", ".a", "a/b", "a:b", "a!", strings.Repeat("a", 129)} {
		if _, err := ParseTag(s); err == nil {
			t.Errorf("%q accepted", s)
		}
	}
}

func TestParseManifest(t *testing.T) {
	cfg := `{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:` + strings.Repeat("a", 64) + `","size":2}`
	layer := `{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:` + strings.Repeat("b", 64) + `","size":3}`
	foreign := `{"mediaType":"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip","digest":"sha256:` + strings.Repeat("c", 64) + `","size":3,"urls":["https://example.com/l"]}`
	m, err := ParseManifest("application/vnd.oci.image.manifest.v1+json; charset=utf-8",
		[]byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":`+cfg+`,"layers":[`+layer+`,`+foreign+`]}`))
	if err != nil {
		t.Fatal(err)
	}
	if m.ArtifactType != "application/vnd.oci.image.config.v1+json" {
		t.Errorf("artifactType falls back to the config media type, got %q", m.ArtifactType)
	}
	if got := len(m.RequiredBlobs()); got != 2 {
		t.Errorf("required blobs: %d, want config and one layer (foreign layers are not pushed)", got)
	}
	// Without mediaType, an index is recognised by its manifests.
	idx, err := ParseManifest("", []byte(`{"schemaVersion":2,"manifests":[]}`))
	if err != nil || !idx.IsIndex() {
		t.Errorf("index without mediaType: %v %+v", err, idx)
	}
	for name, body := range map[string]string{
		"no config":        `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[]}`,
		"index with layer": `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[],"layers":[]}`,
		"unknown type":     `{"schemaVersion":2,"mediaType":"application/x-unknown","config":` + cfg + `}`,
		"negative size":    `{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:` + strings.Repeat("a", 64) + `","size":-1}}`,
		"not an object":    `[1,2]`,
	} {
		if _, err := ParseManifest("", []byte(body)); !errors.Is(err, ErrManifestInvalid) {
			t.Errorf("%s: got %v, want MANIFEST_INVALID", name, err)
		}
	}
}
