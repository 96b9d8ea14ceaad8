package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base32"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	lru "github.com/hashicorp/golang-lru/v2"
)

// Access is one entry of a token's access claim, as the Docker token spec defines it,
// bound to the virtual registry the access was decided for: a name routes to different
// registries on different hosts, or with a different ns parameter, and the grant holds
// for one of them only.
type Access struct {
	Type     string   `json:"type"` // "repository" or "registry"
	Name     string   `json:"name"` // repository name as the client sees it, or "catalog"
	Actions  []string `json:"actions"`
	Registry string   `json:"registry"`
	// Repository is the repository inside Registry the access was decided for (Name
	// less any namespace prefix the host's routing removed): a grant holds only where
	// the same client name reaches the same repository of the same registry.
	Repository string `json:"repository,omitempty"`
}

// Claims are what dockyard's tokens carry.
type Claims struct {
	jwt.RegisteredClaims
	Access []Access `json:"access"`
	Groups []string `json:"groups,omitempty"`
	Kind   string   `json:"kind,omitempty"` // "refresh" for refresh tokens
	Source string   `json:"src,omitempty"`
	// Limit carries a CI token's scopes into the bearer tokens it is exchanged for:
	// rules decided for the subject (the catalog filter, mounts without a source) stay
	// capped by them. nil: no limit.
	Limit *[]Grant `json:"limit,omitempty"`
	// CI names the CI token a bearer token was exchanged for: revoking that token ends
	// it at once, not at its expiry.
	CI string `json:"ci,omitempty"`
}

// Identity is who the claims speak for, with the groups and limit they carry.
func (c *Claims) Identity() *Identity {
	id := &Identity{Name: c.Subject, Groups: c.Groups, Source: c.Source, TokenID: c.CI}
	if c.Limit != nil {
		id.Limit = *c.Limit
		if id.Limit == nil {
			id.Limit = []Grant{}
		}
	}
	return id
}

// Signer issues and verifies tokens with one key (ES256 or RS256) named by its kid.
type Signer struct {
	key    crypto.Signer
	method jwt.SigningMethod
	kid    string
	issuer string
	// verified remembers tokens whose signature was checked: a client sends the same
	// token on every request, and an ES256 check costs ~70 µs.
	verified *lru.Cache[[32]byte, *Claims]
}

// LoadOrCreateKey reads a PEM private key (EC P-256 or RSA) from path; when path does
// not exist and create is set, it writes a new P-256 key there first.
func LoadOrCreateKey(path string, create bool) (crypto.Signer, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) && create {
		if b, err = NewKeyPEM(); err != nil {
			return nil, err
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, err
		}
		if err := os.WriteFile(path, b, 0o600); err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, err
	}
	return ParseKey(b, path)
}

// NewKeyPEM makes a new P-256 signing key, PEM-encoded.
func NewKeyPEM() ([]byte, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParseKey reads a PEM private key (EC P-256 or RSA); path names it in errors.
func ParseKey(b []byte, path string) (crypto.Signer, error) {
	var err error
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("%s: no PEM block", path)
	}
	var key any
	switch block.Type {
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%s: unsupported key type", path)
	}
	return signer, nil
}

// NewSigner signs with key (ECDSA P-256 → ES256, RSA → RS256) as issuer.
func NewSigner(key crypto.Signer, issuer string) (*Signer, error) {
	var method jwt.SigningMethod
	switch k := key.(type) {
	case *ecdsa.PrivateKey:
		if k.Curve != elliptic.P256() {
			return nil, errors.New("token key: only P-256 EC keys (ES256) are supported")
		}
		method = jwt.SigningMethodES256
	case *rsa.PrivateKey:
		method = jwt.SigningMethodRS256
	default:
		return nil, errors.New("token key: use an EC P-256 or RSA key")
	}
	verified, _ := lru.New[[32]byte, *Claims](16384)
	return &Signer{key: key, method: method, kid: keyID(key.Public()), issuer: issuer, verified: verified}, nil
}

// keyID is the libtrust-style fingerprint Docker registries use as kid: the first 240
// bits of the SHA-256 of the public key's DER, base32 in 12 groups of 4.
func keyID(pub crypto.PublicKey) string {
	der, _ := x509.MarshalPKIXPublicKey(pub)
	sum := sha256.Sum256(der)
	s := strings.TrimRight(base32.StdEncoding.EncodeToString(sum[:30]), "=")
	var groups []string
	for i := 0; i < len(s); i += 4 {
		groups = append(groups, s[i:min(i+4, len(s))])
	}
	return strings.Join(groups, ":")
}

// Sign issues a token to subject for audience, valid for ttl.
func (s *Signer) Sign(c Claims, subject, audience string, ttl time.Duration) (string, time.Time, error) {
	now := time.Now()
	exp := now.Add(ttl)
	c.RegisteredClaims = jwt.RegisteredClaims{
		Issuer: s.issuer, Subject: subject, Audience: jwt.ClaimStrings{audience},
		IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now.Add(-time.Minute)),
		ExpiresAt: jwt.NewNumericDate(exp), ID: randomID(),
	}
	t := jwt.NewWithClaims(s.method, c)
	t.Header["kid"] = s.kid
	signed, err := t.SignedString(s.key)
	return signed, exp, err
}

// Verify checks a token's signature, algorithm, kid, expiry, issuer and audience. A
// token seen before skips the signature check, never the expiry and audience checks.
func (s *Signer) Verify(token, audience string) (*Claims, error) {
	sum := sha256.Sum256([]byte(token))
	if c, ok := s.verified.Get(sum); ok {
		if !c.ExpiresAt.After(time.Now()) {
			s.verified.Remove(sum)
			return nil, jwt.ErrTokenExpired
		}
		if !slices.Contains(c.Audience, audience) {
			return nil, jwt.ErrTokenInvalidAudience
		}
		return c, nil
	}
	c, err := s.verify(token, audience)
	if err == nil {
		s.verified.Add(sum, c)
	}
	return c, err
}

func (s *Signer) verify(token, audience string) (*Claims, error) {
	var c Claims
	_, err := jwt.ParseWithClaims(token, &c, func(t *jwt.Token) (any, error) {
		if kid, _ := t.Header["kid"].(string); kid != s.kid {
			return nil, errors.New("unknown signing key")
		}
		return s.key.Public(), nil
	},
		jwt.WithValidMethods([]string{s.method.Alg()}),
		jwt.WithIssuer(s.issuer),
		jwt.WithAudience(audience),
		jwt.WithExpirationRequired(),
		// No leeway: the same process signs and verifies, there is no skew to allow.
	)
	if err != nil {
		return nil, err
	}
	return &c, nil
}

func randomID() string {
	var b [16]byte
	rand.Read(b[:])
	return fmt.Sprintf("%x", b)
}
