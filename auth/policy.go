package auth

import (
	"fmt"
	"path"
	"slices"
	"strings"
)

// Action is what a request does to a repository.
type Action string

const (
	Pull   Action = "pull"
	Push   Action = "push"
	Delete Action = "delete"
)

// ParseAction reads an action name.
func ParseAction(s string) (Action, error) {
	switch a := Action(s); a {
	case Pull, Push, Delete:
		return a, nil
	}
	return "", fmt.Errorf("unknown action %q (pull, push, delete)", s)
}

// Identity is who is asking. The zero value is anonymous.
type Identity struct {
	Name   string
	Groups []string
	Source string // users-file, ldap, token
	// Limit, for CI tokens, caps the identity's rights to these grants.
	Limit []Grant
	// TokenID is the CI token the identity logged in with ("" for others): bearer
	// tokens it is exchanged for name it, and end when it is revoked.
	TokenID string
}

// Anonymous reports whether nobody authenticated.
func (id *Identity) Anonymous() bool { return id == nil || id.Name == "" }

func (id *Identity) String() string {
	if id.Anonymous() {
		return "anonymous"
	}
	return id.Name
}

// Grant is a set of actions on repositories of registries.
type Grant struct {
	Registries   []string // names or "*"
	Repositories []string // globs: "*" one component, "**" any number
	Actions      []Action
}

// Rule gives subjects a grant. Subjects are "user:NAME", "group:NAME", "anonymous" or
// "authenticated".
type Rule struct {
	Subjects []string
	Grant
}

// Policy decides requests from rules. Nothing is allowed unless a rule allows it.
type Policy struct {
	rules []Rule
}

// NewPolicy validates and keeps rules.
func NewPolicy(rules []Rule) (*Policy, error) {
	for i, r := range rules {
		if len(r.Subjects) == 0 || len(r.Registries) == 0 || len(r.Repositories) == 0 || len(r.Actions) == 0 {
			return nil, fmt.Errorf("rule %d: subjects, registries, repositories and actions are all required", i)
		}
		for _, s := range r.Subjects {
			if s != "anonymous" && s != "authenticated" && !strings.HasPrefix(s, "user:") && !strings.HasPrefix(s, "group:") {
				return nil, fmt.Errorf("rule %d: subject %q must be user:NAME, group:NAME, anonymous or authenticated", i, s)
			}
		}
		for _, g := range r.Repositories {
			if _, err := path.Match(strings.ReplaceAll(g, "**", "*"), ""); err != nil {
				return nil, fmt.Errorf("rule %d: bad repository glob %q", i, g)
			}
		}
	}
	return &Policy{rules: rules}, nil
}

// Decision is what a policy says about one request, and why (for the debug log).
type Decision struct {
	Allowed bool
	Rule    int // the deciding rule, -1 when none matched
}

func (d Decision) String() string {
	if d.Rule < 0 {
		return "denied: no rule allows it"
	}
	if d.Allowed {
		return fmt.Sprintf("allowed by rule %d", d.Rule)
	}
	return fmt.Sprintf("denied: rule %d matches but the token's scope excludes it", d.Rule)
}

// Decide says whether id may do action on repo in registry.
func (p *Policy) Decide(id *Identity, registry, repo string, action Action) Decision {
	for i, r := range p.rules {
		if r.matchesSubject(id) && r.Grant.covers(registry, repo, action) {
			if id != nil && id.Limit != nil && !anyCovers(id.Limit, registry, repo, action) {
				return Decision{Allowed: false, Rule: i}
			}
			return Decision{Allowed: true, Rule: i}
		}
	}
	return Decision{Rule: -1}
}

// Actions lists what id may do on repo in registry, out of want.
func (p *Policy) Actions(id *Identity, registry, repo string, want []Action) []Action {
	var out []Action
	for _, a := range want {
		if p.Decide(id, registry, repo, a).Allowed && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

func anyCovers(grants []Grant, registry, repo string, action Action) bool {
	for _, g := range grants {
		if g.covers(registry, repo, action) {
			return true
		}
	}
	return false
}

func (r Rule) matchesSubject(id *Identity) bool {
	for _, s := range r.Subjects {
		switch {
		case s == "anonymous":
			return true // what anonymous may do, everyone may do
		case s == "authenticated":
			if !id.Anonymous() {
				return true
			}
		case strings.HasPrefix(s, "user:"):
			if !id.Anonymous() && id.Name == s[len("user:"):] {
				return true
			}
		case strings.HasPrefix(s, "group:"):
			if !id.Anonymous() && slices.Contains(id.Groups, s[len("group:"):]) {
				return true
			}
		}
	}
	return false
}

func (g Grant) covers(registry, repo string, action Action) bool {
	if !slices.Contains(g.Actions, action) {
		return false
	}
	if !MatchRegistry(g.Registries, registry) {
		return false
	}
	for _, glob := range g.Repositories {
		if MatchGlob(glob, repo) {
			return true
		}
	}
	return false
}

// MatchRegistry reports whether a list of registry names (or "*" for all) includes
// registry.
func MatchRegistry(list []string, registry string) bool {
	return slices.Contains(list, "*") || slices.Contains(list, registry)
}

// MatchGlob matches a repository name against a glob whose "*" matches within one
// path component and "**" matches any number of components (including none):
// "foo/img/*" matches foo/img/a but not foo/img/a/b; "team/**" matches team/a/b/c.
func MatchGlob(glob, name string) bool {
	return matchParts(strings.Split(glob, "/"), strings.Split(name, "/"))
}

func matchParts(glob, name []string) bool {
	for len(glob) > 0 {
		if glob[0] == "**" {
			if len(glob) == 1 {
				return true
			}
			for i := 0; i <= len(name); i++ {
				if matchParts(glob[1:], name[i:]) {
					return true
				}
			}
			return false
		}
		if len(name) == 0 {
			return false
		}
		if ok, _ := path.Match(glob[0], name[0]); !ok {
			return false
		}
		glob, name = glob[1:], name[1:]
	}
	return len(name) == 0
}
