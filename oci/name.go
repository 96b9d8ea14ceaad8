package oci

import "strings"

// MaxNameLength bounds a repository name, as the reference grammar does for a full
// reference.
const MaxNameLength = 255

// Repository is a validated repository name such as "team/app".
type Repository string

// ParseRepository validates a repository name against the distribution spec grammar:
// slash-separated components of lowercase alphanumerics joined by '.', '_', '__' or
// runs of '-'.
func ParseRepository(s string) (Repository, error) {
	if s == "" {
		return "", ErrNameInvalid.Withf("repository name is empty")
	}
	if len(s) > MaxNameLength {
		return "", ErrNameInvalid.Withf("repository name is %d characters long, the limit is %d", len(s), MaxNameLength)
	}
	for _, c := range strings.Split(s, "/") {
		if !validComponent(c) {
			return "", ErrNameInvalid.Withf("invalid repository name %q: component %q must be lowercase letters and digits separated by '.', '_', '__' or '-'", s, c)
		}
	}
	return Repository(s), nil
}

func (r Repository) String() string { return string(r) }

func validComponent(c string) bool {
	if c == "" || !isAlnum(c[0]) || !isAlnum(c[len(c)-1]) {
		return false
	}
	for i := 0; i < len(c); {
		if isAlnum(c[i]) {
			i++
			continue
		}
		j := i
		for j < len(c) && !isAlnum(c[j]) {
			j++
		}
		if !validSeparator(c[i:j]) {
			return false
		}
		i = j
	}
	return true
}

// validSeparator accepts '.', '_', '__' or a run of '-'.
func validSeparator(s string) bool {
	switch s {
	case ".", "_", "__":
		return true
	}
	return strings.Trim(s, "-") == ""
}

func isAlnum(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }

// Tag is a validated tag name.
type Tag string

// MaxTagLength is the spec's limit for a tag.
const MaxTagLength = 128

// ParseTag validates s against [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}.
func ParseTag(s string) (Tag, error) {
	if s == "" || len(s) > MaxTagLength {
		return "", ErrManifestInvalid.Withf("invalid tag %q: 1 to %d characters", s, MaxTagLength)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		word := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_'
		if !word && (i == 0 || c != '.' && c != '-') {
			return "", ErrManifestInvalid.Withf("invalid tag %q", s)
		}
	}
	return Tag(s), nil
}

func (t Tag) String() string { return string(t) }

// Reference is a manifest reference: a tag or a digest, never both.
type Reference struct {
	Tag    Tag
	Digest Digest
}

// ParseReference reads a tag or, when it contains ':', a digest.
func ParseReference(s string) (Reference, error) {
	if strings.Contains(s, ":") {
		d, err := ParseDigest(s)
		return Reference{Digest: d}, err
	}
	t, err := ParseTag(s)
	return Reference{Tag: t}, err
}

// IsDigest reports whether the reference names content rather than a tag.
func (r Reference) IsDigest() bool { return r.Digest != "" }

func (r Reference) String() string {
	if r.IsDigest() {
		return string(r.Digest)
	}
	return string(r.Tag)
}
