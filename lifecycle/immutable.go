package lifecycle

import (
	"github.com/dockyard/dockyard/auth"
	"github.com/dockyard/dockyard/oci"
)

// ImmutableRule protects release tags (and optionally release candidates) of some
// repositories from being overwritten, and unless AllowDelete from being deleted.
type ImmutableRule struct {
	Registries   []string
	Repositories []string
	Candidates   bool // protect release candidates too
	AllowDelete  bool
}

// Immutability is the list of immutability rules.
type Immutability struct {
	Rules   []ImmutableRule
	Classes Classes
	// Accessories recognises accessory tags (nil: the built-in schemes), which no rule
	// protects: cosign pushes a .sig tag again to add a signature (what they may point
	// at is the hosted registry's check).
	Accessories *oci.Accessories
}

// Rule returns the index of the rule protecting tag in reg/repo, or -1.
func (im *Immutability) Rule(reg, repo, tag string) int {
	if im == nil {
		return -1
	}
	if _, _, ok := im.Accessories.Subject(tag); ok {
		return -1
	}
	class := im.Classes.Of(tag)
	for i, r := range im.Rules {
		if (class == Release || (class == Candidate && r.Candidates)) && auth.MatchRegistry(r.Registries, reg) && matchAny(r.Repositories, repo) {
			return i
		}
	}
	return -1
}

// protects reports whether retention must keep a tag of this class.
func (im *Immutability) protects(reg, repo string, class Class) bool {
	if im == nil {
		return false
	}
	for _, r := range im.Rules {
		if (class == Release || (class == Candidate && r.Candidates)) && !r.AllowDelete &&
			auth.MatchRegistry(r.Registries, reg) && matchAny(r.Repositories, repo) {
			return true
		}
	}
	return false
}

func matchAny(globs []string, repo string) bool {
	for _, g := range globs {
		if auth.MatchGlob(g, repo) {
			return true
		}
	}
	return false
}
