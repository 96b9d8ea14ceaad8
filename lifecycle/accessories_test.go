package lifecycle

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/dockyard/dockyard/oci"
)

// graph is a repository's manifests and what each reaches (children, referrers).
type graph map[oci.Digest][]oci.Digest

func (g graph) Has(d oci.Digest) bool               { _, ok := g[d]; return ok }
func (g graph) Size(d oci.Digest) int64             { return 0 }
func (g graph) Referrers(d oci.Digest) []oci.Digest { return nil }
func (g graph) PushedAt(d oci.Digest) time.Time     { return time.Time{} } // long ago

func (g graph) Reach(from []oci.Digest) map[oci.Digest]bool {
	marked := map[oci.Digest]bool{}
	var walk func(d oci.Digest)
	walk = func(d oci.Digest) {
		if marked[d] {
			return
		}
		marked[d] = true
		for _, n := range g[d] {
			walk(n)
		}
	}
	for _, d := range from {
		walk(d)
	}
	return marked
}

func dg(name string) oci.Digest {
	return oci.FromBytes(oci.SHA256, []byte(name))
}

// Accessory tags follow their subjects and count for no rule: keep_last 2 keeps the
// two newest images though six accessory tags were pushed after them.
func TestAccessoryTagsFollowTheirSubjects(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	A, B, C, I, P, U, R, Z := dg("A"), dg("B"), dg("C"), dg("index I"), dg("child P"), dg("untagged U"), dg("referrer R of C"), dg("gone Z")
	sigA, sigB, attC, sigP, sigU, sigR, sigZ, attSigB := dg("sig A"), dg("sig B"), dg("att C"), dg("sig P"), dg("sig U"), dg("sig R"), dg("sig Z"), dg("att of sig B")
	g := graph{A: nil, B: nil, C: {R}, I: {P}, P: nil, U: nil, R: nil,
		sigA: nil, sigB: nil, attC: nil, sigP: nil, sigU: nil, sigR: nil, sigZ: nil, attSigB: nil}
	acc := func(subject oci.Digest, suffix string, d oci.Digest) Tag {
		return Tag{Name: string(oci.AccessoryTag(subject, suffix)), Digest: string(d), Subject: subject}
	}
	tags := []Tag{
		{Name: "1.0.0", Digest: string(A)}, {Name: "2.0.0", Digest: string(B)},
		{Name: "multi", Digest: string(I)}, {Name: "3.0.0", Digest: string(C)},
		acc(A, ".sig", sigA), acc(B, ".sig", sigB), acc(sigB, ".att", attSigB), acc(C, ".att", attC),
		acc(P, ".sig", sigP), acc(U, ".sig", sigU), acc(R, ".sig", sigR), acc(Z, ".sig", sigZ),
	}
	for i := range tags {
		tags[i].PushedAt = now.Add(time.Duration(i) * time.Minute)
		if tags[i].Subject == "" {
			tags[i].Class = DefaultClasses().Of(tags[i].Name)
		}
	}
	name := func(subject oci.Digest, suffix string) string { return string(oci.AccessoryTag(subject, suffix)) }
	want := func(prunes bool) map[string]string {
		deleted, untagged := "untagged", "untagged" // the image stays, untagged, with its accessories
		if prunes {
			deleted, untagged = "deleted", "untagged and pruned"
		}
		return map[string]string{
			"1.0.0": "no rule keeps it", "2.0.0": "no rule keeps it",
			"multi": "kept by keep_last", "3.0.0": "kept by keep_last",
			name(A, ".sig"):    "follows subject " + string(A) + ", " + deleted,
			name(B, ".sig"):    "follows subject " + string(B) + ", " + deleted,
			name(sigB, ".att"): "follows subject " + string(sigB) + ", " + deleted, // an attestation of B's signature
			name(C, ".att"):    "follows subject " + string(C) + ", kept",
			name(P, ".sig"):    "follows subject " + string(P) + ", kept", // a child of a kept index
			name(R, ".sig"):    "follows subject " + string(R) + ", kept", // a referrer of a kept image
			name(U, ".sig"):    "follows subject " + string(U) + ", " + untagged,
			name(Z, ".sig"):    "follows subject " + string(Z) + ", which is gone",
		}
	}
	for _, prunes := range []bool{true, false} {
		t.Run(fmt.Sprintf("prunes untagged %v", prunes), func(t *testing.T) {
			grace := time.Duration(0)
			if prunes {
				grace = time.Hour
			}
			plan := Plan("app", tags, []Rule{KeepLast{Count: 2}}, nil, g, grace, now)
			w := want(prunes)
			if len(plan) != len(w) {
				t.Fatalf("%d decisions, want %d", len(plan), len(w))
			}
			for _, d := range plan {
				reason, ok := w[d.Tag]
				if !ok {
					t.Errorf("unexpected tag %s", d.Tag)
					continue
				}
				keep := strings.HasPrefix(reason, "kept") || strings.HasSuffix(reason, ", kept") || strings.HasSuffix(reason, ", untagged")
				if d.Reason != reason || d.Keep != keep {
					t.Errorf("%s: keep=%v %q, want keep=%v %q", d.Tag, d.Keep, d.Reason, keep, reason)
				}
				if isAcc := d.Subject != ""; isAcc != strings.HasPrefix(reason, "follows") {
					t.Errorf("%s: subject %q", d.Tag, d.Subject)
				}
			}
		})
	}
	// Without a graph (no accessory recognised), the same tags are judged as images:
	// the newest two are accessory tags.
	plain := make([]Tag, len(tags))
	for i, tg := range tags {
		tg.Subject = ""
		plain[i] = tg
	}
	for _, d := range Plan("app", plain, []Rule{KeepLast{Count: 2}}, nil, nil, time.Hour, now) {
		if d.Tag == "3.0.0" && d.Keep {
			t.Error("the control run kept 3.0.0: the test's push order does not put accessory tags last")
		}
	}
}
