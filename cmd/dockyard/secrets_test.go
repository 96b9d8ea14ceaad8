package main

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dockyard/dockyard/config"
)

// The token signing key made in the data directory (no auth.token.key_file) is a
// secret file like the configured ones: readable by every user, it is warned of.
func TestAnOpenDefaultTokenKeyIsWarnedOfLikeOtherSecrets(t *testing.T) {
	data := t.TempDir()
	key := filepath.Join(data, "auth", "token-key.pem")
	os.MkdirAll(filepath.Dir(key), 0o700)
	os.WriteFile(key, []byte("-----BEGIN PRIVATE KEY-----\n"), 0o644)
	cfg := &config.Config{Data: data, Auth: config.Auth{Mode: "token"}}
	var log bytes.Buffer
	warnOpenSecrets(cfg, slog.New(slog.NewTextHandler(&log, nil)))
	if !strings.Contains(log.String(), "readable by every user") || !strings.Contains(log.String(), key) {
		t.Errorf("no warning about the world-readable default token key:\n%s", log.String())
	}
	os.Chmod(key, 0o600)
	log.Reset()
	warnOpenSecrets(cfg, slog.New(slog.NewTextHandler(&log, nil)))
	if log.Len() != 0 {
		t.Errorf("a warning about a key only its owner reads:\n%s", log.String())
	}
}
