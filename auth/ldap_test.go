package auth

import (
	"io"
	"log/slog"
	"testing"
)

// Only groups under group_base count when groups come from memberOf: a directory may
// let users create groups elsewhere, named like a privileged one.
func TestMemberOfGroupsOutsideGroupBaseDoNotCount(t *testing.T) {
	l, err := NewLDAP(LDAPConfig{URL: "ldap://127.0.0.1:1", UserBase: "ou=people,dc=example,dc=org",
		GroupBase: "ou=groups,dc=example,dc=org", MemberOfAttr: "memberOf"}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		dn   string
		name string
		ok   bool
	}{
		{"cn=dev,ou=groups,dc=example,dc=org", "dev", true},
		{"CN=Dev,OU=Groups,DC=Example,DC=ORG", "Dev", true},
		{"cn=dev,ou=teams,ou=groups,dc=example,dc=org", "dev", true},
		{"cn=dev,ou=selfservice,dc=example,dc=org", "", false},
		{"cn=dev,ou=groups,dc=example,dc=org,dc=evil", "", false},
		{"cn=dev", "", false},
		{"ou=groups,dc=example,dc=org", "", false}, // the base itself is no group
		{"not a dn", "", false},
	} {
		if name, ok := l.groupName(c.dn); name != c.name || ok != c.ok {
			t.Errorf("%q: %q %v, want %q %v", c.dn, name, ok, c.name, c.ok)
		}
	}
	if _, err := NewLDAP(LDAPConfig{URL: "ldap://127.0.0.1:1", MemberOfAttr: "memberOf"}, nil); err == nil {
		t.Error("memberOf without group_base was accepted")
	}
}
