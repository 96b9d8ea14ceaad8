package oci

import (
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"hash"
	"strings"
)

// Algorithm is a supported digest algorithm.
type Algorithm string

const (
	SHA256 Algorithm = "sha256"
	SHA512 Algorithm = "sha512"
)

// ParseAlgorithm accepts the algorithms this registry can verify.
func ParseAlgorithm(s string) (Algorithm, error) {
	switch Algorithm(s) {
	case SHA256, SHA512:
		return Algorithm(s), nil
	}
	return "", ErrUnsupported.Withf("digest algorithm %q is not supported (use sha256 or sha512)", s)
}

// New returns a fresh hash for the algorithm.
func (a Algorithm) New() hash.Hash {
	if a == SHA512 {
		return sha512.New()
	}
	return sha256.New()
}

// hexLen is the length of an encoded digest of the algorithm.
func (a Algorithm) hexLen() int {
	if a == SHA512 {
		return 128
	}
	return 64
}

// Digest is a validated content digest such as "sha256:ab12…".
type Digest string

// ParseDigest validates s as a digest of a supported algorithm with a lowercase hex
// encoding of the right length.
func ParseDigest(s string) (Digest, error) {
	alg, enc, ok := strings.Cut(s, ":")
	if !ok || alg == "" || enc == "" {
		return "", ErrDigestInvalid.Withf("invalid digest %q", s)
	}
	a, err := ParseAlgorithm(alg)
	if err != nil {
		// A well-formed digest of an unknown algorithm is still a bad digest for a
		// client: it cannot be verified here.
		return "", ErrDigestInvalid.Withf("unsupported digest algorithm in %q", s)
	}
	if len(enc) != a.hexLen() || !isLowerHex(enc) {
		return "", ErrDigestInvalid.Withf("invalid %s digest %q", a, s)
	}
	return Digest(s), nil
}

// FromHash builds the digest of a finished hash.
func FromHash(a Algorithm, h hash.Hash) Digest {
	return Digest(string(a) + ":" + hex.EncodeToString(h.Sum(nil)))
}

// FromBytes digests b with algorithm a.
func FromBytes(a Algorithm, b []byte) Digest {
	h := a.New()
	h.Write(b)
	return FromHash(a, h)
}

func (d Digest) Algorithm() Algorithm {
	alg, _, _ := strings.Cut(string(d), ":")
	return Algorithm(alg)
}

// Encoded is the hex part of the digest.
func (d Digest) Encoded() string {
	_, enc, _ := strings.Cut(string(d), ":")
	return enc
}

func (d Digest) String() string { return string(d) }

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
