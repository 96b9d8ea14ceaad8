package oci

import (
	"fmt"
	"regexp"
	"strings"
)

// An accessory tag names, by its digest, the manifest of the same repository it
// belongs to: cosign's signatures, attestations and SBOMs (sha256-<hex>.sig, .att,
// .sbom) and the distribution spec's referrers tag schema (sha256-<hex>, an index of
// the manifest's referrers). Such a tag is not an image of its own: retention,
// deletes and immutability treat it as part of the manifest it names (its subject).
// A manifest's other accessories are its referrers (manifests whose subject it is).

// Accessories recognises accessory tags: the schemes real tools use, and patterns
// configured for in-house tools. The zero value knows the built-in schemes.
type Accessories struct {
	schemes []accessoryScheme
}

type accessoryScheme struct {
	name string
	re   *regexp.Regexp
	alg  int // submatch indexes of the digest's algorithm and hex
	hex  int
}

// builtinAccessories are the schemes real tools use.
var builtinAccessories = []accessoryScheme{
	mustScheme("cosign signature", `^(?P<alg>sha256|sha512)-(?P<hex>[0-9a-f]+)\.sig$`),
	mustScheme("cosign attestation", `^(?P<alg>sha256|sha512)-(?P<hex>[0-9a-f]+)\.att$`),
	mustScheme("cosign sbom", `^(?P<alg>sha256|sha512)-(?P<hex>[0-9a-f]+)\.sbom$`),
	mustScheme("referrers tag", `^(?P<alg>sha256|sha512)-(?P<hex>[0-9a-f]+)$`),
}

func mustScheme(name, pattern string) accessoryScheme {
	s, err := newScheme(name, pattern)
	if err != nil {
		panic(err)
	}
	return s
}

func newScheme(name, pattern string) (accessoryScheme, error) {
	re, err := regexp.Compile(pattern)
	if err != nil {
		return accessoryScheme{}, err
	}
	s := accessoryScheme{name: name, re: re, alg: re.SubexpIndex("alg"), hex: re.SubexpIndex("hex")}
	if s.alg < 0 || s.hex < 0 {
		return accessoryScheme{}, fmt.Errorf("%q must name the digest's algorithm and hex as (?P<alg>…) and (?P<hex>…)", pattern)
	}
	return s, nil
}

// NewAccessories recognises the built-in schemes and patterns (regular expressions
// naming the subject digest's algorithm and hex as the groups alg and hex, such as
// `^(?P<alg>sha256)-(?P<hex>[0-9a-f]{64})\.vex$`).
func NewAccessories(patterns []string) (*Accessories, error) {
	a := &Accessories{}
	for i, p := range patterns {
		s, err := newScheme(fmt.Sprintf("pattern %d", i+1), p)
		if err != nil {
			return nil, err
		}
		a.schemes = append(a.schemes, s)
	}
	return a, nil
}

// Subject says which manifest tag is an accessory of, and by which scheme; ok is false
// for any other tag (a tag whose digest part is not a valid digest included).
func (a *Accessories) Subject(tag string) (subject Digest, scheme string, ok bool) {
	var extra []accessoryScheme
	if a != nil {
		extra = a.schemes
	}
	builtin := builtinAccessories
	if !strings.HasPrefix(tag, "sha256-") && !strings.HasPrefix(tag, "sha512-") {
		builtin = nil // no built-in scheme matches: tags are looked up on every pull
	}
	for _, list := range [][]accessoryScheme{builtin, extra} {
		for _, s := range list {
			m := s.re.FindStringSubmatch(tag)
			if m == nil {
				continue
			}
			d, err := ParseDigest(m[s.alg] + ":" + m[s.hex])
			if err != nil {
				continue
			}
			return d, s.name, true
		}
	}
	return "", "", false
}

// AccessoryTag is the tag of scheme suffix (".sig", ".att", ".sbom", "" for the
// referrers tag) for subject d.
func AccessoryTag(d Digest, suffix string) Tag {
	return Tag(string(d.Algorithm()) + "-" + d.Encoded() + suffix)
}
