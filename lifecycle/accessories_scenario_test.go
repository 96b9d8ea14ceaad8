package lifecycle_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
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
	sizeOf := func(ref string) int64 { // a manifest with its config and layers
		_, b := r.do("GET", "/v2/app/a/manifests/"+ref, nil, "")
		var m struct {
			Config struct{ Size int64 }   `json:"config"`
			Layers []struct{ Size int64 } `json:"layers"`
		}
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		n := int64(len(b)) + m.Config.Size
		for _, l := range m.Layers {
			n += l.Size
		}
		return n
	}
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
	plan, err := e.PlanSized(ctx, "", "")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range plan {
		t.Logf("%s keep=%v %s", d.Tag, d.Keep, d.Reason)
	}
	if got, want := strings.Join(kept(plan), " "), strings.Join(slices.Sorted(slices.Values(append([]string{"2.0.0"}, accessory["2.0.0"]...))), " "); got != want {
		t.Errorf("kept %q, want %q", got, want)
	}
	// 2.0.0's size counts its accessories: both tags' manifests, the attestation of
	// its signature, its referrer; an accessory tag's size is its own.
	want := sizeOf("2.0.0") + sizeOf(referrers["2.0.0"])
	for _, tag := range accessory["2.0.0"] {
		want += sizeOf(tag)
	}
	for _, d := range plan {
		if strings.HasPrefix(d.Tag, "sha256-") && !strings.HasPrefix(d.Reason, "follows subject "+d.Subject) {
			t.Errorf("%s: reason %q, want it to follow its subject %s", d.Tag, d.Reason, d.Subject)
		}
		if d.Tag == "2.0.0" && d.Size != want {
			t.Errorf("2.0.0's size in the plan: %d, want %d (with its accessories)", d.Size, want)
		}
		if d.Tag == accessory["2.0.0"][0] && d.Size != sizeOf(d.Tag) {
			t.Errorf("%s's size in the plan: %d, want its own %d", d.Tag, d.Size, sizeOf(d.Tag))
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

// pushLayered pushes an image manifest with one layer of media type mt and bytes
// layer to ref, and returns the status and the manifest's digest.
func (r *registry) pushLayered(repo, ref, mt string, layer []byte) (int, string) {
	r.t.Helper()
	empty := []byte("{}")
	for _, b := range [][]byte{layer, empty} {
		if st, body := r.do("POST", "/v2/"+repo+"/blobs/uploads/?digest="+digest(b), b, "application/octet-stream"); st != 201 {
			r.t.Fatalf("blob: %d %s", st, body)
		}
	}
	m := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":%q,"size":2},"layers":[{"mediaType":%q,"digest":%q,"size":%d}]}`,
		digest(empty), mt, digest(layer), len(layer))
	st, _ := r.do("PUT", "/v2/"+repo+"/manifests/"+ref, []byte(m), "application/vnd.oci.image.manifest.v1+json")
	return st, digest([]byte(m))
}

// Accessory tags of a protected release stay mutable (cosign pushes .sig again to add
// a signature), but only the release's own signatures, attestations and referrers may
// be pushed to them.
func TestAccessoryTagsOfProtectedReleasesTakeOnlyTheirAccessories(t *testing.T) {
	clk := &clock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	// Releases of app/** are immutable; with a release pattern so wide it matches
	// accessory tags, they must stay mutable all the same.
	classes, err := lifecycle.CompileClasses(`.*`, "", "")
	if err != nil {
		t.Fatal(err)
	}
	im := &lifecycle.Immutability{Classes: classes, Rules: []lifecycle.ImmutableRule{{Registries: []string{"dev"}, Repositories: []string{"app/**"}}}}
	r := start(t, clk, im)
	if st, body := r.push("app/a", "1.0.0", ""); st != 201 {
		t.Fatalf("push: %d %s", st, body)
	}
	_, body := r.do("GET", "/v2/app/a/manifests/1.0.0", nil, "")
	d := digest(body)
	sig := string(oci.AccessoryTag(oci.Digest(d), ".sig"))
	att := string(oci.AccessoryTag(oci.Digest(d), ".att"))
	signing := func(of, n string) []byte {
		return []byte(fmt.Sprintf(`{"critical":{"identity":{"docker-reference":"x/app/a"},"image":{"docker-manifest-digest":%q},"type":"cosign container image signature"},"optional":{"n":%q}}`, of, n))
	}
	envelope := func(of string) []byte {
		st := fmt.Sprintf(`{"_type":"https://in-toto.io/Statement/v0.1","predicateType":"https://spdx.dev/Document","subject":[{"name":"x/app/a","digest":{"sha256":%q}}],"predicate":{}}`, strings.TrimPrefix(of, "sha256:"))
		return []byte(fmt.Sprintf(`{"payloadType":"application/vnd.in-toto+json","payload":%q,"signatures":[]}`, base64.StdEncoding.EncodeToString([]byte(st))))
	}
	other := digest([]byte("another image"))
	for _, c := range []struct {
		what, tag, mt string
		layer         []byte
		want          int
	}{
		{"a signature", sig, "application/vnd.dev.cosign.simplesigning.v1+json", signing(d, "1"), 201},
		{"a second signature (the tag moves)", sig, "application/vnd.dev.cosign.simplesigning.v1+json", signing(d, "2"), 201},
		{"an attestation", att, "application/vnd.dsse.envelope.v1+json", envelope(d), 201},
		{"another image's signature", sig, "application/vnd.dev.cosign.simplesigning.v1+json", signing(other, "3"), 403},
		{"another image's attestation", att, "application/vnd.dsse.envelope.v1+json", envelope(other), 403},
		{"an image", sig, "application/vnd.oci.image.layer.v1.tar", []byte("a layer"), 403},
	} {
		if st, _ := r.pushLayered("app/a", c.tag, c.mt, c.layer); st != c.want {
			t.Errorf("%s pushed to %s: %d, want %d", c.what, c.tag, st, c.want)
		}
	}
	// A referrer of the release may take its referrers tag.
	ref := r.pushArtifact("app/a", "", d, "sbom", true)
	idx := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":%q,"size":1,"artifactType":"application/vnd.example.sbom"}]}`, ref)
	if st, b := r.do("PUT", "/v2/app/a/manifests/"+strings.Replace(d, ":", "-", 1), []byte(idx), "application/vnd.oci.image.index.v1+json"); st != 201 {
		t.Errorf("the referrers tag of a protected release: %d %s", st, b)
	}
	// The release itself stays immutable, and a tag naming no protected release takes
	// anything.
	if st, _ := r.push("app/a", "1.0.0", "other content"); st != 403 {
		t.Errorf("overwriting the release: %d, want 403", st)
	}
	if st, _ := r.pushLayered("app/a", string(oci.AccessoryTag(oci.Digest(other), ".sig")), "application/vnd.oci.image.layer.v1.tar", []byte("x")); st != 201 {
		t.Errorf("a .sig tag of no protected release: %d, want 201", st)
	}
}

func protectedRelease(t *testing.T) (*registry, string) {
	clk := &clock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	im := &lifecycle.Immutability{Classes: lifecycle.DefaultClasses(), Rules: []lifecycle.ImmutableRule{{Registries: []string{"dev"}, Repositories: []string{"app/**"}}}}
	r := start(t, clk, im)
	if st, body := r.push("app/a", "1.0.0", ""); st != 201 {
		t.Fatalf("push: %d %s", st, body)
	}
	_, body := r.do("GET", "/v2/app/a/manifests/1.0.0", nil, "")
	return r, digest(body)
}

// An index is no signature: pushed to a protected release's .sig tag, it is refused,
// even with the release as its subject (it listed an arbitrary image).
func TestAnIndexIsNoSignatureOfAProtectedRelease(t *testing.T) {
	r, d := protectedRelease(t)
	_, img := r.pushLayered("app/a", "tmp-arbitrary", "application/vnd.oci.image.layer.v1.tar", []byte("arbitrary image"))
	idx := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":%q,"size":1}],"subject":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":%q,"size":1}}`, img, d)
	sig := string(oci.AccessoryTag(oci.Digest(d), ".sig"))
	if st, b := r.do("PUT", "/v2/app/a/manifests/"+sig, []byte(idx), "application/vnd.oci.image.index.v1+json"); st != 403 {
		t.Errorf("an index (subject = the release) listing an arbitrary image pushed to %s: %d %s, want 403", sig, st, b)
	}
}

// A protected release's signatures are protected with it: neither its .sig tag nor the
// signature manifest may be deleted (cosign clean stripped them, and deploys gated on
// signatures failed).
func TestSignaturesOfAProtectedReleaseCannotBeDeleted(t *testing.T) {
	r, d := protectedRelease(t)
	sig := string(oci.AccessoryTag(oci.Digest(d), ".sig"))
	payload := []byte(fmt.Sprintf(`{"critical":{"identity":{"docker-reference":"x/app/a"},"image":{"docker-manifest-digest":%q},"type":"cosign container image signature"},"optional":null}`, d))
	st, sigD := r.pushLayered("app/a", sig, "application/vnd.dev.cosign.simplesigning.v1+json", payload)
	if st != 201 {
		t.Fatalf("sig push %d", st)
	}
	if st, b := r.do("DELETE", "/v2/app/a/manifests/"+sig, nil, ""); st == 202 {
		t.Errorf("DELETE of the protected release's signature tag: %d %s (accepted)", st, b)
	}
	r.pushLayered("app/a", sig, "application/vnd.dev.cosign.simplesigning.v1+json", payload)
	if st, b := r.do("DELETE", "/v2/app/a/manifests/"+sigD, nil, ""); st == 202 {
		t.Errorf("DELETE by digest of the protected release's signature manifest: %d %s (accepted)", st, b)
	}
}

// The platform manifests of a protected multi-arch release are protected through it:
// their accessory tags (cosign sign --recursive) take only their accessories.
func TestAccessoryTagsOfAProtectedIndexsChildrenAreGuarded(t *testing.T) {
	clk := &clock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	im := &lifecycle.Immutability{Classes: lifecycle.DefaultClasses(), Rules: []lifecycle.ImmutableRule{{Registries: []string{"dev"}, Repositories: []string{"app/**"}}}}
	r := start(t, clk, im)
	_, child := r.pushLayered("app/a", "tmp-amd64", "application/vnd.oci.image.layer.v1.tar", []byte("amd64"))
	_, cb := r.do("GET", "/v2/app/a/manifests/"+child, nil, "")
	idx := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":%q,"size":%d,"platform":{"os":"linux","architecture":"amd64"}}]}`, child, len(cb))
	if st, b := r.do("PUT", "/v2/app/a/manifests/1.0.0", []byte(idx), "application/vnd.oci.image.index.v1+json"); st != 201 {
		t.Fatalf("index: %d %s", st, b)
	}
	sig := string(oci.AccessoryTag(oci.Digest(child), ".sig"))
	if st, _ := r.pushLayered("app/a", sig, "application/vnd.oci.image.layer.v1.tar", []byte("an arbitrary image")); st != 403 {
		t.Errorf("an arbitrary image pushed to %s (the .sig of a protected release's platform manifest): %d, want 403", sig, st)
	}
}

