package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/dockyard/dockyard/auth"
)

// The TLS listener refuses TLS 1.0 and 1.1 (the real openssl client, allowed to offer
// them, gets the server's "protocol version" alert) and speaks 1.2 and 1.3; a secret
// file every user may read is warned of at start, naming its key.
func TestTLSRefusesOldVersionsAndOpenSecretsAreWarnedOf(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl is not installed")
	}
	dir := t.TempDir()
	certFile, keyFile := writeCert(t, dir, "localhost")
	h, _ := bcrypt.GenerateFromPassword([]byte("pw"), auth.MinBcryptCost)
	users := filepath.Join(dir, "users")
	os.WriteFile(users, []byte("alice:"+string(h)+"\n"), 0o644) // readable by everyone
	cfgFile := filepath.Join(dir, "c.yaml")
	os.WriteFile(cfgFile, fmt.Appendf(nil, "log: {access: false}\ntls: {cert_file: %q, key_file: %q}\nauth: {mode: basic, users_file: %q}\n",
		certFile, keyFile, users), 0o600)
	addr, errb := serveUntilTerm(t, cfgFile, filepath.Join(dir, "data"))
	sClient := func(args ...string) string {
		cmd := exec.Command("openssl", append([]string{"s_client", "-connect", addr, "-servername", "localhost"}, args...)...)
		cmd.Stdin = strings.NewReader("")
		out, _ := cmd.CombinedOutput()
		return string(out)
	}
	for _, v := range []string{"-tls1", "-tls1_1"} {
		// SECLEVEL=0 lets the client offer the old versions: the refusal is the server's.
		if out := sClient(v, "-cipher", "DEFAULT@SECLEVEL=0"); !strings.Contains(out, "alert protocol version") {
			t.Errorf("openssl s_client %s: not refused by the server with a protocol version alert:\n%.1500s", v, out)
		}
	}
	for _, v := range []string{"-tls1_2", "-tls1_3"} {
		want := map[string]string{"-tls1_2": "TLSv1.2", "-tls1_3": "TLSv1.3"}[v]
		if out := sClient(v); !strings.Contains(out, "Protocol  : "+want) && !strings.Contains(out, "New, "+want) {
			t.Errorf("openssl s_client %s: no %s session:\n%.1500s", v, want, out)
		}
	}
	if log := errb.String(); !strings.Contains(log, "readable by every user") || !strings.Contains(log, "key=auth.users_file") {
		t.Errorf("no warning about the world-readable users file:\n%s", log)
	}
}
