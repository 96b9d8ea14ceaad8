package auth

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

const (
	fuzzAudience = "registry.example"
	fuzzIssuer   = "dockyard"
)

// fuzzKey is a fixed P-256 test key, so that tokens kept in the corpus stay ours.
func fuzzKey(tb testing.TB) *ecdsa.PrivateKey {
	d := sha256.Sum256([]byte("dockyard fuzzing key: never use outside tests"))
	k, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), d[:])
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

func fuzzSigner(tb testing.TB) *Signer {
	s, err := NewSigner(fuzzKey(tb), fuzzIssuer)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

var b64 = base64.RawURLEncoding

// decodeSegment reads a JWT segment as golang-jwt does (padding tolerated).
func decodeSegment(s string) ([]byte, bool) {
	if b, err := b64.DecodeString(s); err == nil {
		return b, true
	}
	b, err := base64.URLEncoding.DecodeString(s)
	return b, err == nil
}

// signedByUs checks, without golang-jwt, that token is an ES256 JWS whose signature
// our public key verifies over the token's own header and payload.
func signedByUs(key *ecdsa.PrivateKey, token string) (header map[string]any, why string) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil, "not three segments"
	}
	hb, ok := decodeSegment(parts[0])
	if !ok || json.Unmarshal(hb, &header) != nil {
		return nil, "header is not base64url JSON"
	}
	if header["alg"] != "ES256" {
		return nil, "alg is not ES256"
	}
	sig, ok := decodeSegment(parts[2])
	if !ok || len(sig) != 64 {
		return nil, "signature is not 64 bytes"
	}
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if !ecdsa.Verify(&key.PublicKey, sum[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])) {
		return nil, "the signature is not our key's"
	}
	return header, ""
}

// checkAccepted is what every token Verify accepts must be: signed by our key with
// our key id, for the audience, from our issuer, and not expired or not yet valid.
func checkAccepted(t *testing.T, s *Signer, key *ecdsa.PrivateKey, token string, c *Claims) {
	t.Helper()
	header, why := signedByUs(key, token)
	if why != "" {
		t.Fatalf("accepted a token not signed by our key (%s): %q", why, token)
	}
	if header["kid"] != s.kid {
		t.Fatalf("accepted a token of key id %v", header["kid"])
	}
	now := time.Now()
	switch {
	case c.ExpiresAt == nil || !c.ExpiresAt.After(now):
		t.Fatalf("accepted a token expiring at %v", c.ExpiresAt)
	case c.NotBefore != nil && c.NotBefore.After(now):
		t.Fatalf("accepted a token valid from %v", c.NotBefore)
	case !slices.Contains(c.Audience, fuzzAudience):
		t.Fatalf("accepted a token for %v", c.Audience)
	case c.Issuer != fuzzIssuer:
		t.Fatalf("accepted a token from %q", c.Issuer)
	}
}