// The guard's work is bounded: a referrers-tag index listing more manifests than it
// examines is refused, and so is a signature whose naming layer comes after more
// distinct signature layers than it reads (a push made of many 1 MiB layers read one
// after the other kept the server busy: about 1,200 MiB for one push).
func TestTheSignatureGuardIsBounded(t *testing.T) {
	r, d := protectedRelease(t)
	empty := []byte("{}")
	r.do("POST", "/v2/app/a/blobs/uploads/?digest="+digest(empty), empty, "application/octet-stream")
	var layers []string
	for i := range 17 {
		p := []byte(fmt.Sprintf(`{"critical":{"image":{"docker-manifest-digest":"sha256:%064d"}}}`, i))
		r.do("POST", "/v2/app/a/blobs/uploads/?digest="+digest(p), p, "application/octet-stream")
		layers = append(layers, fmt.Sprintf(`{"mediaType":"application/vnd.dev.cosign.simplesigning.v1+json","digest":%q,"size":%d}`, digest(p), len(p)))
	}
	good := []byte(fmt.Sprintf(`{"critical":{"image":{"docker-manifest-digest":%q}}}`, d))
	r.do("POST", "/v2/app/a/blobs/uploads/?digest="+digest(good), good, "application/octet-stream")
	last := fmt.Sprintf(`{"mediaType":"application/vnd.dev.cosign.simplesigning.v1+json","digest":%q,"size":%d}`, digest(good), len(good))
	manifest := func(ls []string) []byte {
		return []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":%q,"size":2},"layers":[%s]}`, digest(empty), strings.Join(ls, ",")))
	}
	sig := string(oci.AccessoryTag(oci.Digest(d), ".sig"))
	for _, c := range []struct {
		what string
		ls   []string
		want int
	}{
		{"the naming layer after 15 others", append(append([]string{}, layers[:15]...), last), 201},
		{"the naming layer after 17 others", append(append([]string{}, layers...), last), 403},
		{"the naming layer after one other repeated 40 times (read once)", append(slices.Repeat(layers[:1], 40), last), 201},
	} {
		if st, b := r.do("PUT", "/v2/app/a/manifests/"+sig, manifest(c.ls), "application/vnd.oci.image.manifest.v1+json"); st != c.want {
			t.Errorf("%s: %d %s, want %d", c.what, st, b, c.want)
		}
	}
	// A referrers tag may be an index of referrers, up to 64 of them.
	ref := r.pushArtifact("app/a", "", d, "sbom", true)
	_, rb := r.do("GET", "/v2/app/a/manifests/"+ref, nil, "")
	index := func(n int) []byte {
		entry := fmt.Sprintf(`{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":%q,"size":%d}`, ref, len(rb))
		return []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[%s]}`, strings.Join(slices.Repeat([]string{entry}, n), ",")))
	}
	tag := strings.Replace(d, ":", "-", 1)
	for n, want := range map[int]int{64: 201, 65: 403} {
		if st, b := r.do("PUT", "/v2/app/a/manifests/"+tag, index(n), "application/vnd.oci.image.index.v1+json"); st != want {
			t.Errorf("a referrers-tag index of %d entries: %d %s, want %d", n, st, b, want)
		}
	}
}

// The plan says what the run does to an image pushed by digest only, signed: under a
// policy pruning untagged manifests, the image goes (pruned) and its signature with it
// — the plan said it kept the signature, and the same run deleted it —; within the
// untagged grace both stay.
func TestThePlanSaysWhatPruningDoesToAnUntaggedImagesSignature(t *testing.T) {
	for _, old := range []bool{true, false} {
		clk := &clock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
		r := start(t, clk, nil)
		ctx := context.Background()
		_, subject := r.pushLayered("app/a", "tmp", "application/vnd.oci.image.layer.v1.tar", []byte("by digest"))
		r.do("DELETE", "/v2/app/a/manifests/tmp", nil, "") // pushed by digest only, now
		sigTag := string(oci.AccessoryTag(oci.Digest(subject), ".sig"))
		sig := r.pushArtifact("app/a", sigTag, subject, "signature", false)
		if old {
			clk.Advance(time.Hour)
		}
		e := &lifecycle.Engine{Store: r.store, Registries: []string{"dev"}, Classes: lifecycle.DefaultClasses(), Now: clk.Now,
			Policies: []lifecycle.Policy{{Name: "p", Registries: []string{"dev"}, Repositories: []string{"app/**"},
				Rules: []lifecycle.Rule{lifecycle.KeepLast{Count: 10}}, UntaggedGrace: time.Minute}}}
		plan, err := e.Plan(ctx, "", "")
		if err != nil {
			t.Fatal(err)
		}
		keep := !old
		for _, d := range plan {
			if d.Tag == sigTag && d.Keep != keep {
				t.Errorf("old=%v: the plan decided keep=%v (%s) for the signature, want %v", old, d.Keep, d.Reason, keep)
			}
		}
		if _, err := e.Apply(ctx, plan, "", "", 0); err != nil {
			t.Fatal(err)
		}
		want := 404
		if keep {
			want = 200
		}
		for what, ref := range map[string]string{"image": subject, "signature manifest": sig, "signature tag": sigTag} {
			if st, _ := r.do("GET", "/v2/app/a/manifests/"+ref, nil, ""); st != want {
				t.Errorf("old=%v: %s: %d after the run, want %d as the plan said", old, what, st, want)
			}
		}
	}
}
