package lifecycle_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dockyard/dockyard/lifecycle"
	"github.com/dockyard/dockyard/oci"
)

// pushArtifact pushes an artifact manifest (a signature, an SBOM) about subject, with
// the subject field when referrer, and under tag.
func (r *registry) pushArtifact(repo, tag, subject, kind string, referrer bool) string {
	r.t.Helper()
	layer := []byte(kind + " of " + subject)
	if st, body := r.do("POST", "/v2/"+repo+"/blobs/uploads/?digest="+digest(layer), layer, "application/octet-stream"); st != 201 {
		r.t.Fatalf("blob: %d %s", st, body)
	}
	empty := []byte("{}")
	r.do("POST", "/v2/"+repo+"/blobs/uploads/?digest="+digest(empty), empty, "application/octet-stream")
	subj := ""
	if referrer {
		subj = fmt.Sprintf(`,"subject":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":%q,"size":1}`, subject)
	}
	m := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.example.%s","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":%q,"size":2},"layers":[{"mediaType":"application/vnd.example.%s","digest":%q,"size":%d}]%s}`,
		kind, digest(empty), kind, digest(layer), len(layer), subj)
	ref := tag
	if ref == "" {
		ref = digest([]byte(m))
	}
	if st, body := r.do("PUT", "/v2/"+repo+"/manifests/"+ref, []byte(m), "application/vnd.oci.image.manifest.v1+json"); st != 201 {
		r.t.Fatalf("push %s: %d %s", kind, st, body)
	}
	return digest([]byte(m))
}

// A semver policy keeping the newest major keeps 2.0.0 with its signature and
// attestation tags and its referrer, and deletes 1.0.0 with its own (the bug the issue
// reported: cosign's tags were 'other', no rule kept them, and 2.0.0's signature went).
func TestRetentionKeepsAccessoriesWithTheirSubjects(t *testing.T) {
	clk := &clock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	r := start(t, clk, nil)
	ctx := context.Background()
	subjects := map[string]string{}
	for _, v := range []string{"1.0.0", "2.0.0"} {
		clk.Advance(time.Minute)
		if st, body := r.push("app/a", v, ""); st != 201 {
			t.Fatalf("push: %d %s", st, body)
		}
		_, body := r.do("GET", "/v2/app/a/manifests/"+v, nil, "")
		subjects[v] = digest(body)
	}
	accessory := map[string][]string{} // version → its accessory tags
	referrers := map[string]string{}
	for _, v := range []string{"1.0.0", "2.0.0"} {
		clk.Advance(time.Minute)
		d := oci.Digest(subjects[v])
		sig := string(oci.AccessoryTag(d, ".sig"))
		sigDigest := r.pushArtifact("app/a", sig, subjects[v], "signature", false)
		att := string(oci.AccessoryTag(d, ".att"))
		r.pushArtifact("app/a", att, subjects[v], "attestation", false)
		// An attestation of the signature, named after the signature's digest.
		sigAtt := string(oci.AccessoryTag(oci.Digest(sigDigest), ".att"))
		r.pushArtifact("app/a", sigAtt, sigDigest, "attestation", false)
		accessory[v] = []string{sig, att, sigAtt}
		referrers[v] = r.pushArtifact("app/a", "", subjects[v], "sbom", true)
	}
	clk.Advance(time.Hour)
	e := &lifecycle.Engine{Store: r.store, Registries: []string{"dev"}, Classes: lifecycle.DefaultClasses(), Now: clk.Now,
		Policies: []lifecycle.Policy{{Name: "p", Registries: []string{"dev"}, Repositories: []string{"app/**"},
			Rules: []lifecycle.Rule{lifecycle.Semver{Majors: 1, Minors: 1, Patches: -1}}, UntaggedGrace: time.Minute}}}
	plan, err := e.Plan(ctx, "", "")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range plan {
		t.Logf("%s keep=%v %s", d.Tag, d.Keep, d.Reason)
	}
	if got, want := strings.Join(kept(plan), " "), strings.Join(slices.Sorted(slices.Values(append([]string{"2.0.0"}, accessory["2.0.0"]...))), " "); got != want {
		t.Errorf("kept %q, want %q", got, want)
	}
	for _, d := range plan {
		if strings.HasPrefix(d.Tag, "sha256-") && !strings.HasPrefix(d.Reason, "follows subject "+d.Subject) {
			t.Errorf("%s: reason %q, want it to follow its subject %s", d.Tag, d.Reason, d.Subject)
		}
	}
	if _, err := e.Apply(ctx, plan, "", "", 0); err != nil {
		t.Fatal(err)
	}
	for v, want := range map[string]int{"2.0.0": 200, "1.0.0": 404} {
		for _, ref := range append([]string{subjects[v], referrers[v]}, accessory[v]...) {
			if st, _ := r.do("GET", "/v2/app/a/manifests/"+ref, nil, ""); st != want {
				t.Errorf("%s's %s: %d after apply, want %d", v, ref, st, want)
			}
		}
	}
}