// A token not signed by our key is never accepted, whatever its bytes: forged key ids,
// alg "none", HS256 keyed with our public key, RS256, other keys, tampered payloads.
func FuzzVerifyRejectsForeignTokens(f *testing.F) {
	s := fuzzSigner(f)
	key := fuzzKey(f)
	ours, _, err := s.Sign(Claims{Access: []Access{{Type: "repository", Name: "a", Actions: []string{"pull"}, Registry: "default"}}}, "alice", fuzzAudience, time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	parts := strings.Split(ours, ".")
	header := b64.EncodeToString([]byte(`{"alg":"ES256","kid":"` + s.kid + `","typ":"JWT"}`))
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	forged := func(alg, head, payload string) string {
		in := head + "." + payload
		sum := sha256.Sum256([]byte(in))
		switch alg {
		case "ES256":
			r, ss, _ := ecdsa.Sign(rand.Reader, other, sum[:])
			sig := make([]byte, 64)
			r.FillBytes(sig[:32])
			ss.FillBytes(sig[32:])
			return in + "." + b64.EncodeToString(sig)
		case "HS256":
			der, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
			m := hmac.New(sha256.New, der)
			m.Write([]byte(in))
			return in + "." + b64.EncodeToString(m.Sum(nil))
		}
		return in + "."
	}
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	rsaHead := b64.EncodeToString([]byte(`{"alg":"RS256","kid":"` + s.kid + `"}`))
	sum := sha256.Sum256([]byte(rsaHead + "." + parts[1]))
	rsaSig, _ := rsa.SignPKCS1v15(rand.Reader, rsaKey, 5, sum[:]) // crypto.SHA256
	for _, tok := range []string{
		ours,
		forged("ES256", header, parts[1]),
		forged("none", b64.EncodeToString([]byte(`{"alg":"none","kid":"`+s.kid+`"}`)), parts[1]),
		forged("HS256", b64.EncodeToString([]byte(`{"alg":"HS256","kid":"`+s.kid+`"}`)), parts[1]),
		rsaHead + "." + parts[1] + "." + b64.EncodeToString(rsaSig),
		parts[0] + "." + parts[1][:len(parts[1])-2] + "x" + parts[1][len(parts[1])-1:] + "." + parts[2],
		parts[0] + "." + parts[1] + "." + parts[2] + "=",
		"", ".", "..", "a.b.c",
	} {
		f.Add(tok)
	}
	f.Fuzz(func(t *testing.T, token string) {
		c, err := s.Verify(token, fuzzAudience)
		if err != nil {
			if c != nil {
				t.Fatalf("claims with an error: %v", err)
			}
			return
		}
		checkAccepted(t, s, key, token, c)
	})
}

// Claims are checked whatever their JSON holds: a token signed by our key with any
// header and payload is accepted only with ES256 and our key id, and when the claims
// it returns are current, for the audience and from our issuer.
func FuzzVerifyChecksClaims(f *testing.F) {
	s := fuzzSigner(f)
	key := fuzzKey(f)
	kid := s.kid
	future, past := time.Now().Add(24*365*time.Hour).Unix(), time.Now().Add(-time.Hour).Unix()
	head := `{"alg":"ES256","typ":"JWT","kid":"` + kid + `"}`
	claims := func(extra string) string {
		return `{"iss":"dockyard","sub":"alice","aud":"` + fuzzAudience + `",` + extra + `,"access":[{"type":"repository","name":"a","actions":["pull"],"registry":"default"}]}`
	}
	seeds := [][2]string{
		{head, claims(`"exp":` + itoa(future))},
		{head, claims(`"exp":` + itoa(past))},
		{head, claims(`"nbf":` + itoa(future) + `,"exp":` + itoa(future))},
		{head, claims(`"exp":"` + itoa(future) + `"`)},
		{head, claims(`"exp":1e300`)},
		{head, claims(`"exp":9.3e18`)},
		{head, claims(`"exp":` + itoa(future) + `,"aud":["x","` + fuzzAudience + `"]`)},
		{head, `{"iss":"other","aud":"` + fuzzAudience + `","exp":` + itoa(future) + `}`},
		{head, `{"aud":"` + fuzzAudience + `","exp":` + itoa(future) + `}`},
		{`{"alg":"none","kid":"` + kid + `"}`, claims(`"exp":` + itoa(future))},
		{`{"alg":"ES384","kid":"` + kid + `"}`, claims(`"exp":` + itoa(future))},
		{`{"alg":"ES256"}`, claims(`"exp":` + itoa(future))},
		{head, `null`},
	}
	for _, sd := range seeds {
		f.Add([]byte(sd[0]), []byte(sd[1]))
	}
	f.Fuzz(func(t *testing.T, header, payload []byte) {
		in := b64.EncodeToString(header) + "." + b64.EncodeToString(payload)
		sum := sha256.Sum256([]byte(in))
		r, ss, err := ecdsa.Sign(rand.Reader, key, sum[:])
		if err != nil {
			t.Fatal(err)
		}
		sig := make([]byte, 64)
		r.FillBytes(sig[:32])
		ss.FillBytes(sig[32:])
		token := in + "." + b64.EncodeToString(sig)
		c, err := s.Verify(token, fuzzAudience)
		if err != nil {
			return
		}
		checkAccepted(t, s, key, token, c)
	})
}

func itoa(n int64) string { return big.NewInt(n).String() }

// bcryptHash is the whole modular-crypt form htpasswd -B writes: version, two-digit
// cost, 22 characters of salt and 31 of hash.
var bcryptHash = regexp.MustCompile(`^\$2[abxy]?\$[0-9]{2}\$[./A-Za-z0-9]{53}$`)

// A users file is accepted only when each of its lines is a comment, blank, or a user
// name with a whole bcrypt hash of cost 10 or more; then exactly its users are known.
func FuzzUsersFile(f *testing.F) {
	const alice = "$2a$10$3uD7RL/HE8Zvl2GxlXCAj.WpWPBarwkT5558h/XWLHW/EtzKkQHC6" // "alice-pw"
	const weak = "$2a$04$or79nQVY5O.okYO8bCXOc.f89u3QTXoHqiyaScRVidV69zWPwdO52"
	for _, s := range []string{
		"alice:" + alice + "\n",
		"# users\n\nalice:" + alice + "\r\nbob:" + strings.Replace(alice, "$2a$", "$2y$", 1) + "\n",
		"  alice:" + alice + "  \n",
		"alice:" + weak + "\n",
		"alice:" + alice + "x\n", // bcrypt.Cost reads only the head
		"alice:\n", ":" + alice + "\n", "alice\n",
		"alice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n",
		"alice:$apr1$x$y\n",
		"",
	} {
		f.Add([]byte(s))
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, content []byte) {
		path := filepath.Join(dir, "htpasswd")
		if err := os.WriteFile(path, content, 0o600); err != nil {
			t.Fatal(err)
		}
		u, err := NewUsersFile(path)
		if err != nil {
			if !strings.HasPrefix(err.Error(), path) {
				t.Fatalf("error %q does not name the file", err)
			}
			return
		}
		names := map[string]bool{}
		sc := bufio.NewScanner(bytes.NewReader(content))
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			name, hash, ok := strings.Cut(line, ":")
			if !ok || name == "" || !bcryptHash.MatchString(hash) || hash[len(hash)-56:len(hash)-54] < "10" {
				t.Fatalf("accepted line %q", line)
			}
			names[name] = true
		}
		if len(u.users) != len(names) {
			t.Fatalf("%d users known, the file names %d", len(u.users), len(names))
		}
		for name := range names {
			if !u.Has(name) || u.Has(name+"\x00") {
				t.Fatalf("user %q", name)
			}
		}
	})
}
