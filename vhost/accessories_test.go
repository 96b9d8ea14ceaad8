package vhost_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// rawManifest is manifest bytes to push as they are.
type rawManifest struct {
	b  []byte
	mt types.MediaType
}

func (r rawManifest) RawManifest() ([]byte, error)        { return r.b, nil }
func (r rawManifest) MediaType() (types.MediaType, error) { return r.mt, nil }

// pushReferrer pushes to host/repo an artifact whose subject is subject (a manifest
// of size bytes), and returns its digest.
func pushReferrer(t *testing.T, host, repo, subject string, size int64, n int) string {
	t.Helper()
	layer := static.NewLayer([]byte(fmt.Sprintf("sbom %d of %s", n, subject)), "application/spdx+json")
	empty := static.NewLayer([]byte("{}"), "application/vnd.oci.empty.v1+json")
	for _, l := range []v1.Layer{layer, empty} {
		if err := remote.WriteLayer(ref(t, host+"/"+repo).Context(), l); err != nil {
			t.Fatal(err)
		}
	}
	ld, _ := layer.Digest()
	ed, _ := empty.Digest()
	m := []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/spdx+json","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":%q,"size":2},"layers":[{"mediaType":"application/spdx+json","digest":%q,"size":%d}],"subject":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":%q,"size":%d}}`,
		ed, ld, len(fmt.Sprintf("sbom %d of %s", n, subject)), subject, size))
	d := bytesDigest(m)
	if err := remote.Put(ref(t, host+"/"+repo+"@"+d), rawManifest{m, types.OCIManifestSchema1}); err != nil {
		t.Fatal(err)
	}
	return d
}

func bytesDigest(b []byte) string {
	h := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(h[:])
}

// A proxy remembers an upstream's referrers list for the tag TTL, as it does a tag, and
// lists it while the upstream cannot be asked.
func TestProxyRemembersUpstreamReferrersForTheTagTTL(t *testing.T) {
	u := newTestUpstream(t)
	img := randomImage(t, 1<<10, 1)
	if err := remote.Write(ref(t, u.host()+"/org/app:1.0"), img); err != nil {
		t.Fatal(err)
	}
	d, _ := img.Digest()
	raw, _ := img.RawManifest()
	clock := &fakeClock{now: time.Unix(1e9, 0)}
	s := startProxy(t, u, proxyConfig{ttl: time.Minute, clock: clock})
	listed := func() int {
		t.Helper()
		r := get("GET", "http://"+s.addr+"/v2/org/app/referrers/"+d.String())
		if r.err != nil || r.status != 200 {
			t.Fatalf("referrers: %d %v %s", r.status, r.err, r.body)
		}
		var idx struct {
			Manifests []json.RawMessage `json:"manifests"`
		}
		if err := json.Unmarshal(r.body, &idx); err != nil {
			t.Fatal(err)
		}
		return len(idx.Manifests)
	}
	pushReferrer(t, u.host(), "org/app", d.String(), int64(len(raw)), 1)
	if n := listed(); n != 1 {
		t.Fatalf("%d referrers through the proxy, want the upstream's 1", n)
	}
	pushReferrer(t, u.host(), "org/app", d.String(), int64(len(raw)), 2)
	if n := listed(); n != 1 {
		t.Errorf("%d referrers within the TTL, want the 1 remembered", n)
	}
	clock.Advance(2 * time.Minute)
	if n := listed(); n != 2 {
		t.Errorf("%d referrers past the TTL, want the upstream's 2", n)
	}
	clock.Advance(2 * time.Minute)
	u.set(func(u *testUpstream) { u.failing = true })
	if n := listed(); n != 2 {
		t.Errorf("%d referrers with the upstream failing, want the 2 remembered", n)
	}
}

// A group resolves an accessory tag (a signature's) in the member holding its subject
// first — prod's tag of the same name is another image's business —, unless the push
// member has it: a signature pushed through the group reads back through it (cosign
// adds the organisation's signature to the upstream's and pushes the whole).
func TestGroupResolvesAccessoryTagsWhereTheirSubjectIs(t *testing.T) {
	u := newTestUpstream(t)
	s, hosts := startNexus(t, u)
	img, sig, wrong, orgSig := randomImage(t, 512, 1), randomImage(t, 512, 1), randomImage(t, 512, 1), randomImage(t, 512, 1)
	if err := remote.Write(ref(t, u.host()+"/team/app:2.0"), img); err != nil {
		t.Fatal(err)
	}
	tag := strings.Replace(digestOf(t, img), ":", "-", 1) + ".sig"
	if err := remote.Write(ref(t, u.host()+"/team/app:"+tag), sig); err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref(t, s.addr+"/team/app:"+tag), wrong, remote.WithTransport(hostRewriter(hosts["prod"]))); err != nil {
		t.Fatal(err)
	}
	if got, _ := resolveVia(s, "registry.test", "team/app", tag); got != digestOf(t, sig) {
		t.Errorf("the signature tag of the upstream's image resolves to %s through the group, want the upstream's %s (prod's is %s)", got, digestOf(t, sig), digestOf(t, wrong))
	}
	// Pushed through the group (to dev, its push member), it reads back.
	if err := remote.Write(ref(t, s.addr+"/team/app:"+tag), orgSig, remote.WithTransport(hostRewriter("registry.test"))); err != nil {
		t.Fatalf("push through the group: %v", err)
	}
	if got, _ := resolveVia(s, "registry.test", "team/app", tag); got != digestOf(t, orgSig) {
		t.Errorf("read-after-write through the group: %s resolves to %s, not the %s just pushed through it", tag, got, digestOf(t, orgSig))
	}
	// Any other tag keeps the group's order.
	if err := remote.Write(ref(t, s.addr+"/team/app:2.0"), wrong, remote.WithTransport(hostRewriter(hosts["prod"]))); err != nil {
		t.Fatal(err)
	}
	if got, _ := resolveVia(s, "registry.test", "team/app", "2.0"); got != digestOf(t, wrong) {
		t.Errorf("a plain tag resolves to %s, want prod's (before the proxy)", got)
	}
}
