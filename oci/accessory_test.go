package oci

import (
	"strings"
	"testing"
)

func TestAccessoryTagsNameTheirSubject(t *testing.T) {
	hex := strings.Repeat("ab", 32)
	d := Digest("sha256:" + hex)
	long := Digest("sha512:" + strings.Repeat("cd", 64))
	a, err := NewAccessories([]string{`^(?P<alg>sha256)-(?P<hex>[0-9a-f]{64})\.vex$`})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		tag     string
		subject Digest
		scheme  string
	}{
		{"sha256-" + hex + ".sig", d, "cosign signature"},
		{"sha256-" + hex + ".att", d, "cosign attestation"},
		{"sha256-" + hex + ".sbom", d, "cosign sbom"},
		{"sha256-" + hex, d, "referrers tag"},
		{"sha512-" + long.Encoded() + ".sig", long, "cosign signature"},
		{"sha256-" + hex + ".vex", d, "pattern 1"},
		{"sha256-" + hex[:62] + ".sig", "", ""},          // too short for a sha256 digest
		{"sha256-" + strings.ToUpper(hex), "", ""},       // not the digest's hex
		{"sha256-" + hex + ".sig.bak", "", ""},           // another suffix
		{"v1.0.0", "", ""},                               // an image's tag
		{"md5-0123456789abcdef0123456789abcdef", "", ""}, // no such digest algorithm
	} {
		got, scheme, ok := a.Subject(c.tag)
		if ok != (c.subject != "") || got != c.subject || scheme != c.scheme {
			t.Errorf("Subject(%q) = %q, %q, %v; want %q, %q", c.tag, got, scheme, ok, c.subject, c.scheme)
		}
	}
	// Without patterns, the built-in schemes only.
	if _, _, ok := (*Accessories)(nil).Subject("sha256-" + hex + ".vex"); ok {
		t.Error("a nil Accessories knows a configured pattern")
	}
	if got := AccessoryTag(d, ".sig"); got != Tag("sha256-"+hex+".sig") {
		t.Errorf("AccessoryTag = %q", got)
	}
	if _, err := NewAccessories([]string{`^sha256-[0-9a-f]{64}\.vex$`}); err == nil {
		t.Error("a pattern without alg and hex groups was accepted")
	}
}
